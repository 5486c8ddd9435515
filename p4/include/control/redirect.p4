// Stage 11, instance `redirect`: hand a packet to the firewall service.
//
// With a service port (svc.service_config set it), the frame leaves through it wrapped in
// an outer Ethernet header and the service header; without one, it goes to the CPU port
// with the same fields as packet_in metadata. Either way, the forwarding decision travels
// along (egress_port) so that the service can re-inject the packet where it was going.

#ifndef __NICFW_CONTROL_REDIRECT_P4__
#define __NICFW_CONTROL_REDIRECT_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"

control ServiceRedirect(inout headers_t hdr,
                        inout fw_metadata_t meta,
                        inout standard_metadata_t standard_metadata) {
    apply {
        // One copy, to one place: cancel any multicast l2_forward chose.
        standard_metadata.mcast_grp = 0;
        if (meta.service_enabled == 1) {
            // The outer addresses repeat the inner ones: the service port is a
            // point-to-point link, and a bridge in between still sees a plausible frame.
            hdr.service_ethernet.setValid();
            hdr.service_ethernet.dst_addr = hdr.ethernet.dst_addr;
            hdr.service_ethernet.src_addr = hdr.ethernet.src_addr;
            hdr.service_ethernet.ether_type = ETHERTYPE_SERVICE;
            hdr.service.setValid();
            hdr.service.ingress_port = (bit<16>)standard_metadata.ingress_port;
            hdr.service.egress_port = (bit<16>)meta.fwd_port;
            hdr.service.reason = meta.reason;
            hdr.service.direction = meta.direction;
            hdr.service.workload_id = meta.workload_id;
            hdr.service.rule_id = meta.rule_id;
            standard_metadata.egress_spec = meta.service_port;
        } else {
            hdr.packet_in.setValid();
            hdr.packet_in.ingress_port = (bit<16>)standard_metadata.ingress_port;
            hdr.packet_in.egress_port = (bit<16>)meta.fwd_port;
            hdr.packet_in.reason = meta.reason;
            hdr.packet_in.direction = meta.direction;
            hdr.packet_in.workload_id = meta.workload_id;
            hdr.packet_in.rule_id = meta.rule_id;
            standard_metadata.egress_spec = CPU_PORT;
        }
    }
}

#endif  // __NICFW_CONTROL_REDIRECT_P4__
