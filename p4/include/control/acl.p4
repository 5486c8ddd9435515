// Stage 10, instance `acl`: the compiled policy.
//
// Keys are class bitmaps (one ternary bit per group), protocol, port ranges and identity
// class; entries carry priorities (higher wins) and a direct counter. Anything no rule
// matches is dropped: the default is acl_drop(0), so the datapath never allows by
// accident.
//
// `acl_audit` runs first, with the same keys: rules in audit mode live there, where a hit only
// records the rule and moves its counter, so a new policy is watched before it is enforced.
//
// `log_rules` runs last, on the rule that decided: a hit (a rule with `log: true`), or any
// audit hit, sends a `log_digest_t` digest to the controller. Logging never changes the verdict.

#ifndef __NICFW_CONTROL_ACL_P4__
#define __NICFW_CONTROL_ACL_P4__

#include <core.p4>
#include <v1model.p4>

#include "../arch.p4"
#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control Acl(inout fw_metadata_t meta,
            inout standard_metadata_t standard_metadata) {

    direct_counter(CounterType.packets_and_bytes) acl_counter;
    direct_counter(CounterType.packets_and_bytes) acl_audit_counter;

    // Records which audit rule matched; never touches the verdict.
    @name("audit_hit")
    action audit_hit(rule_id_t rule_id) {
        meta.audit_rule_id = rule_id;
    }

    // Forward as l2_forward decided.
    @name("acl_allow")
    action acl_allow(rule_id_t rule_id) {
        meta.rule_id = rule_id;
        meta.verdict = VERDICT_ALLOW;
    }

    @name("acl_drop")
    action acl_drop(rule_id_t rule_id) {
        meta.rule_id = rule_id;
        meta.verdict = VERDICT_DROP;
        mark_to_drop(standard_metadata);
    }

    // The service answers with a TCP RST or an ICMP unreachable.
    @name("acl_reject")
    action acl_reject(rule_id_t rule_id) {
        meta.rule_id = rule_id;
        meta.verdict = VERDICT_REJECT;
        meta.to_service = 1;
        meta.reason = REASON_REJECT;
    }

    // The service decides (stateful allow, ALG, logging) and may offload a flow entry.
    @name("acl_service")
    action acl_service(rule_id_t rule_id) {
        meta.rule_id = rule_id;
        meta.verdict = VERDICT_SERVICE;
        meta.to_service = 1;
        meta.reason = REASON_PUNT;
    }

    // The deciding rule is logged.
    @name("log_hit")
    action log_hit() {
        meta.log = 1;
    }

    table acl_audit {
        key = {
            meta.src_class       : ternary            @name("src_class");  // 64
            meta.dst_class       : ternary            @name("dst_class");  // 64
            meta.lookup.ip_proto : ACL_OPTIONAL_MATCH @name("ip_proto");   // 8
            meta.lookup.l4_src   : ACL_RANGE_MATCH    @name("l4_src");     // 16
            meta.lookup.l4_dst   : ACL_RANGE_MATCH    @name("l4_dst");     // 16
            meta.id_class        : ternary            @name("id_class");   // 32
        }
        actions = {
            @tableonly audit_hit;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = ACL_AUDIT_TABLE_SIZE;
        counters = acl_audit_counter;
    }

    table acl {
        key = {
            meta.src_class       : ternary            @name("src_class");  // 64
            meta.dst_class       : ternary            @name("dst_class");  // 64
            meta.lookup.ip_proto : ACL_OPTIONAL_MATCH @name("ip_proto");   // 8
            meta.lookup.l4_src   : ACL_RANGE_MATCH    @name("l4_src");     // 16
            meta.lookup.l4_dst   : ACL_RANGE_MATCH    @name("l4_dst");     // 16
            meta.id_class        : ternary            @name("id_class");   // 32
        }
        actions = {
            acl_allow;
            acl_drop;
            acl_reject;
            acl_service;
        }
        default_action = acl_drop(0);
        size = ACL_TABLE_SIZE;
        counters = acl_counter;
    }

    table log_rules {
        key = {
            meta.rule_id : exact @name("rule_id");  // 32
        }
        actions = {
            @tableonly log_hit;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = LOG_RULES_TABLE_SIZE;
    }

    apply {
        meta.to_service = 0;
        meta.audit_rule_id = 0;
        meta.log = 0;
        acl_audit.apply();
        acl.apply();
        log_rules.apply();
        if (meta.log == 1 || meta.audit_rule_id != 0) {
            digest<log_digest_t>(LOG_DIGEST_RECEIVER, {
                meta.rule_id,
                meta.audit_rule_id,
                meta.verdict,
                meta.lookup.ip_src,
                meta.lookup.ip_dst,
                meta.lookup.ip_proto,
                meta.lookup.l4_src,
                meta.lookup.l4_dst
            });
        }
    }
}

#endif  // __NICFW_CONTROL_ACL_P4__
