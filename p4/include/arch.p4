// nicfw firewall pipeline: what differs between targets, in one place (the idea of DASH's
// dash_arch_specific.p4).
//
// TARGET_BMV2_V1MODEL (the default, what `make p4` builds): BMv2 simple_switch offers the
//   `range` and `optional` match kinds, so the ACL keeps port ranges and "any protocol"
//   as they are written in policy.
// TARGET_TERNARY_ACL: targets whose ACL memory is a plain TCAM without range or optional
//   matching. The keys become `ternary`; P4Info then says TERNARY and the controller must
//   expand each port range into prefixes (it reads the match kind from P4Info, never
//   assumes it).

#ifndef __NICFW_ARCH_P4__
#define __NICFW_ARCH_P4__

#if !defined(TARGET_BMV2_V1MODEL) && !defined(TARGET_TERNARY_ACL)
#define TARGET_BMV2_V1MODEL
#endif

#if defined(TARGET_TERNARY_ACL)
#define ACL_RANGE_MATCH    ternary
#define ACL_OPTIONAL_MATCH ternary
#else
#define ACL_RANGE_MATCH    range
#define ACL_OPTIONAL_MATCH optional
#endif

#endif  // __NICFW_ARCH_P4__
