// Stage 7, instance `classify`: workload classification.
//
// Each address maps to a class id (its group-membership bitmap) and, when it belongs to a
// local workload, that workload's id. The ACL then matches group bits instead of address
// pairs. A miss leaves class 0 and workload 0.

#ifndef __NICFW_CONTROL_CLASSIFY_P4__
#define __NICFW_CONTROL_CLASSIFY_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control Classify(inout fw_metadata_t meta) {

    @name("set_src_class")
    action set_src_class(class_id_t class_id, workload_id_t workload_id) {
        meta.src_class = class_id;
        meta.src_workload = workload_id;
    }

    @name("set_dst_class")
    action set_dst_class(class_id_t class_id, workload_id_t workload_id) {
        meta.dst_class = class_id;
        meta.dst_workload = workload_id;
    }

    table src_class {
        key = {
            meta.lookup.ip_src : lpm @name("ip_src");  // 128
        }
        actions = {
            @tableonly set_src_class;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = SRC_CLASS_TABLE_SIZE;
    }

    table dst_class {
        key = {
            meta.lookup.ip_dst : lpm @name("ip_dst");  // 128
        }
        actions = {
            @tableonly set_dst_class;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = DST_CLASS_TABLE_SIZE;
    }

    apply {
        meta.src_class = 0;
        meta.dst_class = 0;
        meta.src_workload = 0;
        meta.dst_workload = 0;
        src_class.apply();
        dst_class.apply();

        // The local side decides the direction; when both sides are local (VM to VM on
        // one host) the packet is seen as outbound from its source.
        if (meta.src_workload != 0) {
            meta.direction = DIRECTION_OUTBOUND;
            meta.workload_id = meta.src_workload;
        } else if (meta.dst_workload != 0) {
            meta.direction = DIRECTION_INBOUND;
            meta.workload_id = meta.dst_workload;
        } else {
            meta.direction = DIRECTION_UNKNOWN;
            meta.workload_id = 0;
        }
    }
}

#endif  // __NICFW_CONTROL_CLASSIFY_P4__
