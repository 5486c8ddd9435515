// nicfw firewall pipeline: packet headers, controller headers, the normalized lookup key
// and the metadata every stage reads and writes.

#ifndef __NICFW_HEADER_P4__
#define __NICFW_HEADER_P4__

#include "define.p4"

// IHL < 5 cannot be a valid IPv4 header: the parser rejects it and ingress drops it.
error {
    IPv4IhlTooSmall
}

// ---------------------------------------------------------------------------------------
// Controller headers (P4Runtime packet-in / packet-out on the CPU port). simple_switch_grpc
// adds/strips them; their fields and widths are part of P4Info.
// ---------------------------------------------------------------------------------------

// Same fields, in the same order, as service_t: the service and the controller read one
// layout whichever way the packet reached them.
@controller_header("packet_in")
header packet_in_t {
    bit<16> ingress_port;  // port the packet came in on
    bit<16> egress_port;   // port the forwarding stage chose (DROP_PORT: none)
    bit<8>  reason;        // REASON_*
    bit<8>  direction;     // DIRECTION_*
    bit<16> workload_id;   // the local workload (0: none)
    bit<32> rule_id;       // the ACL rule that sent it (0: miss/default)
}

@controller_header("packet_out")
header packet_out_t {
    bit<16> egress_port;   // where the controller wants the frame to go
    bit<16> flags;         // reserved, 0
}

// ---------------------------------------------------------------------------------------
// Service encapsulation: outer Ethernet (ether type ETHERTYPE_SERVICE) + this 12-byte
// header + the original frame, on packets to and from the service port.
// ---------------------------------------------------------------------------------------
header service_t {
    bit<16> ingress_port;
    bit<16> egress_port;   // for a packet the service re-injects: where it goes
    bit<8>  reason;
    bit<8>  direction;
    bit<16> workload_id;
    bit<32> rule_id;
}

// ---------------------------------------------------------------------------------------
// Frame headers.
// ---------------------------------------------------------------------------------------
header ethernet_t {
    mac_addr_t dst_addr;
    mac_addr_t src_addr;
    bit<16>    ether_type;
}

// 802.1Q: one tag.
header vlan_t {
    bit<3>  pcp;
    bit<1>  dei;
    bit<12> vid;
    bit<16> ether_type;
}

header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<6>      dscp;
    bit<2>      ecn;
    bit<16>     total_len;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     frag_offset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdr_checksum;
    ipv4_addr_t src_addr;
    ipv4_addr_t dst_addr;
}

// IPv4 options, kept so that the deparser re-emits them: up to 40 bytes (IHL 15).
header ipv4_options_t {
    varbit<320> options;
}

header ipv6_t {
    bit<4>      version;
    bit<8>      traffic_class;
    bit<20>     flow_label;
    bit<16>     payload_len;
    bit<8>      next_hdr;
    bit<8>      hop_limit;
    ipv6_addr_t src_addr;
    ipv6_addr_t dst_addr;
}

header tcp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<32> seq_no;
    bit<32> ack_no;
    bit<4>  data_offset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent_ptr;
}

header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> len;
    bit<16> checksum;
}

// ICMPv4 and ICMPv6 share this layout; `rest` holds identifier + sequence for echo.
header icmp_t {
    bit<8>  icmp_type;
    bit<8>  icmp_code;
    bit<16> checksum;
    bit<32> rest;
}

struct headers_t {
    packet_out_t   packet_out;
    packet_in_t    packet_in;
    ethernet_t     service_ethernet;
    service_t      service;
    ethernet_t     ethernet;
    vlan_t         vlan;
    ipv4_t         ipv4;
    ipv4_options_t ipv4_options;
    ipv6_t         ipv6;
    tcp_t          tcp;
    udp_t          udp;
    icmp_t         icmp;
}

// ---------------------------------------------------------------------------------------
// The normalized lookup key. Tables key on these fields, never on headers, so that the
// P4Runtime names and widths stay the same whatever the parser learns to decode.
// ---------------------------------------------------------------------------------------
struct fw_lookup_t {
    ip_addr_t ip_src;    // IPv6 as is; IPv4 as ::ffff:a.b.c.d
    ip_addr_t ip_dst;
    bit<8>    ip_proto;  // IPv4 protocol / IPv6 next header
    bit<16>   l4_src;    // TCP/UDP port; ICMP identifier; else 0
    bit<16>   l4_dst;    // TCP/UDP port; ICMP type << 8 | code; else 0
}

struct fw_metadata_t {
    fw_lookup_t   lookup;
    // svc: the service port, when there is one.
    bit<1>        service_enabled;
    port_t        service_port;
    // fwd: the unicast port chosen by l2_forward (DROP_PORT: drop or multicast).
    port_t        fwd_port;
    // classify
    class_id_t    src_class;
    class_id_t    dst_class;
    workload_id_t src_workload;
    workload_id_t dst_workload;
    workload_id_t workload_id;  // the local side's
    bit<8>        direction;
    // flows
    bit<1>        flow_hit;
    // ident
    id_class_t    id_class;
    // acl: a verdict that needs the service, and for which rule.
    bit<1>        to_service;
    bit<8>        reason;
    rule_id_t     rule_id;
    rule_id_t     audit_rule_id;  // the audit rule that matched (0: none); never enforced
    bit<8>        verdict;        // VERDICT_* of acl.acl
    bit<1>        log;            // acl.log_rules: the deciding rule has `log: true`
}

// ---------------------------------------------------------------------------------------
// The rule log: one digest per packet that a logged rule or an audit rule decided or
// watched (P4Runtime DigestList on the controller's stream; the target drops repeats of
// data the controller has not acknowledged yet, so a flow is reported once until acked).
// ---------------------------------------------------------------------------------------
struct log_digest_t {
    rule_id_t  rule_id;        // the rule that decided (0: the default)
    rule_id_t  audit_rule_id;  // the audit rule that matched (0: none)
    bit<8>     verdict;        // VERDICT_*
    ip_addr_t  ip_src;         // the lookup key's 5-tuple (IPv4 as ::ffff:a.b.c.d)
    ip_addr_t  ip_dst;
    bit<8>     ip_proto;
    bit<16>    l4_src;
    bit<16>    l4_dst;
}

#endif  // __NICFW_HEADER_P4__
