// Stage 8, instance `flows`: the flow cache.
//
// The firewall service offloads its verdict on an established connection (or an ALG
// pinhole) here, one entry per direction. Entries age out through P4Runtime idle
// timeouts; the direct counter lets the controller report per-flow traffic.

#ifndef __NICFW_CONTROL_FLOWS_P4__
#define __NICFW_CONTROL_FLOWS_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control FlowCache(inout fw_metadata_t meta,
                  inout standard_metadata_t standard_metadata) {

    direct_counter(CounterType.packets_and_bytes) flow_counter;

    // Forward as l2_forward decided.
    @name("flow_allow")
    action flow_allow(rule_id_t rule_id) {
        meta.rule_id = rule_id;
    }

    @name("flow_drop")
    action flow_drop(rule_id_t rule_id) {
        meta.rule_id = rule_id;
        mark_to_drop(standard_metadata);
    }

    table flow_cache {
        key = {
            meta.lookup.ip_src   : exact @name("ip_src");    // 128
            meta.lookup.ip_dst   : exact @name("ip_dst");    // 128
            meta.lookup.ip_proto : exact @name("ip_proto");  // 8
            meta.lookup.l4_src   : exact @name("l4_src");    // 16
            meta.lookup.l4_dst   : exact @name("l4_dst");    // 16
        }
        actions = {
            @tableonly flow_allow;
            @tableonly flow_drop;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = FLOW_CACHE_TABLE_SIZE;
        support_timeout = true;
        counters = flow_counter;
    }

    apply {
        meta.flow_hit = 0;
        if (flow_cache.apply().hit) {
            // A cached verdict is final: FirewallIngress stops here.
            meta.flow_hit = 1;
        }
    }
}

#endif  // __NICFW_CONTROL_FLOWS_P4__
