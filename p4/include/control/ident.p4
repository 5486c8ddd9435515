// Stage 9, instance `ident`: user identity of a connection.
//
// Written by the identity module when a guest agent reports which user opened the
// connection; the ACL can then match identity-group classes. A miss leaves id_class 0.

#ifndef __NICFW_CONTROL_IDENT_P4__
#define __NICFW_CONTROL_IDENT_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control IdentityLookup(inout fw_metadata_t meta) {

    @name("set_identity")
    action set_identity(id_class_t id_class) {
        meta.id_class = id_class;
    }

    table identity {
        key = {
            meta.lookup.ip_src   : exact @name("ip_src");    // 128
            meta.lookup.ip_dst   : exact @name("ip_dst");    // 128
            meta.lookup.ip_proto : exact @name("ip_proto");  // 8
            meta.lookup.l4_src   : exact @name("l4_src");    // 16
            meta.lookup.l4_dst   : exact @name("l4_dst");    // 16
        }
        actions = {
            @tableonly set_identity;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = IDENTITY_TABLE_SIZE;
    }

    apply {
        meta.id_class = 0;
        identity.apply();
    }
}

#endif  // __NICFW_CONTROL_IDENT_P4__
