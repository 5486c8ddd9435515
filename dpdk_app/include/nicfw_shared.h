/* SPDX-License-Identifier: Apache-2.0
 * Structures shared between the DPDK fast path and the Python side (dpdk_app/layout.py).
 * Layouts are fixed: the Python side reads them with numpy dtypes, and a test reads the built
 * binary's DWARF to check that every size and offset below is what layout.py assumes.
 * All multi-byte integers are host byte order except addresses, which are 16 bytes in network
 * order (IPv4 carried IPv4-mapped, ::ffff:a.b.c.d, as in the P4 pipeline).
 */
#ifndef NICFW_SHARED_H
#define NICFW_SHARED_H

#include <stdint.h>

#define NICFW_ACT_ALLOW 1
#define NICFW_ACT_DROP 2
#define NICFW_ACT_REJECT 3

#define NICFW_RULE_LOG 0x01

/* One classification rule: a 5-tuple box plus an identity-class requirement. */
struct nicfw_rule {
	uint32_t rule_id;      /* stable id reported in flow records and counters */
	uint32_t priority;     /* higher wins; first-match order maps to descending priority */
	uint8_t src_addr[16];  /* prefix value, network order */
	uint8_t dst_addr[16];
	uint8_t src_plen;      /* 0..128 */
	uint8_t dst_plen;
	uint8_t proto;
	uint8_t proto_mask;    /* 0 = any protocol, 0xff = exactly proto */
	uint16_t sport_lo;
	uint16_t sport_hi;
	uint16_t dport_lo;
	uint16_t dport_hi;
	uint8_t action;        /* NICFW_ACT_* */
	uint8_t flags;         /* NICFW_RULE_* */
	uint16_t reserved;
	uint32_t id_class;     /* identity-class bits the connection must carry ... */
	uint32_t id_mask;      /* ... under this mask (0 = any identity) */
};

#define NICFW_EV_NEW 1
#define NICFW_EV_UPDATE 2
#define NICFW_EV_END 3

/* One decision or flow event, from the fast path to the controller. */
struct nicfw_flow_record {
	uint8_t src_addr[16];
	uint8_t dst_addr[16];
	uint16_t sport;
	uint16_t dport;
	uint8_t proto;
	uint8_t verdict;       /* NICFW_ACT_* */
	uint8_t reason;        /* service header reason that brought the packet */
	uint8_t direction;
	uint32_t rule_id;      /* the rule that decided (0 = default action) */
	uint16_t ingress_port;
	uint16_t egress_port;
	uint16_t workload_id;
	uint8_t tcp_state;
	uint8_t event;         /* NICFW_EV_* */
	uint32_t reserved;
	uint64_t packets;
	uint64_t bytes;
	uint64_t first_seen_ns;
	uint64_t last_seen_ns;
};

/* One identity entry: which identity classes a connection (5-tuple) belongs to. */
struct nicfw_identity {
	uint8_t src_addr[16];
	uint8_t dst_addr[16];
	uint16_t sport;
	uint16_t dport;
	uint8_t proto;
	uint8_t reserved[3];
	uint32_t id_class;
	uint32_t user_id;
};

/*
 * FLOW_DEL request entry: a connection's 5-tuple (either direction; ports host order, ICMP as in
 * flow records: sport = identifier, dport = type << 8 | code) and a condition: the tracked
 * connection is removed only if the fast path has not seen it after idle_before_ns (wall clock,
 * as last_seen_ns in flow records); 0 removes it whatever its last packet.
 */
struct nicfw_flow_del {
	uint8_t src_addr[16];
	uint8_t dst_addr[16];
	uint16_t sport;
	uint16_t dport;
	uint8_t proto;
	uint8_t reserved[3];
	uint64_t idle_before_ns;
};

#endif /* NICFW_SHARED_H */
