// nicfw firewall pipeline: parser and deparser.
//
// BMv2 does not drop a packet whose parsing failed: it runs ingress with
// standard_metadata.parser_error set, and FirewallIngress drops it there. So every
// malformed case below ends in an extract that fails (PacketTooShort) or a verify(), never
// in `transition reject`.

#ifndef __NICFW_PARSER_P4__
#define __NICFW_PARSER_P4__

#include <core.p4>
#include <v1model.p4>

#include "define.p4"
#include "header.p4"

parser FirewallParser(packet_in packet,
                      out headers_t hdr,
                      inout fw_metadata_t meta,
                      inout standard_metadata_t standard_metadata) {

    state start {
        transition select(standard_metadata.ingress_port) {
            CPU_PORT: parse_packet_out;
            default: parse_frame;
        }
    }

    state parse_packet_out {
        // The controller's frame follows; it leaves as it is, so nothing more is parsed.
        packet.extract(hdr.packet_out);
        transition accept;
    }

    state parse_frame {
        // Peek: the service encapsulation's outer Ethernet header has its own ether type.
        ethernet_t outer = packet.lookahead<ethernet_t>();
        transition select(outer.ether_type) {
            ETHERTYPE_SERVICE: parse_service;
            default: parse_ethernet;
        }
    }

    state parse_service {
        packet.extract(hdr.service_ethernet);
        packet.extract(hdr.service);
        // The inner frame is sent on as it is, never classified again: leave it as payload.
        transition accept;
    }

    state parse_ethernet {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_VLAN: parse_vlan;
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }

    state parse_vlan {
        packet.extract(hdr.vlan);
        transition select(hdr.vlan.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        verify(hdr.ipv4.ihl >= 5, error.IPv4IhlTooSmall);
        transition select(hdr.ipv4.ihl) {
            5: parse_ipv4_l4;
            default: parse_ipv4_options;
        }
    }

    state parse_ipv4_options {
        // IHL counts 32-bit words; the first 5 are the fixed header. The options are kept
        // (not skipped with advance()) so that the deparser puts them back on the wire.
        packet.extract(hdr.ipv4_options, (bit<32>)(((bit<16>)hdr.ipv4.ihl - 5) * 32));
        transition parse_ipv4_l4;
    }

    state parse_ipv4_l4 {
        // Only the first fragment carries the L4 header; later ones keep ports 0.
        transition select(hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (0, PROTO_TCP): parse_tcp;
            (0, PROTO_UDP): parse_udp;
            (0, PROTO_ICMP): parse_icmp;
            default: accept;
        }
    }

    state parse_ipv6 {
        packet.extract(hdr.ipv6);
        transition select(hdr.ipv6.next_hdr) {
            PROTO_TCP: parse_tcp;
            PROTO_UDP: parse_udp;
            PROTO_ICMPV6: parse_icmp;
            default: accept;
        }
    }

    state parse_tcp {
        // Only the fixed 20 bytes: TCP options stay in the payload and go out unchanged.
        packet.extract(hdr.tcp);
        transition accept;
    }

    state parse_udp {
        packet.extract(hdr.udp);
        transition accept;
    }

    state parse_icmp {
        packet.extract(hdr.icmp);
        transition accept;
    }
}

control FirewallDeparser(packet_out packet, in headers_t hdr) {
    apply {
        // packet_in first: simple_switch_grpc reads it off the front of CPU-port packets.
        packet.emit(hdr.packet_in);
        packet.emit(hdr.service_ethernet);
        packet.emit(hdr.service);
        packet.emit(hdr.ethernet);
        packet.emit(hdr.vlan);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.ipv4_options);
        packet.emit(hdr.ipv6);
        packet.emit(hdr.tcp);
        packet.emit(hdr.udp);
        packet.emit(hdr.icmp);
    }
}

#endif  // __NICFW_PARSER_P4__
