/* SPDX-License-Identifier: Apache-2.0
 * The datapath lcore (see datapath.h).
 *
 * A burst is decided in three passes: parse every frame, classify every parsed key in one call
 * (classification does not depend on connection state), then apply conntrack and the verdict to
 * the packets in arrival order, so that a SYN and its SYN-ACK in one burst behave as if they had
 * come one by one. Verdict order: a tracked connection forwards (or ends); an ICMP error about a
 * tracked connection forwards as related; otherwise the rule set decides: allow (track it, NEW
 * record), drop, reject. Malformed frames never get that far.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "datapath.h"
#include "service.h"

#define CMD_RING_SIZE 64
#define REC_RING_SIZE 16384
#define EXPIRE_BUDGET 1024
#define IDLE_POLLS 64
#define DEEP_IDLE_POLLS 4096

#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

volatile bool force_quit;

const char *const nicfw_drop_names[DROP_MAX] = {
	[DROP_NOT_SERVICE] = "not_service", [DROP_TRUNCATED] = "truncated",
	[DROP_NON_IP] = "non_ip",	    [DROP_BAD_IPV4] = "bad_ipv4",
	[DROP_BAD_IPV6] = "bad_ipv6",	    [DROP_BAD_L4] = "bad_l4",
	[DROP_BAD_TCP_FLAGS] = "bad_tcp_flags", [DROP_MULTISEG] = "multiseg",
	[DROP_FRAGMENT] = "fragment",	    [DROP_RULE] = "rule",
	[DROP_DEFAULT] = "default",	    [DROP_CT_INVALID] = "ct_invalid",
	[DROP_NO_RULES] = "no_rules",
};

int
dp_init(struct datapath *dp, const struct dp_config *cfg, struct rte_mempool *pool)
{
	char name[RTE_RING_NAMESIZE];
	int rc;

	memset(dp, 0, sizeof(*dp));
	dp->cfg = *cfg;
	dp->pool = pool;
	dp->tb_tokens = cfg->reject_rate;
	snprintf(name, sizeof(name), "nicfw_ct_%d", getpid());
	rc = ct_init(&dp->ct, name, cfg->max_flows, &cfg->timeouts);
	if (rc < 0)
		return rc;
	snprintf(name, sizeof(name), "nicfw_id_%d", getpid());
	rc = identity_init(&dp->ident, name, cfg->max_identities);
	if (rc < 0)
		return rc;
	dp->cmd_ring = rte_ring_create("nicfw_cmd", CMD_RING_SIZE, SOCKET_ID_ANY,
				       RING_F_SP_ENQ | RING_F_SC_DEQ);
	dp->rec_ring = rte_ring_create_elem("nicfw_rec", sizeof(struct nicfw_flow_record),
					    REC_RING_SIZE, SOCKET_ID_ANY,
					    RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (dp->cmd_ring == NULL || dp->rec_ring == NULL)
		return -rte_errno;
	return 0;
}

void
dp_free(struct datapath *dp)
{
	ruleset_free(dp->rs);
	dp->rs = NULL;
	ct_free(&dp->ct);
	identity_free(&dp->ident);
	rte_ring_free(dp->cmd_ring);
	rte_ring_free(dp->rec_ring);
}

static void
emit(struct datapath *dp, struct nicfw_flow_record *rec)
{
	if (rte_ring_enqueue_elem(dp->rec_ring, rec, sizeof(*rec)) == 0)
		dp->stats.records++;
	else
		dp->stats.records_lost++;
}

void
dp_emit_entry(struct datapath *dp, struct ct_entry *e, uint8_t event)
{
	struct nicfw_flow_record rec;

	ct_fill_record(e, event, &rec);
	emit(dp, &rec);
	if (event == NICFW_EV_END)
		e->ended = 1;
}

/* Record of a decision that created no connection entry (drop, reject, table full). */
static void
emit_decision(struct datapath *dp, const struct nicfw_pkt *pi, uint8_t verdict, uint32_t rule_id,
	      uint32_t len, uint64_t now)
{
	struct nicfw_flow_record rec;

	memset(&rec, 0, sizeof(rec));
	memcpy(rec.src_addr, pi->key.src, 16);
	memcpy(rec.dst_addr, pi->key.dst, 16);
	rec.sport = rte_be_to_cpu_16(pi->key.sport);
	rec.dport = rte_be_to_cpu_16(pi->key.dport);
	rec.proto = pi->key.proto;
	rec.verdict = verdict;
	rec.reason = pi->svc.reason;
	rec.direction = pi->svc.direction;
	rec.rule_id = rule_id;
	rec.ingress_port = pi->svc.ingress_port;
	rec.egress_port = pi->svc.egress_port;
	rec.workload_id = pi->svc.workload_id;
	rec.event = NICFW_EV_NEW;
	rec.packets = 1;
	rec.bytes = len;
	rec.first_seen_ns = rec.last_seen_ns = nicfw_wall_ns(now);
	emit(dp, &rec);
}

static void
on_expire(void *arg, struct ct_entry *e)
{
	struct datapath *dp = arg;

	dp->stats.ct_expired++;
	if (!e->ended)
		dp_emit_entry(dp, e, NICFW_EV_END);
}

static bool
reject_allowed(struct datapath *dp, uint64_t now)
{
	uint64_t hz = rte_get_tsc_hz(), elapsed = RTE_MIN(now - dp->tb_last, hz);
	uint64_t add = elapsed * dp->cfg.reject_rate / hz;

	if (add > 0) {
		dp->tb_tokens = RTE_MIN((uint64_t)dp->cfg.reject_rate, dp->tb_tokens + add);
		dp->tb_last = now;
	}
	if (dp->tb_tokens == 0)
		return false;
	dp->tb_tokens--;
	return true;
}

/* Which allowed packets start a tracked connection; the rest pass untracked or are invalid. */
enum track { TRACK, UNTRACKED, INVALID };

static enum track
track_kind(const struct datapath *dp, const struct nicfw_pkt *pi)
{
	const struct nicfw_key *k = &pi->key;
	const uint8_t *tc = (const uint8_t *)&k->dport;

	if (k->proto == 6) {
		uint8_t f = pi->tcp_flags;
		if (f & TCP_RST)
			return UNTRACKED;
		if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			return TRACK;
		if (f & TCP_SYN) /* SYN-ACK of a connection never seen */
			return INVALID;
		return dp->cfg.tcp_pickup ? TRACK : INVALID;
	}
	if (k->proto == 1) /* only an echo request starts ICMP state */
		return tc[0] == 8 ? TRACK : UNTRACKED;
	if (k->proto == 58)
		return tc[0] == 128 ? TRACK : UNTRACKED;
	return TRACK;
}

enum fate { FORWARD, DROP, REJECT };

/*
 * The tracked connection an ICMP error reports on (RELATED, as nf_conntrack_inet_error finds it):
 * the quoted packet's tuple is a live connection (a TCP one not CLOSED), and the error travels
 * toward the quoted packet's sender. Read only: the connection's state, counters and timeout stay
 * as they were. NULL when the packet is no such error.
 */
static __rte_noinline const struct ct_entry *
related_entry(struct datapath *dp, const uint8_t *frame, const struct nicfw_pkt *pi,
	      uint64_t now)
{
	const struct ct_entry *e;
	struct nicfw_key q;
	struct ct_key ck;
	uint8_t src_is_b;

	if (!service_parse_quote(frame, pi, &q) || memcmp(q.src, pi->key.dst, 16) != 0)
		return NULL;
	ct_make_key(&q, &ck, &src_is_b);
	e = ct_lookup(&dp->ct, &ck, NULL);
	if (e == NULL || ct_expired(e, now) || (e->key.proto == 6 && e->state == CT_TCP_CLOSED))
		return NULL;
	return e;
}

/* The verdict of one parsed packet; *rule_id is the deciding rule, *why the drop reason. */
static enum fate
decide(struct datapath *dp, const uint8_t *frame, const struct nicfw_pkt *pi, uint32_t result,
       uint32_t len, uint64_t now, uint32_t *rule_id, int *why)
{
	const struct nicfw_ruleset *rs = dp->rs;
	struct ct_entry *e;
	struct ct_key ck;
	uint8_t src_is_b;

	if (pi->svc.reason == NICFW_REASON_REJECT) { /* the pipeline's ACL already decided */
		*rule_id = pi->svc.rule_id;
		if (dp->cfg.drop_records)
			emit_decision(dp, pi, NICFW_ACT_REJECT, *rule_id, len, now);
		return REJECT;
	}
	if (pi->key.flags & NICFW_KEY_FRAG) {
		const struct nicfw_rule *r = rs ? ruleset_rule(rs, result) : NULL;
		if (r != NULL && r->action == NICFW_ACT_ALLOW && rule_ports_wildcard(r)) {
			*rule_id = r->rule_id;
			return FORWARD;
		}
		*why = rs ? DROP_FRAGMENT : DROP_NO_RULES;
		return DROP;
	}

	ct_make_key(&pi->key, &ck, &src_is_b);
	e = ct_lookup(&dp->ct, &ck, NULL);
	if (e != NULL && ct_expired(e, now)) {
		on_expire(dp, e);
		ct_delete(&dp->ct, e);
		e = NULL;
	}
	if (e != NULL) {
		switch (ct_update(&dp->ct, e, src_is_b, pi, len, now)) {
		case CT_PASS:
			dp->stats.ct_hit++;
			*rule_id = e->rule_id;
			return FORWARD;
		case CT_END:
			dp->stats.ct_hit++;
			dp->stats.ct_end++;
			if (!e->ended)
				dp_emit_entry(dp, e, NICFW_EV_END);
			*rule_id = e->rule_id;
			return FORWARD;
		case CT_INVALID:
			*why = DROP_CT_INVALID;
			return DROP;
		case CT_RESTART:
			if (!e->ended)
				dp_emit_entry(dp, e, NICFW_EV_END);
			ct_delete(&dp->ct, e);
			break;
		}
	}

	if (unlikely((pi->key.proto == 1 || pi->key.proto == 58) && pi->l4_off != 0)) {
		const struct ct_entry *rel = related_entry(dp, frame, pi, now);
		if (rel != NULL) {
			dp->stats.ct_related++;
			*rule_id = rel->rule_id;
			return FORWARD;
		}
	}

	if (rs == NULL) {
		*why = DROP_NO_RULES;
		return DROP;
	}
	const struct nicfw_rule *r = ruleset_rule(rs, result);
	uint8_t action = r ? r->action : NICFW_ACT_DROP;
	*rule_id = r ? r->rule_id : 0;
	if (action != NICFW_ACT_ALLOW) {
		if (dp->cfg.drop_records)
			emit_decision(dp, pi, action, *rule_id, len, now);
		*why = r ? DROP_RULE : DROP_DEFAULT;
		return action == NICFW_ACT_REJECT ? REJECT : DROP;
	}
	switch (track_kind(dp, pi)) {
	case INVALID:
		*why = DROP_CT_INVALID;
		return DROP;
	case UNTRACKED:
		return FORWARD;
	case TRACK:
		break;
	}
	e = ct_create(&dp->ct, &ck, src_is_b, pi, *rule_id, now);
	if (e == NULL) { /* table full: the rule allows it, only the state is missing */
		dp->stats.ct_full++;
		emit_decision(dp, pi, NICFW_ACT_ALLOW, *rule_id, len, now);
		return FORWARD;
	}
	dp->stats.ct_new++;
	e->packets = 1;
	e->bytes = len;
	dp_emit_entry(dp, e, NICFW_EV_NEW);
	return FORWARD;
}

uint16_t
dp_process_burst(struct datapath *dp, struct rte_mbuf **pkts, uint16_t n, struct rte_mbuf **tx,
		 uint64_t now)
{
	struct nicfw_pkt pi[MAX_PKT_BURST];
	const struct nicfw_key *keys[MAX_PKT_BURST];
	const uint8_t *frame[MAX_PKT_BURST];
	uint32_t res[MAX_PKT_BURST] = {0}, kres[MAX_PKT_BURST];
	int rc[MAX_PKT_BURST];
	uint16_t kidx[MAX_PKT_BURST], nk = 0, ntx = 0;
#ifdef NICFW_ASAN_COPY
	uint8_t *copies[MAX_PKT_BURST] = {0};
#endif

	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];

		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
		frame[i] = rte_pktmbuf_mtod(m, const uint8_t *);
		if (m->nb_segs > 1) {
			rc[i] = DROP_MULTISEG;
			continue;
		}
#ifdef NICFW_ASAN_COPY
		/* Sanitizer builds parse an exact-size heap copy, so an over-read is reported. */
		copies[i] = malloc(m->data_len ? m->data_len : 1);
		if (copies[i] == NULL) {
			rc[i] = DROP_TRUNCATED;
			continue;
		}
		memcpy(copies[i], frame[i], m->data_len);
		frame[i] = copies[i];
#endif
		rc[i] = service_parse(frame[i], m->data_len, &pi[i]);
		if (rc[i] != PARSE_OK)
			continue;
		pi[i].key.id_class = identity_lookup(&dp->ident, &pi[i].key);
		keys[nk] = &pi[i].key;
		kidx[nk++] = i;
	}
	if (dp->rs != NULL && nk > 0) {
		ruleset_classify(dp->rs, keys, kres, nk);
		for (uint16_t j = 0; j < nk; j++)
			res[kidx[j]] = kres[j];
	}

	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		uint32_t rule_id = 0;
		int why = rc[i];
		enum fate fate = DROP;

		if (rc[i] == PARSE_OK)
			fate = decide(dp, frame[i], &pi[i], res[i], m->pkt_len, now, &rule_id, &why);
		if (fate == FORWARD) {
			service_set_rule_id(rte_pktmbuf_mtod(m, uint8_t *), rule_id);
			dp->stats.allowed++;
			tx[ntx++] = m;
			NICFW_DBG("pkt %u: forward rule %u\n", i, rule_id);
		} else {
			if (fate == REJECT) {
				struct rte_mbuf *r = NULL;

				dp->stats.rejected++;
				if (reject_allowed(dp, now))
					r = service_reject(frame[i], &pi[i], rule_id, dp->pool);
				else
					dp->stats.reject_suppressed++;
				if (r != NULL) {
					dp->stats.reject_sent++;
					tx[ntx++] = r;
				}
			} else {
				dp->stats.dropped++;
				dp->stats.drop[why]++;
			}
			NICFW_DBG("pkt %u: %s (%s)\n", i, fate == REJECT ? "reject" : "drop",
				  nicfw_drop_names[why]);
			rte_pktmbuf_free(m);
		}
#ifdef NICFW_ASAN_COPY
		free(copies[i]);
#endif
	}
	return ntx;
}

static void
handle_commands(struct datapath *dp)
{
	void *p = NULL;

	while (rte_ring_dequeue(dp->cmd_ring, &p) == 0) {
		struct dp_cmd *cmd = p;

		dp_execute(dp, cmd);
		dp->stats.commands++;
		__atomic_store_n(&cmd->done, 1, __ATOMIC_RELEASE);
	}
}

static void
transmit(struct datapath *dp, struct rte_mbuf **tx, uint16_t n)
{
	uint16_t sent = 0;

	/* A few retries ride out a momentarily full TX ring; then the rest is counted and freed. */
	for (int tries = 0; tries < 4 && sent < n; tries++)
		sent += rte_eth_tx_burst(dp->cfg.port_id, dp->cfg.queue_id, tx + sent, n - sent);
	dp->stats.tx += sent;
	if (sent < n) {
		dp->stats.tx_fail += n - sent;
		rte_pktmbuf_free_bulk(tx + sent, n - sent);
	}
}

int
dp_main_loop(void *arg)
{
	struct datapath *dp = arg;
	struct rte_mbuf *rx[MAX_PKT_BURST], *tx[2 * MAX_PKT_BURST];
	uint64_t hz = rte_get_tsc_hz();
	uint32_t idle = 0;

	if (rte_lcore_id() != dp->lcore_id)
		return 0;
	__atomic_store_n(&dp->running, 1, __ATOMIC_RELEASE);
	RTE_LOG(INFO, NICFW, "datapath on lcore %u, port %s\n", dp->lcore_id,
		dp->cfg.has_port ? "attached" : "none");
	while (!force_quit) {
		uint64_t now;
		uint16_t nb = 0;

		handle_commands(dp);
		now = rte_rdtsc();
		if (dp->cfg.has_port && (!dp->cfg.wait_rules || dp->rs != NULL))
			nb = rte_eth_rx_burst(dp->cfg.port_id, dp->cfg.queue_id, rx, MAX_PKT_BURST);
		if (nb > 0) {
			dp->stats.rx += nb;
			uint16_t ntx = dp_process_burst(dp, rx, nb, tx, now);
			if (ntx > 0)
				transmit(dp, tx, ntx);
			idle = 0;
		} else {
			idle++;
		}
		if (now >= dp->next_expire) {
			ct_expire_scan(&dp->ct, now, EXPIRE_BUDGET, on_expire, dp);
			dp->next_expire = now + hz / 100;
		}
		/* Polling an idle port burns a core; back off after a few empty polls, and ten
		 * times further once the port has been quiet for a few thousand polls. */
		if (idle > IDLE_POLLS) {
			uint32_t us = dp->cfg.has_port ? dp->cfg.idle_sleep_us : 1000;
			if (idle > DEEP_IDLE_POLLS)
				us *= 10;
			if (us > 0)
				rte_delay_us_sleep(us);
		}
	}
	handle_commands(dp);
	__atomic_store_n(&dp->exited, 1, __ATOMIC_RELEASE);
	return 0;
}

int
dp_submit(struct datapath *dp, struct dp_cmd *cmd)
{
	cmd->done = 0;
	if (__atomic_load_n(&dp->exited, __ATOMIC_ACQUIRE))
		return -ESHUTDOWN;
	if (rte_ring_enqueue(dp->cmd_ring, cmd) != 0)
		return -EBUSY;
	while (!__atomic_load_n(&cmd->done, __ATOMIC_ACQUIRE)) {
		/* The datapath drains its commands before it sets exited: re-check done first. */
		if (__atomic_load_n(&dp->exited, __ATOMIC_ACQUIRE) &&
		    !__atomic_load_n(&cmd->done, __ATOMIC_ACQUIRE))
			return -ESHUTDOWN;
		usleep(20);
	}
	return cmd->result;
}
