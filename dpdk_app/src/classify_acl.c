/* SPDX-License-Identifier: Apache-2.0
 * Classification with DPDK's rte_acl (multi-bit tries, SIMD classify).
 *
 * Keys are 128-bit. Four contexts are built from one nicfw_rule array:
 *  - IPv4: packets whose both addresses are IPv4-mapped; holds the rules whose source and
 *    destination prefixes both meet ::ffff:0:0/96, with 32-bit address fields;
 *  - IPv6: every other packet; holds the rules that can match an address outside the mapped
 *    space, with the addresses as four 32-bit fields each;
 *  - the same two with every port range widened to 0-65535, for non-first fragments: the first
 *    rule that could match the fragment for some ports decides it (the verdict code then allows
 *    it only if that rule is an allow with wildcarded ports).
 * rte_acl has no incremental update: a changed rule set is a new build, swapped in whole.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "classify.h"

enum { CTX_V4, CTX_V6, CTX_V4_FRAG, CTX_V6_FRAG, CTX_MAX };

/* IPv4 context fields: proto, src, dst, sport, dport, id_class. */
enum { F4_PROTO, F4_SRC, F4_DST, F4_SPORT, F4_DPORT, F4_ID, F4_NUM };
/* IPv6 context fields: proto, src0..3, dst0..3, sport, dport, id_class. */
enum { F6_PROTO, F6_SRC0, F6_DST0 = F6_SRC0 + 4, F6_SPORT = F6_DST0 + 4, F6_DPORT, F6_ID, F6_NUM };

RTE_ACL_RULE_DEF(acl4_rule, F4_NUM);
RTE_ACL_RULE_DEF(acl6_rule, F6_NUM);

#define KOFF(f) ((uint32_t)offsetof(struct nicfw_key, f))

static struct rte_acl_field_def v4_defs[F4_NUM] = {
	{RTE_ACL_FIELD_TYPE_BITMASK, 1, F4_PROTO, 0, KOFF(proto)},
	{RTE_ACL_FIELD_TYPE_MASK, 4, F4_SRC, 1, KOFF(src) + 12},
	{RTE_ACL_FIELD_TYPE_MASK, 4, F4_DST, 2, KOFF(dst) + 12},
	{RTE_ACL_FIELD_TYPE_RANGE, 2, F4_SPORT, 3, KOFF(sport)},
	{RTE_ACL_FIELD_TYPE_RANGE, 2, F4_DPORT, 3, KOFF(dport)},
	{RTE_ACL_FIELD_TYPE_BITMASK, 4, F4_ID, 4, KOFF(id_class)},
};

#define V6_ADDR_WORD(f, base, w) {RTE_ACL_FIELD_TYPE_MASK, 4, (base) + (w), (base) + (w), KOFF(f) + 4 * (w)}

/* Input index = field index up to the ports, which share one 4-byte group. */
static struct rte_acl_field_def v6_defs[F6_NUM] = {
	{RTE_ACL_FIELD_TYPE_BITMASK, 1, F6_PROTO, 0, KOFF(proto)},
	V6_ADDR_WORD(src, F6_SRC0, 0), V6_ADDR_WORD(src, F6_SRC0, 1),
	V6_ADDR_WORD(src, F6_SRC0, 2), V6_ADDR_WORD(src, F6_SRC0, 3),
	V6_ADDR_WORD(dst, F6_DST0, 0), V6_ADDR_WORD(dst, F6_DST0, 1),
	V6_ADDR_WORD(dst, F6_DST0, 2), V6_ADDR_WORD(dst, F6_DST0, 3),
	{RTE_ACL_FIELD_TYPE_RANGE, 2, F6_SPORT, F6_SPORT, KOFF(sport)},
	{RTE_ACL_FIELD_TYPE_RANGE, 2, F6_DPORT, F6_SPORT, KOFF(dport)},
	{RTE_ACL_FIELD_TYPE_BITMASK, 4, F6_ID, F6_DPORT, KOFF(id_class)},
};

struct acl_classifier {
	struct rte_acl_ctx *ctx[CTX_MAX]; /* NULL: no rule of that kind, nothing matches */
	size_t memory;
	int alg;
};

static uint32_t
be32_at(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t
word_plen(uint8_t plen, unsigned int word)
{
	int bits = (int)plen - 32 * (int)word;

	return bits <= 0 ? 0 : (bits >= 32 ? 32 : (uint32_t)bits);
}

static uint32_t
mask32(uint32_t plen)
{
	return plen == 0 ? 0 : (uint32_t)(0xffffffffu << (32 - plen));
}

/* Fields common to both contexts: proto, ports, identity class; data (priority, userdata). */
static void
fill_common(struct rte_acl_field *proto, struct rte_acl_field *sport, struct rte_acl_field *dport,
	    struct rte_acl_field *id, const struct nicfw_rule *r, bool widen)
{
	proto->value.u8 = r->proto & r->proto_mask;
	proto->mask_range.u8 = r->proto_mask;
	sport->value.u16 = widen ? 0 : r->sport_lo;
	sport->mask_range.u16 = widen ? 0xffff : r->sport_hi;
	dport->value.u16 = widen ? 0 : r->dport_lo;
	dport->mask_range.u16 = widen ? 0xffff : r->dport_hi;
	id->value.u32 = r->id_class & r->id_mask;
	id->mask_range.u32 = r->id_mask;
}

static void
fill_v4(struct acl4_rule *a, const struct nicfw_rule *r, bool widen)
{
	uint32_t sl = r->src_plen > 96 ? r->src_plen - 96u : 0;
	uint32_t dl = r->dst_plen > 96 ? r->dst_plen - 96u : 0;

	fill_common(&a->field[F4_PROTO], &a->field[F4_SPORT], &a->field[F4_DPORT], &a->field[F4_ID],
		    r, widen);
	a->field[F4_SRC].value.u32 = be32_at(r->src_addr + 12) & mask32(sl);
	a->field[F4_SRC].mask_range.u32 = sl;
	a->field[F4_DST].value.u32 = be32_at(r->dst_addr + 12) & mask32(dl);
	a->field[F4_DST].mask_range.u32 = dl;
}

static void
fill_v6(struct acl6_rule *a, const struct nicfw_rule *r, bool widen)
{
	fill_common(&a->field[F6_PROTO], &a->field[F6_SPORT], &a->field[F6_DPORT], &a->field[F6_ID],
		    r, widen);
	for (unsigned int w = 0; w < 4; w++) {
		uint32_t sl = word_plen(r->src_plen, w), dl = word_plen(r->dst_plen, w);

		a->field[F6_SRC0 + w].value.u32 = be32_at(r->src_addr + 4 * w) & mask32(sl);
		a->field[F6_SRC0 + w].mask_range.u32 = sl;
		a->field[F6_DST0 + w].value.u32 = be32_at(r->dst_addr + 4 * w) & mask32(dl);
		a->field[F6_DST0 + w].mask_range.u32 = dl;
	}
}

static bool
rule_in_ctx(const struct nicfw_rule *r, int which)
{
	bool v4 = prefix_meets_v4(r->src_addr, r->src_plen) &&
		  prefix_meets_v4(r->dst_addr, r->dst_plen);
	/* A rule both of whose prefixes lie inside the mapped space never sees an IPv6-context key. */
	bool v6 = !(prefix_within_v4(r->src_addr, r->src_plen) &&
		    prefix_within_v4(r->dst_addr, r->dst_plen));

	return (which == CTX_V4 || which == CTX_V4_FRAG) ? v4 : v6;
}

static struct rte_acl_ctx *
build_one(const struct nicfw_rule *rules, const uint32_t *order, uint32_t n, int which,
	  char *err, size_t errlen)
{
	static uint32_t seq;
	bool v4 = which == CTX_V4 || which == CTX_V4_FRAG;
	bool widen = which >= CTX_V4_FRAG;
	uint32_t num_fields = v4 ? F4_NUM : F6_NUM;
	uint32_t count = 0;
	struct rte_acl_param prm = {0};
	struct rte_acl_config cfg = {0};
	struct rte_acl_ctx *ctx;
	char name[RTE_ACL_NAMESIZE];
	int rc = 0;

	for (uint32_t i = 0; i < n; i++)
		count += rule_in_ctx(&rules[i], which);
	if (count == 0)
		return NULL;

	/* rte_acl_create returns an existing context of the same name: every build gets its own. */
	snprintf(name, sizeof(name), "nicfw%d_%u", which,
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	prm.name = name;
	prm.socket_id = SOCKET_ID_ANY;
	prm.rule_size = RTE_ACL_RULE_SZ(num_fields);
	prm.max_rule_num = count;
	ctx = rte_acl_create(&prm);
	if (ctx == NULL) {
		snprintf(err, errlen, "rte_acl_create(%s) failed: %s", name,
			 rte_strerror(rte_errno));
		return NULL;
	}

	/* rte_acl: higher priority wins; ours is rank order (priority desc, then array order). */
	for (uint32_t rank = 0; rank < n && rc == 0; rank++) {
		const struct nicfw_rule *r = &rules[order[rank]];
		union {
			struct acl4_rule r4;
			struct acl6_rule r6;
		} a;

		if (!rule_in_ctx(r, which))
			continue;
		memset(&a, 0, sizeof(a));
		if (v4)
			fill_v4(&a.r4, r, widen);
		else
			fill_v6(&a.r6, r, widen);
		a.r4.data.category_mask = 1;
		a.r4.data.priority = (int32_t)(n - rank);
		a.r4.data.userdata = order[rank] + 1;
		rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&a, 1);
	}
	if (rc == 0) {
		cfg.num_categories = 1;
		cfg.num_fields = num_fields;
		memcpy(cfg.defs, v4 ? v4_defs : v6_defs, sizeof(cfg.defs[0]) * num_fields);
		rc = rte_acl_build(ctx, &cfg);
	}
	if (rc != 0) {
		snprintf(err, errlen, "rte_acl %s context build failed: %s", v4 ? "IPv4" : "IPv6",
			 strerror(-rc));
		rte_acl_free(ctx);
		return NULL;
	}
	return ctx;
}

static size_t
heap_allocated(void)
{
	size_t total = 0;

	for (unsigned int i = 0; i < rte_socket_count(); i++) {
		struct rte_malloc_socket_stats st;

		if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(i), &st) == 0)
			total += st.heap_allocsz_bytes;
	}
	return total;
}

static void acl_free(void *c);
static void acl_pick_best_alg(struct acl_classifier *ac);

static void *
acl_build(const struct nicfw_rule *rules, uint32_t n, uint32_t flags, char *err, size_t errlen)
{
	struct acl_classifier *ac = calloc(1, sizeof(*ac));
	uint32_t *order = rules_priority_order(rules, n);
	size_t heap0 = heap_allocated();
	bool any_frag_allow = false;

	if (ac == NULL || order == NULL) {
		snprintf(err, errlen, "out of memory");
		free(ac);
		free(order);
		return NULL;
	}
	/* Fragments can only be allowed by an allow rule with both port ranges wildcarded. */
	for (uint32_t i = 0; i < n && !(flags & NICFW_BUILD_NO_FRAG); i++)
		any_frag_allow |= rules[i].action == NICFW_ACT_ALLOW && rule_ports_wildcard(&rules[i]);

	for (int w = 0; w < CTX_MAX; w++) {
		if (w >= CTX_V4_FRAG && !any_frag_allow)
			continue;
		err[0] = '\0';
		ac->ctx[w] = build_one(rules, order, n, w, err, errlen);
		if (ac->ctx[w] == NULL && err[0] != '\0') {
			acl_free(ac);
			free(order);
			return NULL;
		}
	}
	free(order);
	size_t heap1 = heap_allocated();
	ac->memory = heap1 > heap0 ? heap1 - heap0 : 0;
	ac->alg = RTE_ACL_CLASSIFY_DEFAULT;
	acl_pick_best_alg(ac);
	return ac;
}

#define ACL_CHUNK 256

static void
acl_classify(void *c, const struct nicfw_key *const keys[], uint32_t *results, uint32_t n)
{
	struct acl_classifier *ac = c;

	for (uint32_t off = 0; off < n; off += ACL_CHUNK) {
		uint32_t m = RTE_MIN((uint32_t)ACL_CHUNK, n - off);
		const uint8_t *data[CTX_MAX][ACL_CHUNK];
		uint32_t idx[CTX_MAX][ACL_CHUNK], res[ACL_CHUNK], cnt[CTX_MAX] = {0};

		for (uint32_t i = 0; i < m; i++) {
			const struct nicfw_key *k = keys[off + i];
			int g = ((k->flags & NICFW_KEY_V4) ? CTX_V4 : CTX_V6) +
				((k->flags & NICFW_KEY_FRAG) ? CTX_V4_FRAG : 0);

			data[g][cnt[g]] = (const uint8_t *)k;
			idx[g][cnt[g]++] = i;
		}
		for (int g = 0; g < CTX_MAX; g++) {
			if (cnt[g] == 0)
				continue;
			if (ac->ctx[g] == NULL) {
				for (uint32_t j = 0; j < cnt[g]; j++)
					results[off + idx[g][j]] = 0;
				continue;
			}
			/* The common case (one family, no fragments) writes results in place. */
			if (cnt[g] == m) {
				rte_acl_classify(ac->ctx[g], data[g], results + off, m, 1);
				break;
			}
			rte_acl_classify(ac->ctx[g], data[g], res, cnt[g], 1);
			for (uint32_t j = 0; j < cnt[g]; j++)
				results[off + idx[g][j]] = res[j];
		}
	}
}

static void
acl_free(void *c)
{
	struct acl_classifier *ac = c;

	if (ac == NULL)
		return;
	for (int w = 0; w < CTX_MAX; w++)
		rte_acl_free(ac->ctx[w]);
	free(ac);
}

static size_t
acl_memory(const void *c)
{
	return ((const struct acl_classifier *)c)->memory;
}

int
acl_set_alg(void *c, int alg)
{
	struct acl_classifier *ac = c;

	for (int w = 0; w < CTX_MAX; w++) {
		if (ac->ctx[w] == NULL)
			continue;
		int rc = rte_acl_set_ctx_classify(ac->ctx[w], (enum rte_acl_classify_alg)alg);
		if (rc != 0)
			return rc;
	}
	ac->alg = alg;
	return 0;
}

int
acl_get_alg(const void *c)
{
	return ((const struct acl_classifier *)c)->alg;
}

/* rte_acl's own default is the first of these the CPU and the EAL's max SIMD width allow; pick
 * it explicitly so that the benchmark can say which one ran. */
static void
acl_pick_best_alg(struct acl_classifier *ac)
{
	static const int best[] = {RTE_ACL_CLASSIFY_AVX512X32, RTE_ACL_CLASSIFY_AVX512X16,
				   RTE_ACL_CLASSIFY_AVX2, RTE_ACL_CLASSIFY_SSE,
				   RTE_ACL_CLASSIFY_SCALAR};

	for (unsigned int i = 0; i < RTE_DIM(best); i++)
		if (acl_set_alg(ac, best[i]) == 0)
			return;
}

const char *
acl_alg_name(int alg)
{
	switch (alg) {
	case RTE_ACL_CLASSIFY_DEFAULT:
		return "default";
	case RTE_ACL_CLASSIFY_SCALAR:
		return "scalar";
	case RTE_ACL_CLASSIFY_SSE:
		return "sse";
	case RTE_ACL_CLASSIFY_AVX2:
		return "avx2";
	case RTE_ACL_CLASSIFY_AVX512X16:
		return "avx512x16";
	case RTE_ACL_CLASSIFY_AVX512X32:
		return "avx512x32";
	default:
		return "unknown";
	}
}

const struct nicfw_classifier_ops nicfw_acl_ops = {
	.name = "rte_acl",
	.build = acl_build,
	.classify = acl_classify,
	.free = acl_free,
	.memory = acl_memory,
};
