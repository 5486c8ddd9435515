"""Names of firewall.p4's P4Runtime objects, as P4Info spells them.

Only names live here; ids always come from P4Info through `offload.p4schema`.
"""

from __future__ import annotations

from typing import Final

# Tables
SERVICE_CONFIG: Final = "FirewallIngress.svc.service_config"
L2_FORWARD: Final = "FirewallIngress.fwd.l2_forward"
SRC_CLASS: Final = "FirewallIngress.classify.src_class"
DST_CLASS: Final = "FirewallIngress.classify.dst_class"
FLOW_CACHE: Final = "FirewallIngress.flows.flow_cache"
IDENTITY: Final = "FirewallIngress.ident.identity"
ACL: Final = "FirewallIngress.acl.acl"
ACL_AUDIT: Final = "FirewallIngress.acl.acl_audit"
LOG_RULES: Final = "FirewallIngress.acl.log_rules"

# Actions
NO_ACTION: Final = "NoAction"
SET_SERVICE_PORT: Final = "FirewallIngress.svc.set_service_port"
SET_EGRESS_PORT: Final = "FirewallIngress.fwd.set_egress_port"
SET_MCAST_GROUP: Final = "FirewallIngress.fwd.set_mcast_group"
FWD_DROP: Final = "FirewallIngress.fwd.drop"
SET_SRC_CLASS: Final = "FirewallIngress.classify.set_src_class"
SET_DST_CLASS: Final = "FirewallIngress.classify.set_dst_class"
FLOW_ALLOW: Final = "FirewallIngress.flows.flow_allow"
FLOW_DROP: Final = "FirewallIngress.flows.flow_drop"
SET_IDENTITY: Final = "FirewallIngress.ident.set_identity"
ACL_ALLOW: Final = "FirewallIngress.acl.acl_allow"
ACL_DROP: Final = "FirewallIngress.acl.acl_drop"
ACL_REJECT: Final = "FirewallIngress.acl.acl_reject"
ACL_SERVICE: Final = "FirewallIngress.acl.acl_service"
AUDIT_HIT: Final = "FirewallIngress.acl.audit_hit"
LOG_HIT: Final = "FirewallIngress.acl.log_hit"

# Direct counters
ACL_COUNTER: Final = "FirewallIngress.acl.acl_counter"
ACL_AUDIT_COUNTER: Final = "FirewallIngress.acl.acl_audit_counter"
FLOW_COUNTER: Final = "FirewallIngress.flows.flow_counter"

# Digests (P4Info names a digest after its struct type)
LOG_DIGEST: Final = "log_digest_t"

# Controller headers
PACKET_IN: Final = "packet_in"
PACKET_OUT: Final = "packet_out"

# Constants shared with the P4 program (p4/include/define.p4).
CPU_PORT: Final = 255
SERVICE_ETHERTYPE: Final = 0x88B5
SERVICE_HEADER_LEN: Final = 12


class Reason:
    """Why a packet was sent to the firewall service (service header / packet_in `reason`)."""

    MISS: Final = 1  # flow-cache miss with no ACL decision in hardware
    PUNT: Final = 2  # an ACL rule asked for the service (stateful allow, logging)
    ALG: Final = 3  # an application-layer gateway must see it
    IDENTITY_PENDING: Final = 4  # identity of the connection not known yet
    REJECT: Final = 5  # a reject rule: the service answers with TCP RST / ICMP unreachable


class Verdict:
    """The ACL's verdict as the log digest reports it (define.p4 VERDICT_*)."""

    ALLOW: Final = 1
    DROP: Final = 2
    REJECT: Final = 3
    SERVICE: Final = 4


class Direction:
    """Direction of a packet relative to the local workloads."""

    UNKNOWN: Final = 0
    OUTBOUND: Final = 1  # the source is a local workload
    INBOUND: Final = 2  # the source is not a local workload
