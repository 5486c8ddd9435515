/* SPDX-License-Identifier: Apache-2.0
 * Rule sets: validation of struct nicfw_rule arrays, building one classifier over a private copy
 * of the rules, and the 128-bit prefix helpers every classifier shares.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "classify.h"

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool
addr_is_v4_mapped(const uint8_t addr[16])
{
	return memcmp(addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

/* True when the first `bits` bits of a and b are equal. */
static bool
bits_equal(const uint8_t *a, const uint8_t *b, unsigned int bits)
{
	unsigned int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

bool
prefix_meets_v4(const uint8_t addr[16], uint8_t plen)
{
	return bits_equal(addr, v4_mapped_prefix, plen < 96 ? plen : 96);
}

bool
prefix_within_v4(const uint8_t addr[16], uint8_t plen)
{
	return plen >= 96 && bits_equal(addr, v4_mapped_prefix, 96);
}

bool
prefix_match(const uint8_t addr[16], const uint8_t prefix[16], uint8_t plen)
{
	return bits_equal(addr, prefix, plen);
}

int
nicfw_rule_check(const struct nicfw_rule *r, uint32_t index, char *err, size_t errlen)
{
	const char *what = NULL;

	if (r->src_plen > 128)
		what = "src_plen > 128";
	else if (r->dst_plen > 128)
		what = "dst_plen > 128";
	else if (r->sport_lo > r->sport_hi)
		what = "sport_lo > sport_hi";
	else if (r->dport_lo > r->dport_hi)
		what = "dport_lo > dport_hi";
	else if (r->action != NICFW_ACT_ALLOW && r->action != NICFW_ACT_DROP &&
		 r->action != NICFW_ACT_REJECT)
		what = "action is not ALLOW(1), DROP(2) or REJECT(3)";
	if (what == NULL)
		return 0;
	snprintf(err, errlen, "rule %u (rule_id %u): %s", index, r->rule_id, what);
	return -EINVAL;
}

struct prio_item {
	uint32_t priority;
	uint32_t index;
};

static int
prio_cmp(const void *a, const void *b)
{
	const struct prio_item *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	return x->index < y->index ? -1 : (x->index > y->index);
}

uint32_t *
rules_priority_order(const struct nicfw_rule *rules, uint32_t n)
{
	struct prio_item *items = malloc(sizeof(*items) * (n ? n : 1));
	uint32_t *order = malloc(sizeof(*order) * (n ? n : 1));

	if (items == NULL || order == NULL) {
		free(items);
		free(order);
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++) {
		items[i].priority = rules[i].priority;
		items[i].index = i;
	}
	qsort(items, n, sizeof(*items), prio_cmp);
	for (uint32_t i = 0; i < n; i++)
		order[i] = items[i].index;
	free(items);
	return order;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct nicfw_ruleset *
ruleset_build(const struct nicfw_classifier_ops *ops, const struct nicfw_rule *rules, uint32_t n,
	      uint32_t flags, char *err, size_t errlen)
{
	static uint64_t generation;
	struct nicfw_ruleset *rs;
	uint64_t t0 = now_ns();

	for (uint32_t i = 0; i < n; i++)
		if (nicfw_rule_check(&rules[i], i, err, errlen) < 0)
			return NULL;
	rs = calloc(1, sizeof(*rs));
	if (rs == NULL || (rs->rules = malloc(sizeof(*rules) * (n ? n : 1))) == NULL) {
		free(rs);
		snprintf(err, errlen, "out of memory for %u rules", n);
		return NULL;
	}
	memcpy(rs->rules, rules, sizeof(*rules) * n);
	rs->n_rules = n;
	rs->ops = ops;
	rs->ctx = ops->build(rs->rules, n, flags, err, errlen);
	if (rs->ctx == NULL) {
		free(rs->rules);
		free(rs);
		return NULL;
	}
	rs->memory = ops->memory(rs->ctx);
	rs->build_ns = now_ns() - t0;
	rs->generation = __atomic_add_fetch(&generation, 1, __ATOMIC_RELAXED);
	return rs;
}

void
ruleset_free(struct nicfw_ruleset *rs)
{
	if (rs == NULL)
		return;
	rs->ops->free(rs->ctx);
	free(rs->rules);
	free(rs);
}
