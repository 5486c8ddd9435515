/* SPDX-License-Identifier: Apache-2.0
 * The reference classifier: a first-match scan over the rules in priority order. Slow (O(rules)
 * per key) and obviously right; the benchmark's --verify-linear checks rte_acl against it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>

#include "classify.h"

struct linear_classifier {
	const struct nicfw_rule *rules; /* the ruleset's copy; outlives this classifier */
	uint32_t *order;
	uint32_t n;
};

static void *
linear_build(const struct nicfw_rule *rules, uint32_t n, uint32_t flags, char *err, size_t errlen)
{
	struct linear_classifier *lc = calloc(1, sizeof(*lc));

	(void)flags;
	if (lc == NULL || (lc->order = rules_priority_order(rules, n)) == NULL) {
		free(lc);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	lc->rules = rules;
	lc->n = n;
	return lc;
}

static bool
rule_matches(const struct nicfw_rule *r, const struct nicfw_key *k)
{
	uint16_t sport = rte_be_to_cpu_16(k->sport), dport = rte_be_to_cpu_16(k->dport);
	uint32_t id = rte_be_to_cpu_32(k->id_class);

	if ((k->proto & r->proto_mask) != (r->proto & r->proto_mask))
		return false;
	if ((id & r->id_mask) != (r->id_class & r->id_mask))
		return false;
	if (!(k->flags & NICFW_KEY_FRAG) &&
	    (sport < r->sport_lo || sport > r->sport_hi || dport < r->dport_lo ||
	     dport > r->dport_hi))
		return false;
	return prefix_match(k->src, r->src_addr, r->src_plen) &&
	       prefix_match(k->dst, r->dst_addr, r->dst_plen);
}

static void
linear_classify(void *c, const struct nicfw_key *const keys[], uint32_t *results, uint32_t n)
{
	const struct linear_classifier *lc = c;

	for (uint32_t i = 0; i < n; i++) {
		results[i] = 0;
		for (uint32_t j = 0; j < lc->n; j++) {
			if (rule_matches(&lc->rules[lc->order[j]], keys[i])) {
				results[i] = lc->order[j] + 1;
				break;
			}
		}
	}
}

static void
linear_free(void *c)
{
	struct linear_classifier *lc = c;

	if (lc != NULL)
		free(lc->order);
	free(lc);
}

static size_t
linear_memory(const void *c)
{
	return sizeof(struct linear_classifier) +
	       sizeof(uint32_t) * ((const struct linear_classifier *)c)->n;
}

const struct nicfw_classifier_ops nicfw_linear_ops = {
	.name = "linear",
	.build = linear_build,
	.classify = linear_classify,
	.free = linear_free,
	.memory = linear_memory,
};
