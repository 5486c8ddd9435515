/* SPDX-License-Identifier: Apache-2.0
 * The datapath lcore: burst loop on the service port, verdicts, and the commands through which
 * the control thread reaches the lcore's state (rule-set swap, identities, resimulation).
 */
#ifndef NICFW_DATAPATH_H
#define NICFW_DATAPATH_H

#include "classify.h"
#include "conntrack.h"
#include "identity.h"
#include "nicfw.h"

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

struct dp_config {
	uint16_t port_id;
	uint16_t queue_id;
	bool has_port;
	bool wait_rules;     /* do not poll the port before the first LOAD_RULES */
	bool tcp_pickup;     /* a non-SYN TCP segment the rules allow starts tracking (loose) */
	bool drop_records;   /* emit NEW records for drop/reject decisions too */
	uint32_t idle_sleep_us; /* sleep after idle polls (0 = busy poll) */
	uint32_t reject_rate;   /* reject responses per second, at most */
	uint32_t max_flows;
	uint32_t max_identities;
	struct ct_timeouts timeouts;
};

/* Counters written by the datapath lcore only, read (relaxed) by the control thread. */
struct dp_stats {
	uint64_t rx, tx, tx_fail;
	uint64_t allowed, dropped, rejected, reject_sent, reject_suppressed;
	uint64_t ct_hit, ct_new, ct_full, ct_end, ct_expired, ct_related;
	uint64_t records, records_lost;
	uint64_t commands;
	uint64_t drop[DROP_MAX];
};

enum dp_cmd_type {
	CMD_SWAP_RULES,
	CMD_IDENTITY_ADD,
	CMD_IDENTITY_DEL,
	CMD_RESIMULATE,
	CMD_FLUSH,
	CMD_FLOW_DUMP,
	CMD_FLOW_DEL,
};

/* One request from the control thread; it waits until done is set. */
struct dp_cmd {
	enum dp_cmd_type type;
	const void *in;        /* rules set / identity array / flow_del array */
	uint32_t n_in;
	void *old;             /* CMD_SWAP_RULES: the rule set replaced (caller frees) */
	struct nicfw_flow_record *recs; /* malloc'd by the datapath, caller frees */
	uint32_t n_recs;
	uint32_t n_checked;
	uint64_t elapsed_ns;
	int result;
	int done;
};

struct datapath {
	struct dp_config cfg;
	unsigned int lcore_id;
	struct rte_mempool *pool;
	struct conntrack ct;
	struct identity_table ident;
	struct nicfw_ruleset *rs; /* NULL until the first LOAD_RULES: everything is dropped */
	struct rte_ring *cmd_ring;  /* control -> datapath, struct dp_cmd pointers */
	struct rte_ring *rec_ring;  /* datapath -> control, struct nicfw_flow_record elements */
	struct dp_stats stats;
	int running;
	int exited;
	uint64_t tb_tokens, tb_last; /* reject rate limit (token bucket) */
	uint64_t next_expire;
};

extern volatile bool force_quit;

int dp_init(struct datapath *dp, const struct dp_config *cfg, struct rte_mempool *pool);
void dp_free(struct datapath *dp);

/* lcore entry point (rte_eal_mp_remote_launch); returns at once on other lcores. */
int dp_main_loop(void *arg);

/* Decide one burst: re-injected packets and reject responses are put in tx (2 * n room). */
uint16_t dp_process_burst(struct datapath *dp, struct rte_mbuf **pkts, uint16_t n,
			  struct rte_mbuf **tx, uint64_t now);

/* Run a command on the datapath lcore and wait for it (control thread side). */
int dp_submit(struct datapath *dp, struct dp_cmd *cmd);

/* Emit a flow record of a tracked connection (END marks it ended). */
void dp_emit_entry(struct datapath *dp, struct ct_entry *e, uint8_t event);

/* Execute a command in the calling thread (the datapath itself, or when it is not running). */
void dp_execute(struct datapath *dp, struct dp_cmd *cmd);

#endif /* NICFW_DATAPATH_H */
