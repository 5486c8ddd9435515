/* SPDX-License-Identifier: Apache-2.0
 * nicfw fast path: types shared by the application's own modules (not by Python; those live in
 * include/nicfw_shared.h).
 */
#ifndef NICFW_H
#define NICFW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rte_log.h>

#include "nicfw_shared.h"

#define NICFW_VERSION "0.1.0"
#define RTE_LOGTYPE_NICFW RTE_LOGTYPE_USER1

#define MAX_PKT_BURST 32

/* Debug logging compiles to nothing unless built with -DNICFW_DEBUG (make DEBUG=1). */
#ifdef NICFW_DEBUG
#define NICFW_DBG(...) RTE_LOG(DEBUG, NICFW, __VA_ARGS__)
#else
#define NICFW_DBG(...) \
	do { \
	} while (0)
#endif

#define NICFW_KEY_V4 0x01   /* both addresses IPv4-mapped: classify in the IPv4 context */
#define NICFW_KEY_FRAG 0x02 /* non-first fragment: ports unknown (both 0) */

/*
 * The classification key, laid out the way rte_acl reads its input: a one-byte first field
 * (protocol), then groups of four bytes, every multi-byte field in network byte order.
 * Addresses are 128-bit (IPv4 as ::ffff:a.b.c.d), so the IPv4 context reads bytes 12..15 of each.
 */
struct nicfw_key {
	uint8_t proto;
	uint8_t flags; /* NICFW_KEY_*, not an ACL field */
	uint8_t pad[2];
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t sport; /* network order; ICMP: identifier */
	uint16_t dport; /* network order; ICMP: type << 8 | code */
	uint32_t id_class; /* network order; 0 when the connection has no identity entry */
};

/* Service header reasons (offload/names.py Reason). */
#define NICFW_REASON_MISS 1
#define NICFW_REASON_PUNT 2
#define NICFW_REASON_ALG 3
#define NICFW_REASON_IDENTITY_PENDING 4
#define NICFW_REASON_REJECT 5

#define NICFW_SERVICE_ETHERTYPE 0x88B5
#define NICFW_SERVICE_HDR_LEN 12

/* The 12-byte service header after the outer Ethernet header; big-endian on the wire. */
struct nicfw_service_hdr {
	uint16_t ingress_port;
	uint16_t egress_port;
	uint8_t reason;
	uint8_t direction;
	uint16_t workload_id;
	uint32_t rule_id;
} __attribute__((packed));

/* Why a packet was dropped; one counter each (STATS "drop_<name>"). */
enum nicfw_drop {
	DROP_NOT_SERVICE, /* no service encapsulation */
	DROP_TRUNCATED,   /* a header runs past the end of the frame */
	DROP_NON_IP,      /* inner frame is neither IPv4 nor IPv6 */
	DROP_BAD_IPV4,    /* version, IHL, total length, checksum */
	DROP_BAD_IPV6,    /* version, payload length, extension header chain */
	DROP_BAD_L4,      /* TCP data offset, UDP length, tiny first fragment */
	DROP_BAD_TCP_FLAGS,
	DROP_MULTISEG,    /* frame does not fit in one mbuf segment */
	DROP_FRAGMENT,    /* non-first fragment not explicitly allowed */
	DROP_RULE,        /* a rule said drop */
	DROP_DEFAULT,     /* no rule matched */
	DROP_CT_INVALID,  /* TCP segment that does not fit the tracked connection */
	DROP_NO_RULES,    /* no rule set loaded yet */
	DROP_MAX
};

extern const char *const nicfw_drop_names[DROP_MAX];

/* Parse result of one service-encapsulated packet (offsets into the frame). */
struct nicfw_pkt {
	struct nicfw_key key;
	struct nicfw_service_hdr svc; /* host byte order */
	uint16_t l2_off;   /* inner Ethernet */
	uint16_t l3_off;
	uint16_t l4_off;   /* 0 when there is no L4 header (non-first fragment, other protocol) */
	uint16_t l3_len;   /* IPv4 total length / IPv6 40 + payload length */
	uint16_t l4_len;   /* bytes from l4_off to the end of the IP payload */
	uint8_t is_v6;     /* IP version of the inner packet (not of the key) */
	uint8_t tcp_flags;
	uint8_t icmp_type;
	uint8_t has_vlan;
	uint8_t frag;      /* 0 not fragmented, 1 first fragment, 2 later fragment */
};

/* Wall-clock nanoseconds (CLOSE_REALTIME) of a TSC timestamp (main.c). */
uint64_t nicfw_wall_ns(uint64_t tsc);

#endif /* NICFW_H */
