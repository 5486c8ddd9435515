/* SPDX-License-Identifier: Apache-2.0
 * Commands executed on the datapath lcore between bursts: rule-set swap, identity entries, and
 * the walks over the connection table (resimulation, flush, dump).
 *
 * Resimulation re-classifies every tracked connection (its initiator's 5-tuple and current
 * identity class) against the current rule set in one go, without yielding to packets: a walk
 * interleaved with inserts could miss an entry, and a missed entry would outlive its rule.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>

#include "datapath.h"

#define RESIM_BATCH 64

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
cmd_flows(struct datapath *dp, struct dp_cmd *cmd)
{
	uint64_t t0 = mono_ns();
	uint32_t cap = dp->ct.count ? dp->ct.count : 1, n, nrec = 0, ndel = 0;
	struct ct_entry **ents = malloc(sizeof(*ents) * cap);
	struct nicfw_flow_record *recs = malloc(sizeof(*recs) * cap);
	const struct nicfw_ruleset *rs = dp->rs;

	if (ents == NULL || recs == NULL) {
		free(ents);
		free(recs);
		cmd->result = -ENOMEM;
		return;
	}
	n = ct_snapshot(&dp->ct, ents, cap);
	for (uint32_t base = 0; base < n; base += RESIM_BATCH) {
		uint32_t m = RTE_MIN((uint32_t)RESIM_BATCH, n - base), res[RESIM_BATCH] = {0};
		struct nicfw_key keys[RESIM_BATCH];
		const struct nicfw_key *kp[RESIM_BATCH];

		for (uint32_t j = 0; j < m; j++) {
			ct_entry_key(ents[base + j], &keys[j]);
			keys[j].id_class = identity_lookup(&dp->ident, &keys[j]);
			kp[j] = &keys[j];
		}
		if (cmd->type == CMD_RESIMULATE && rs != NULL)
			ruleset_classify(rs, kp, res, m);
		for (uint32_t j = 0; j < m; j++) {
			struct ct_entry *e = ents[base + j];
			const struct nicfw_rule *r = NULL;

			if (cmd->type == CMD_FLOW_DUMP) {
				ct_fill_record(e, NICFW_EV_UPDATE, &recs[nrec++]);
				continue;
			}
			if (cmd->type == CMD_RESIMULATE) {
				r = rs != NULL ? ruleset_rule(rs, res[j]) : NULL;
				if (r != NULL && r->action == NICFW_ACT_ALLOW) {
					if (r->rule_id != e->rule_id) { /* still allowed, by another rule */
						e->rule_id = r->rule_id;
						dp_emit_entry(dp, e, NICFW_EV_UPDATE);
					}
					continue;
				}
			}
			ct_fill_record(e, NICFW_EV_END, &recs[nrec]);
			if (cmd->type == CMD_RESIMULATE) { /* the new decision and its rule */
				recs[nrec].verdict = r != NULL ? r->action : NICFW_ACT_DROP;
				recs[nrec].rule_id = r != NULL ? r->rule_id : 0;
			}
			nrec++;
			ents[ndel++] = e; /* reuse: entries before base + j are visited */
		}
	}
	for (uint32_t i = 0; i < ndel; i++)
		ct_delete(&dp->ct, ents[i]);
	free(ents);
	cmd->recs = recs;
	cmd->n_recs = nrec;
	cmd->n_checked = n;
	cmd->elapsed_ns = mono_ns() - t0;
	cmd->result = 0;
}

/*
 * FLOW_DEL: remove the named connections (both directions are one entry) unless seen after
 * their idle_before_ns. Each removed one gets an END record, in the reply and on the record
 * stream (unless it had already ended), so subscribers see it go.
 */
static void
cmd_flow_del(struct datapath *dp, struct dp_cmd *cmd)
{
	uint64_t t0 = mono_ns();
	const struct nicfw_flow_del *del = cmd->in;
	struct nicfw_flow_record *recs = malloc(sizeof(*recs) * (cmd->n_in ? cmd->n_in : 1));
	uint32_t nrec = 0;

	if (recs == NULL) {
		cmd->result = -ENOMEM;
		return;
	}
	for (uint32_t i = 0; i < cmd->n_in; i++) {
		struct nicfw_key k = {.proto = del[i].proto};
		struct ct_key ck;
		struct ct_entry *e;
		uint8_t src_is_b;

		memcpy(k.src, del[i].src_addr, 16);
		memcpy(k.dst, del[i].dst_addr, 16);
		k.sport = rte_cpu_to_be_16(del[i].sport);
		k.dport = rte_cpu_to_be_16(del[i].dport);
		ct_make_key(&k, &ck, &src_is_b);
		e = ct_lookup(&dp->ct, &ck, NULL);
		if (e == NULL)
			continue;
		if (del[i].idle_before_ns != 0 && nicfw_wall_ns(e->last_tsc) > del[i].idle_before_ns)
			continue; /* alive in software: seen after the caller's idle mark */
		if (!e->ended)
			dp_emit_entry(dp, e, NICFW_EV_END);
		ct_fill_record(e, NICFW_EV_END, &recs[nrec++]);
		ct_delete(&dp->ct, e);
	}
	cmd->recs = recs;
	cmd->n_recs = nrec;
	cmd->n_checked = cmd->n_in;
	cmd->elapsed_ns = mono_ns() - t0;
	cmd->result = 0;
}

void
dp_execute(struct datapath *dp, struct dp_cmd *cmd)
{
	const struct nicfw_identity *ids = cmd->in;
	uint32_t count = 0;
	int rc = 0;

	switch (cmd->type) {
	case CMD_SWAP_RULES:
		/* The whole rule set changes between two bursts: no packet sees half of it. */
		cmd->old = dp->rs;
		dp->rs = (struct nicfw_ruleset *)(uintptr_t)cmd->in;
		cmd->result = 0;
		return;
	case CMD_IDENTITY_ADD:
		for (uint32_t i = 0; i < cmd->n_in && rc == 0; i++) {
			rc = identity_add(&dp->ident, &ids[i]);
			count += rc == 0;
		}
		cmd->n_checked = count;
		cmd->result = rc;
		return;
	case CMD_IDENTITY_DEL:
		for (uint32_t i = 0; i < cmd->n_in; i++)
			count += (uint32_t)identity_del(&dp->ident, &ids[i]);
		cmd->n_checked = count;
		cmd->result = 0;
		return;
	case CMD_RESIMULATE:
	case CMD_FLUSH:
	case CMD_FLOW_DUMP:
		cmd_flows(dp, cmd);
		return;
	case CMD_FLOW_DEL:
		cmd_flow_del(dp, cmd);
		return;
	}
	cmd->result = -EINVAL;
}
