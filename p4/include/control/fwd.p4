// Stage 5, instance `fwd`: L2 forwarding on the destination MAC.
//
// The firewall verdict comes later and only ever keeps or cancels this decision (or
// diverts the packet to the service), so the decision is also remembered in
// meta.fwd_port for the service header.

#ifndef __NICFW_CONTROL_FWD_P4__
#define __NICFW_CONTROL_FWD_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control Forwarding(in headers_t hdr,
                   inout fw_metadata_t meta,
                   inout standard_metadata_t standard_metadata) {

    @name("set_egress_port")
    action set_egress_port(port_t port) {
        standard_metadata.egress_spec = port;
        standard_metadata.mcast_grp = 0;
        meta.fwd_port = port;
    }

    // The packet replication engine copies the packet to the group's ports; FirewallEgress
    // drops the copy that would go back out of the ingress port.
    @name("set_mcast_group")
    action set_mcast_group(mcast_group_t group) {
        standard_metadata.mcast_grp = group;
        meta.fwd_port = DROP_PORT;
    }

    @name("drop")
    action drop() {
        mark_to_drop(standard_metadata);
        meta.fwd_port = DROP_PORT;
    }

    table l2_forward {
        key = {
            hdr.ethernet.dst_addr : exact @name("eth_dst");  // 48
        }
        actions = {
            set_egress_port;
            set_mcast_group;
            drop;
        }
        default_action = drop();
        size = L2_FORWARD_TABLE_SIZE;
    }

    apply {
        l2_forward.apply();
    }
}

#endif  // __NICFW_CONTROL_FWD_P4__
