// nicfw firewall pipeline: every table size, in one place.
//
// A size is a capacity the target must reserve; the controller reads it from P4Info and
// refuses to write more entries than this.

#ifndef __NICFW_SIZE_P4__
#define __NICFW_SIZE_P4__

#define SERVICE_CONFIG_TABLE_SIZE 1       // keyless: only its default action is used
#define L2_FORWARD_TABLE_SIZE     4096    // MAC addresses behind this NIC and its uplink
#define SRC_CLASS_TABLE_SIZE      65536   // address prefixes -> group bitmap
#define DST_CLASS_TABLE_SIZE      65536
#define FLOW_CACHE_TABLE_SIZE     65536   // offloaded connections (both directions)
#define IDENTITY_TABLE_SIZE       65536   // connections with a known user
#define ACL_TABLE_SIZE            65536   // compiled rules (after range expansion)
#define ACL_AUDIT_TABLE_SIZE      4096    // rules in audit mode (after range expansion)
#define LOG_RULES_TABLE_SIZE      4096    // rules with `log: true` (one entry per rule)

#endif  // __NICFW_SIZE_P4__
