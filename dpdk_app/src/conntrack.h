/* SPDX-License-Identifier: Apache-2.0
 * Connection tracking: an rte_hash keyed by the normalized 5-tuple (both directions of a
 * connection find the same entry), entries in a preallocated array indexed by the hash's key
 * position, a TCP state machine and UDP/ICMP/other pseudo-state, idle timeouts.
 * Owned by one datapath lcore: no locks, no allocation per packet.
 */
#ifndef NICFW_CONNTRACK_H
#define NICFW_CONNTRACK_H

#include "nicfw.h"

struct rte_hash;

/* Connection states, as reported in nicfw_flow_record.tcp_state (dpdk_app/fastpath.py CtState). */
enum ct_state {
	CT_NONE = 0,
	CT_TCP_SYN_SENT = 1,
	CT_TCP_SYN_RECV = 2,
	CT_TCP_ESTABLISHED = 3,
	CT_TCP_FIN_WAIT = 4,  /* one side has sent FIN */
	CT_TCP_TIME_WAIT = 5, /* both sides have sent FIN */
	CT_TCP_CLOSED = 6,    /* RST seen */
	CT_UNREPLIED = 7,     /* UDP/ICMP/other: packets seen one way only */
	CT_REPLIED = 8,       /* ... and the other way too */
};

/* Normalized key: (a, pa) <= (b, pb) so that both directions are the same key. */
struct ct_key {
	uint8_t a[16];
	uint8_t b[16];
	uint16_t pa; /* network order */
	uint16_t pb;
	uint8_t proto;
	uint8_t pad[3];
};

struct ct_entry {
	struct ct_key key;
	uint16_t orig_sport; /* as classified (network order); ICMP: id and type/code */
	uint16_t orig_dport;
	uint8_t orig_is_b;   /* the initiator's address is key.b */
	uint8_t state;
	uint8_t fin_orig, fin_reply;
	uint8_t ended;       /* an END record has been emitted */
	uint8_t reason, direction;
	uint16_t ingress_port, egress_port, workload_id;
	uint32_t rule_id;
	uint64_t packets, bytes;
	uint64_t first_tsc, last_tsc, expire_tsc;
};

struct ct_timeouts { /* seconds */
	uint32_t tcp_syn, tcp_est, tcp_close, udp, icmp, other;
};

struct conntrack {
	struct rte_hash *h;
	struct ct_entry *entries; /* indexed by hash key position */
	uint32_t capacity;
	uint32_t count;
	uint32_t scan_next;       /* rte_hash_iterate cursor for idle expiry */
	uint64_t to_tsc[CT_REPLIED + 1]; /* timeout of each state, in TSC cycles */
	uint64_t to_other_tsc, to_icmp_tsc;
};

/* What the state machine says about a packet of a tracked connection. */
enum ct_verdict {
	CT_PASS,    /* forward */
	CT_INVALID, /* does not fit the connection: drop */
	CT_END,     /* forward; the connection just ended (RST, second FIN): emit END */
	CT_RESTART, /* a new SYN on a closed connection: forget it and classify as new */
};

int ct_init(struct conntrack *ct, const char *name, uint32_t capacity,
	    const struct ct_timeouts *to);
void ct_free(struct conntrack *ct);

/* Key of a packet; *is_orig_b tells whether the packet's source is key.b. */
void ct_make_key(const struct nicfw_key *k, struct ct_key *ck, uint8_t *src_is_b);

/* Lookup; returns the entry (and its position) or NULL. */
struct ct_entry *ct_lookup(struct conntrack *ct, const struct ct_key *ck, int32_t *pos);

/* Insert a new connection for the packet; NULL when the table is full. */
struct ct_entry *ct_create(struct conntrack *ct, const struct ct_key *ck, uint8_t src_is_b,
			   const struct nicfw_pkt *pi, uint32_t rule_id, uint64_t now);

void ct_delete(struct conntrack *ct, struct ct_entry *e);

/* Advance the state machine with one packet (direction: src_is_b == e->orig_is_b). */
enum ct_verdict ct_update(struct conntrack *ct, struct ct_entry *e, uint8_t src_is_b,
			  const struct nicfw_pkt *pi, uint32_t pkt_len, uint64_t now);

static inline bool
ct_expired(const struct ct_entry *e, uint64_t now)
{
	return now >= e->expire_tsc;
}

/* The orig-direction classification key of an entry (id_class left 0). */
void ct_entry_key(const struct ct_entry *e, struct nicfw_key *k);

/* Fill a flow record (orig direction, host-order ports, wall-clock times) from an entry. */
void ct_fill_record(const struct ct_entry *e, uint8_t event, struct nicfw_flow_record *rec);

/*
 * Visit up to budget entries from the expiry cursor; expired ones are passed to on_expire
 * (which emits END) and deleted. Returns the number visited.
 */
uint32_t ct_expire_scan(struct conntrack *ct, uint64_t now, uint32_t budget,
			void (*on_expire)(void *arg, struct ct_entry *e), void *arg);

/* Pointers to every entry (at most max) into out; deleting them afterwards is safe. */
uint32_t ct_snapshot(struct conntrack *ct, struct ct_entry **out, uint32_t max);

#endif /* NICFW_CONNTRACK_H */
