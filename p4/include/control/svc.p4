// Stage 3, instance `svc`: where the firewall service is.
//
// A keyless table: the controller sets its default action to set_service_port(port) when
// the host has a service interface. Left at NoAction, there is no service port and
// packets for the service go to the CPU port as packet_in instead.

#ifndef __NICFW_CONTROL_SVC_P4__
#define __NICFW_CONTROL_SVC_P4__

#include <core.p4>
#include <v1model.p4>

#include "../define.p4"
#include "../header.p4"
#include "../size.p4"

control ServiceConfig(inout fw_metadata_t meta) {

    @name("set_service_port")
    action set_service_port(port_t port) {
        meta.service_port = port;
        meta.service_enabled = 1;
    }

    table service_config {
        // No key: the one setting is the default action.
        actions = {
            @defaultonly set_service_port;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = SERVICE_CONFIG_TABLE_SIZE;
    }

    apply {
        meta.service_enabled = 0;
        service_config.apply();
    }
}

#endif  // __NICFW_CONTROL_SVC_P4__
