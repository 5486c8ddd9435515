/* SPDX-License-Identifier: Apache-2.0
 * Connection tracking over rte_hash (see conntrack.h).
 *
 * TCP: SYN -> SYN_SENT, SYN-ACK from the responder -> SYN_RECV, ACK from the initiator ->
 * ESTABLISHED, a FIN -> FIN_WAIT, FINs from both sides -> TIME_WAIT (END), RST -> CLOSED (END).
 * A SYN on a TIME_WAIT/CLOSED connection restarts it; a SYN-ACK from the initiator, a bare SYN
 * from the responder and anything but RST/SYN after a RST are invalid. No sequence-window
 * tracking: the rules decided the connection, this only follows its life.
 * UDP, ICMP echo and other protocols: UNREPLIED until a packet comes back, then REPLIED.
 */
#include <errno.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <rte_random.h>

#include "classify.h"
#include "conntrack.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

int
ct_init(struct conntrack *ct, const char *name, uint32_t capacity, const struct ct_timeouts *to)
{
	struct rte_hash_parameters hp = {
		.name = name,
		.entries = capacity,
		.key_len = sizeof(struct ct_key),
		.hash_func = rte_hash_crc,
		/* A random seed keeps crafted tuples from piling into one bucket. */
		.hash_func_init_val = (uint32_t)rte_rand(),
		.socket_id = (int)rte_socket_id(),
		.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	uint64_t hz = rte_get_tsc_hz();

	memset(ct, 0, sizeof(*ct));
	if (hp.socket_id < 0)
		hp.socket_id = 0;
	ct->h = rte_hash_create(&hp);
	if (ct->h == NULL)
		return -rte_errno;
	ct->entries = rte_zmalloc("nicfw_ct", sizeof(struct ct_entry) * capacity, 64);
	if (ct->entries == NULL) {
		rte_hash_free(ct->h);
		ct->h = NULL;
		return -ENOMEM;
	}
	ct->capacity = capacity;
	ct->to_tsc[CT_TCP_SYN_SENT] = ct->to_tsc[CT_TCP_SYN_RECV] = hz * to->tcp_syn;
	ct->to_tsc[CT_TCP_ESTABLISHED] = hz * to->tcp_est;
	ct->to_tsc[CT_TCP_FIN_WAIT] = ct->to_tsc[CT_TCP_TIME_WAIT] = hz * to->tcp_close;
	ct->to_tsc[CT_TCP_CLOSED] = hz * to->tcp_close;
	ct->to_tsc[CT_UNREPLIED] = ct->to_tsc[CT_REPLIED] = hz * to->udp;
	ct->to_icmp_tsc = hz * to->icmp;
	ct->to_other_tsc = hz * to->other;
	return 0;
}

void
ct_free(struct conntrack *ct)
{
	rte_hash_free(ct->h);
	rte_free(ct->entries);
	memset(ct, 0, sizeof(*ct));
}

static bool
is_icmp_echo(const struct nicfw_key *k)
{
	const uint8_t *tc = (const uint8_t *)&k->dport; /* type, code */

	if (k->proto == 1)
		return tc[0] == 8 || tc[0] == 0;
	if (k->proto == 58)
		return tc[0] == 128 || tc[0] == 129;
	return false;
}

void
ct_make_key(const struct nicfw_key *k, struct ct_key *ck, uint8_t *src_is_b)
{
	uint16_t sp = k->sport, dp = k->dport;
	int c;

	/* Echo request and reply carry different types: key them by identifier alone. */
	if ((k->proto == 1 || k->proto == 58) && is_icmp_echo(k))
		dp = sp;
	memset(ck, 0, sizeof(*ck));
	ck->proto = k->proto;
	c = memcmp(k->src, k->dst, 16);
	if (c == 0)
		c = memcmp(&sp, &dp, 2);
	*src_is_b = c > 0;
	memcpy(ck->a, c > 0 ? k->dst : k->src, 16);
	memcpy(ck->b, c > 0 ? k->src : k->dst, 16);
	ck->pa = c > 0 ? dp : sp;
	ck->pb = c > 0 ? sp : dp;
}

struct ct_entry *
ct_lookup(struct conntrack *ct, const struct ct_key *ck, int32_t *pos)
{
	int32_t p = rte_hash_lookup(ct->h, ck);

	if (p < 0)
		return NULL;
	if (pos != NULL)
		*pos = p;
	return &ct->entries[p];
}

static uint64_t
ct_timeout(const struct conntrack *ct, const struct ct_entry *e)
{
	if (e->key.proto == 6)
		return ct->to_tsc[e->state];
	if (e->key.proto == 17)
		return ct->to_tsc[CT_UNREPLIED];
	if (e->key.proto == 1 || e->key.proto == 58)
		return ct->to_icmp_tsc;
	return ct->to_other_tsc;
}

struct ct_entry *
ct_create(struct conntrack *ct, const struct ct_key *ck, uint8_t src_is_b,
	  const struct nicfw_pkt *pi, uint32_t rule_id, uint64_t now)
{
	int32_t p = rte_hash_add_key(ct->h, ck);
	struct ct_entry *e;

	if (p < 0)
		return NULL;
	e = &ct->entries[p];
	memset(e, 0, sizeof(*e));
	e->key = *ck;
	e->orig_sport = pi->key.sport;
	e->orig_dport = pi->key.dport;
	e->orig_is_b = src_is_b;
	if (ck->proto != 6) {
		e->state = CT_UNREPLIED;
	} else if ((pi->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		e->state = CT_TCP_SYN_SENT;
	} else if (pi->tcp_flags & TCP_FIN) { /* picked up mid-stream */
		e->state = CT_TCP_FIN_WAIT;
		e->fin_orig = 1;
	} else {
		e->state = CT_TCP_ESTABLISHED;
	}
	e->reason = pi->svc.reason;
	e->direction = pi->svc.direction;
	e->ingress_port = pi->svc.ingress_port;
	e->egress_port = pi->svc.egress_port;
	e->workload_id = pi->svc.workload_id;
	e->rule_id = rule_id;
	e->first_tsc = e->last_tsc = now;
	e->expire_tsc = now + ct_timeout(ct, e);
	ct->count++;
	return e;
}

void
ct_delete(struct conntrack *ct, struct ct_entry *e)
{
	if (rte_hash_del_key(ct->h, &e->key) >= 0)
		ct->count--;
}

enum ct_verdict
ct_update(struct conntrack *ct, struct ct_entry *e, uint8_t src_is_b, const struct nicfw_pkt *pi,
	  uint32_t pkt_len, uint64_t now)
{
	bool orig = src_is_b == e->orig_is_b;
	enum ct_verdict v = CT_PASS;

	if (e->key.proto == 6) {
		uint8_t f = pi->tcp_flags;
		bool closed = e->state == CT_TCP_TIME_WAIT || e->state == CT_TCP_CLOSED;

		if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
			if (closed && orig)
				return CT_RESTART;
			if (!orig)
				return CT_INVALID; /* simultaneous open: not supported */
		} else if (f & TCP_RST) {
			v = e->state == CT_TCP_CLOSED ? CT_PASS : CT_END;
			e->state = CT_TCP_CLOSED;
		} else if (e->state == CT_TCP_CLOSED) {
			return CT_INVALID;
		} else if (f & TCP_SYN) { /* SYN-ACK */
			if (orig || closed)
				return CT_INVALID;
			if (e->state == CT_TCP_SYN_SENT)
				e->state = CT_TCP_SYN_RECV;
		} else {
			if (e->state == CT_TCP_SYN_RECV && orig && (f & TCP_ACK))
				e->state = CT_TCP_ESTABLISHED;
			if (f & TCP_FIN) {
				if (orig)
					e->fin_orig = 1;
				else
					e->fin_reply = 1;
				if (e->fin_orig && e->fin_reply) {
					v = e->state == CT_TCP_TIME_WAIT ? CT_PASS : CT_END;
					e->state = CT_TCP_TIME_WAIT;
				} else {
					e->state = CT_TCP_FIN_WAIT;
				}
			}
		}
	} else if (!orig && e->state == CT_UNREPLIED) {
		e->state = CT_REPLIED;
	}
	e->packets++;
	e->bytes += pkt_len;
	e->last_tsc = now;
	e->expire_tsc = now + ct_timeout(ct, e);
	return v;
}

void
ct_entry_key(const struct ct_entry *e, struct nicfw_key *k)
{
	memset(k, 0, sizeof(*k));
	k->proto = e->key.proto;
	memcpy(k->src, e->orig_is_b ? e->key.b : e->key.a, 16);
	memcpy(k->dst, e->orig_is_b ? e->key.a : e->key.b, 16);
	k->sport = e->orig_sport;
	k->dport = e->orig_dport;
	if (addr_is_v4_mapped(k->src) && addr_is_v4_mapped(k->dst))
		k->flags = NICFW_KEY_V4;
}

void
ct_fill_record(const struct ct_entry *e, uint8_t event, struct nicfw_flow_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	memcpy(rec->src_addr, e->orig_is_b ? e->key.b : e->key.a, 16);
	memcpy(rec->dst_addr, e->orig_is_b ? e->key.a : e->key.b, 16);
	rec->sport = rte_be_to_cpu_16(e->orig_sport);
	rec->dport = rte_be_to_cpu_16(e->orig_dport);
	rec->proto = e->key.proto;
	rec->verdict = NICFW_ACT_ALLOW;
	rec->reason = e->reason;
	rec->direction = e->direction;
	rec->rule_id = e->rule_id;
	rec->ingress_port = e->ingress_port;
	rec->egress_port = e->egress_port;
	rec->workload_id = e->workload_id;
	rec->tcp_state = e->state;
	rec->event = event;
	rec->packets = e->packets;
	rec->bytes = e->bytes;
	rec->first_seen_ns = nicfw_wall_ns(e->first_tsc);
	rec->last_seen_ns = nicfw_wall_ns(e->last_tsc);
}

uint32_t
ct_expire_scan(struct conntrack *ct, uint64_t now, uint32_t budget,
	       void (*on_expire)(void *arg, struct ct_entry *e), void *arg)
{
	uint32_t visited = 0;

	while (visited < budget) {
		const void *key;
		void *data;
		int32_t p = rte_hash_iterate(ct->h, &key, &data, &ct->scan_next);

		if (p < 0) {
			ct->scan_next = 0;
			break;
		}
		visited++;
		struct ct_entry *e = &ct->entries[p];
		if (ct_expired(e, now)) {
			on_expire(arg, e);
			ct_delete(ct, e);
		}
	}
	return visited;
}

uint32_t
ct_snapshot(struct conntrack *ct, struct ct_entry **out, uint32_t max)
{
	uint32_t next = 0, n = 0;
	const void *key;
	void *data;
	int32_t p;

	while (n < max && (p = rte_hash_iterate(ct->h, &key, &data, &next)) >= 0)
		out[n++] = &ct->entries[p];
	return n;
}
