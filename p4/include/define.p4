// nicfw firewall pipeline: types and constants shared by every stage.
//
// The values that the controller also knows (CPU port, service ether type, reasons,
// directions) must agree with offload/names.py; tests/unit/test_p4info_consistency.py
// checks that they do.

#ifndef __NICFW_DEFINE_P4__
#define __NICFW_DEFINE_P4__

// ---------------------------------------------------------------------------------------
// Types. Action parameters use these, so their widths are what P4Info publishes.
// ---------------------------------------------------------------------------------------
typedef bit<9>   port_t;         // v1model's port width (standard_metadata.ingress_port)
typedef bit<16>  mcast_group_t;  // standard_metadata.mcast_grp
typedef bit<48>  mac_addr_t;
typedef bit<32>  ipv4_addr_t;
typedef bit<128> ipv6_addr_t;
typedef bit<128> ip_addr_t;      // lookup key: IPv6, or IPv4 as ::ffff:a.b.c.d
typedef bit<64>  class_id_t;     // group-membership bitmap of an address
typedef bit<16>  workload_id_t;  // 0: not a local workload
typedef bit<32>  id_class_t;     // user/identity-group class of a connection
typedef bit<32>  rule_id_t;      // the policy rule that decided (0: default)

// ---------------------------------------------------------------------------------------
// Ports.
// ---------------------------------------------------------------------------------------
// P4Runtime packet-in/packet-out port; simple_switch_grpc --cpu-port must use the same.
const port_t CPU_PORT = 255;
// BMv2's drop port (what mark_to_drop() writes into egress_spec). Used as "no unicast
// decision" in the service header when forwarding chose drop or a multicast group.
const port_t DROP_PORT = 511;

// ---------------------------------------------------------------------------------------
// Ether types and IP protocol numbers.
// ---------------------------------------------------------------------------------------
const bit<16> ETHERTYPE_IPV4    = 0x0800;
const bit<16> ETHERTYPE_ARP     = 0x0806;
const bit<16> ETHERTYPE_VLAN    = 0x8100;
const bit<16> ETHERTYPE_IPV6    = 0x86DD;
// IEEE 802 local experimental ether type 1: the outer header of the service encapsulation.
const bit<16> ETHERTYPE_SERVICE = 0x88B5;

const bit<8> PROTO_ICMP   = 1;
const bit<8> PROTO_TCP    = 6;
const bit<8> PROTO_UDP    = 17;
const bit<8> PROTO_ICMPV6 = 58;

// The 96 bits that turn an IPv4 address into its IPv4-mapped IPv6 form (::ffff:0:0/96),
// so that one 128-bit key serves both families.
const bit<96> IPV4_MAPPED_PREFIX = 96w0xffff;

// ---------------------------------------------------------------------------------------
// Why a packet goes to the firewall service (service header / packet_in `reason`).
// The pipeline itself produces PUNT and REJECT; the others are the service's own.
// ---------------------------------------------------------------------------------------
const bit<8> REASON_MISS             = 1;
const bit<8> REASON_PUNT             = 2;
const bit<8> REASON_ALG              = 3;
const bit<8> REASON_IDENTITY_PENDING = 4;
const bit<8> REASON_REJECT           = 5;

// Direction of a packet relative to the local workloads.
const bit<8> DIRECTION_UNKNOWN  = 0;
const bit<8> DIRECTION_OUTBOUND = 1;  // the source is a local workload
const bit<8> DIRECTION_INBOUND  = 2;  // only the destination is a local workload

// The ACL's verdict, as the log digest reports it (log_digest_t.verdict).
const bit<8> VERDICT_ALLOW   = 1;
const bit<8> VERDICT_DROP    = 2;
const bit<8> VERDICT_REJECT  = 3;
const bit<8> VERDICT_SERVICE = 4;

// v1model digest receiver of the rule log (BMv2 ignores it; P4Runtime names the digest by type).
const bit<32> LOG_DIGEST_RECEIVER = 1;

// standard_metadata.instance_type of a copy made by the packet replication engine
// (BMv2 simple_switch; v1model does not name these values).
const bit<32> PKT_INSTANCE_TYPE_REPLICATION = 5;

#endif  // __NICFW_DEFINE_P4__
