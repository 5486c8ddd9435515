/* SPDX-License-Identifier: Apache-2.0
 * Rule-set classification: one lookup method per file (classify_acl.c, classify_linear.c) behind
 * a struct of function pointers, as DPDK's l3fwd does; ruleset.c wraps one built classifier
 * together with the rules it was built from.
 */
#ifndef NICFW_CLASSIFY_H
#define NICFW_CLASSIFY_H

#include "nicfw.h"

#define NICFW_BUILD_NO_FRAG 0x1 /* skip the fragment contexts (benchmarks have no fragments) */

/*
 * A classifier answers, for each key, 1 + the index of the first matching rule in the array it
 * was built from (rules ordered by descending priority, ties by array order), or 0 for no match.
 * Keys flagged NICFW_KEY_FRAG are matched with their ports ignored.
 */
struct nicfw_classifier_ops {
	const char *name;
	void *(*build)(const struct nicfw_rule *rules, uint32_t n, uint32_t flags, char *err,
		       size_t errlen);
	void (*classify)(void *ctx, const struct nicfw_key *const keys[], uint32_t *results,
			 uint32_t n);
	void (*free)(void *ctx);
	size_t (*memory)(const void *ctx); /* bytes of the built lookup structure */
};

extern const struct nicfw_classifier_ops nicfw_acl_ops;
extern const struct nicfw_classifier_ops nicfw_linear_ops;

/* rte_acl specifics used by the benchmark. */
int acl_set_alg(void *ctx, int alg);
const char *acl_alg_name(int alg);
int acl_get_alg(const void *ctx);

/* One immutable rule set: the rules and the classifier built from them. */
struct nicfw_ruleset {
	const struct nicfw_classifier_ops *ops;
	void *ctx;
	struct nicfw_rule *rules; /* copy; classifier results index it (result - 1) */
	uint32_t n_rules;
	uint64_t generation;
	uint64_t build_ns;
	size_t memory;
};

int nicfw_rule_check(const struct nicfw_rule *r, uint32_t index, char *err, size_t errlen);
struct nicfw_ruleset *ruleset_build(const struct nicfw_classifier_ops *ops,
				    const struct nicfw_rule *rules, uint32_t n, uint32_t flags,
				    char *err, size_t errlen);
void ruleset_free(struct nicfw_ruleset *rs);

static inline void
ruleset_classify(const struct nicfw_ruleset *rs, const struct nicfw_key *const keys[],
		 uint32_t *results, uint32_t n)
{
	rs->ops->classify(rs->ctx, keys, results, n);
}

/* The deciding rule for a classifier result, or NULL (default: drop, rule id 0). */
static inline const struct nicfw_rule *
ruleset_rule(const struct nicfw_ruleset *rs, uint32_t result)
{
	return (result == 0 || result > rs->n_rules) ? NULL : &rs->rules[result - 1];
}

static inline bool
rule_ports_wildcard(const struct nicfw_rule *r)
{
	return r->sport_lo == 0 && r->sport_hi == 0xffff && r->dport_lo == 0 &&
	       r->dport_hi == 0xffff;
}

/* Helpers on 128-bit prefixes and IPv4-mapped addresses (::ffff:0:0/96). */
bool addr_is_v4_mapped(const uint8_t addr[16]);
bool prefix_meets_v4(const uint8_t addr[16], uint8_t plen);  /* shares an address with ::ffff:0:0/96 */
bool prefix_within_v4(const uint8_t addr[16], uint8_t plen); /* lies entirely inside it */
bool prefix_match(const uint8_t addr[16], const uint8_t prefix[16], uint8_t plen);

/* Order of rules by descending priority, then array order; returns a malloc'd index array. */
uint32_t *rules_priority_order(const struct nicfw_rule *rules, uint32_t n);

#endif /* NICFW_CLASSIFY_H */
