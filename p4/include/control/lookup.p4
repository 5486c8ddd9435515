// Builds meta.lookup, the normalized key every classification table reads (after
// fabric-tna's lookup_md_init). Keeping header decoding here means a parser change never
// renames or resizes a P4Runtime match field.

#ifndef __NICFW_CONTROL_LOOKUP_P4__
#define __NICFW_CONTROL_LOOKUP_P4__

#include <core.p4>

#include "../define.p4"
#include "../header.p4"

control LookupInit(in headers_t hdr, inout fw_metadata_t meta) {
    apply {
        meta.lookup.ip_src = 0;
        meta.lookup.ip_dst = 0;
        meta.lookup.ip_proto = 0;
        meta.lookup.l4_src = 0;
        meta.lookup.l4_dst = 0;

        if (hdr.ipv4.isValid()) {
            // One 128-bit key for both families: IPv4 as ::ffff:a.b.c.d (a /24 is a /120).
            meta.lookup.ip_src = IPV4_MAPPED_PREFIX ++ hdr.ipv4.src_addr;
            meta.lookup.ip_dst = IPV4_MAPPED_PREFIX ++ hdr.ipv4.dst_addr;
            meta.lookup.ip_proto = hdr.ipv4.protocol;
        } else if (hdr.ipv6.isValid()) {
            meta.lookup.ip_src = hdr.ipv6.src_addr;
            meta.lookup.ip_dst = hdr.ipv6.dst_addr;
            meta.lookup.ip_proto = hdr.ipv6.next_hdr;
        }

        // The parser extracts at most one of these (none for non-first IPv4 fragments).
        if (hdr.tcp.isValid()) {
            meta.lookup.l4_src = hdr.tcp.src_port;
            meta.lookup.l4_dst = hdr.tcp.dst_port;
        } else if (hdr.udp.isValid()) {
            meta.lookup.l4_src = hdr.udp.src_port;
            meta.lookup.l4_dst = hdr.udp.dst_port;
        } else if (hdr.icmp.isValid()) {
            // ICMP has no ports: the identifier stands for the source port (so echo
            // request and reply pair up in the flow cache), type/code for the destination
            // port (so one ACL range can allow, e.g., all of type 3).
            meta.lookup.l4_src = hdr.icmp.rest[31:16];
            meta.lookup.l4_dst = hdr.icmp.icmp_type ++ hdr.icmp.icmp_code;
        }
    }
}

#endif  // __NICFW_CONTROL_LOOKUP_P4__
