// nicfw: the firewall pipeline for v1model (BMv2 simple_switch_grpc).
//
// docs/pipeline.md says what each stage does; p4/firewall.p4info.txtpb is the contract
// with the controller (names, widths, match kinds). This file holds only the includes and
// the top-level controls: headers, sizes and target differences live under include/, one
// stage per file under include/control/.
//
// Build: make p4   (p4c --target bmv2 --arch v1model -I p4/include ...)

#include <core.p4>
#include <v1model.p4>

#include "include/define.p4"
#include "include/size.p4"
#include "include/arch.p4"
#include "include/header.p4"
#include "include/parser.p4"
#include "include/control/svc.p4"
#include "include/control/fwd.p4"
#include "include/control/lookup.p4"
#include "include/control/classify.p4"
#include "include/control/flows.p4"
#include "include/control/ident.p4"
#include "include/control/acl.p4"
#include "include/control/redirect.p4"

// The pipeline neither routes nor rewrites L3/L4 headers, so there is no checksum to
// update; a bad checksum is the endpoints' business, not a firewall verdict.
control FirewallVerifyChecksum(inout headers_t hdr, inout fw_metadata_t meta) {
    apply { }
}

control FirewallIngress(inout headers_t hdr,
                        inout fw_metadata_t meta,
                        inout standard_metadata_t standard_metadata) {

    // Instance names are part of every P4Runtime name: FirewallIngress.<instance>.<table>.
    ServiceConfig() svc;
    Forwarding() fwd;
    LookupInit() lookup_init;
    Classify() classify;
    FlowCache() flows;
    IdentityLookup() ident;
    Acl() acl;
    ServiceRedirect() redirect;

    apply {
        // 1. Truncated or malformed headers: BMv2 still runs ingress, so drop here.
        if (standard_metadata.parser_error != error.NoError) {
            mark_to_drop(standard_metadata);
            exit;
        }

        // 2. From the controller: strip packet_out and send the frame where it asks.
        if (hdr.packet_out.isValid()) {
            standard_metadata.egress_spec = (port_t)hdr.packet_out.egress_port;
            hdr.packet_out.setInvalid();
            exit;
        }

        // Until l2_forward decides, nothing leaves (BMv2 would otherwise use port 0).
        mark_to_drop(standard_metadata);
        meta.fwd_port = DROP_PORT;

        // 3. Where the service is.
        svc.apply(meta);

        // 4. Re-injected by the service: already judged, goes straight out. The service
        //    header is only trusted on the service port; elsewhere it is a spoof.
        if (hdr.service.isValid()) {
            if (meta.service_enabled == 1 && standard_metadata.ingress_port == meta.service_port) {
                standard_metadata.egress_spec = (port_t)hdr.service.egress_port;
                hdr.service_ethernet.setInvalid();
                hdr.service.setInvalid();
            } else {
                mark_to_drop(standard_metadata);
            }
            exit;
        }

        // 5. L2 forwarding.
        fwd.apply(hdr, meta, standard_metadata);

        // 6. Non-IP (ARP, ...): forwarded as l2_forward decided, no firewall.
        if (!hdr.ipv4.isValid() && !hdr.ipv6.isValid()) {
            exit;
        }

        // 7. Classification.
        lookup_init.apply(hdr, meta);
        classify.apply(meta);

        // 8. Flow cache: an offloaded verdict is final.
        flows.apply(meta, standard_metadata);
        if (meta.flow_hit == 1) {
            exit;
        }

        // 9. Identity, 10. ACL.
        ident.apply(meta);
        acl.apply(meta, standard_metadata);

        // 11. To the service (service port, or CPU port as packet_in).
        if (meta.to_service == 1) {
            redirect.apply(hdr, meta, standard_metadata);
        }
    }
}

control FirewallEgress(inout headers_t hdr,
                       inout fw_metadata_t meta,
                       inout standard_metadata_t standard_metadata) {
    apply {
        // A multicast copy never goes back out of the port the packet came in on.
        if (standard_metadata.instance_type == PKT_INSTANCE_TYPE_REPLICATION &&
            standard_metadata.egress_port == standard_metadata.ingress_port) {
            mark_to_drop(standard_metadata);
        }
    }
}

control FirewallComputeChecksum(inout headers_t hdr, inout fw_metadata_t meta) {
    apply { }
}

V1Switch(
    FirewallParser(),
    FirewallVerifyChecksum(),
    FirewallIngress(),
    FirewallEgress(),
    FirewallComputeChecksum(),
    FirewallDeparser()
) main;
