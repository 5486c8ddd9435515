/* SPDX-License-Identifier: Apache-2.0
 * Bench mode: the classification figures of the fast path on one core, as one JSON line.
 *
 *   nicfw-fastpath --no-huge --no-pci -- --bench --rules FILE --trace FILE [--repeat N]
 *       [--alg best|all|scalar|sse|avx2|avx512x16|avx512x32] [--burst N] [--verify-linear]
 *       [--ct] [--resim N]
 *
 * The rule set is built exactly as LOAD_RULES builds it (ruleset.c + classify_acl.c, one
 * category) and the trace is classified through the same ruleset_classify() the datapath calls,
 * in bursts. rte_acl has no incremental update, so the cost of one rule insert or delete is a
 * full rebuild: both are timed (rule N/2 removed, then put back).
 * AVX-512 classify methods need the EAL option --force-max-simd-bitwidth=512.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_version.h>

#include "bench.h"
#include "classify.h"
#include "datapath.h"

#define MAX_EXAMPLES 10
#define MAX_PASSES 1000

struct bench_opts {
	const char *rules, *trace, *alg;
	uint32_t repeat, burst, resim;
	double min_time;
	bool verify_linear, ct;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
alg_by_name(const char *name)
{
	static const int algs[] = {RTE_ACL_CLASSIFY_SCALAR, RTE_ACL_CLASSIFY_SSE,
				   RTE_ACL_CLASSIFY_AVX2, RTE_ACL_CLASSIFY_AVX512X16,
				   RTE_ACL_CLASSIFY_AVX512X32};

	for (unsigned int i = 0; i < RTE_DIM(algs); i++)
		if (strcmp(name, acl_alg_name(algs[i])) == 0)
			return algs[i];
	return -1;
}

struct rate {
	double median, best;
	uint32_t passes;
};

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Classify the whole trace after one warm-up pass, at least `repeat` times and for at least
 * min_time seconds (small traces are over in microseconds); Mpps of the median and best pass. */
static struct rate
classify_mpps(const struct nicfw_ruleset *rs, const struct nicfw_key *const *kp, uint32_t *res,
	      uint32_t n, const struct bench_opts *o)
{
	static double mpps[MAX_PASSES];
	struct rate r = {0, 0, 0};
	double spent = 0;

	for (uint32_t pass = 0; pass <= MAX_PASSES; pass++) {
		double t0 = now_s();
		for (uint32_t i = 0; i < n; i += o->burst)
			ruleset_classify(rs, kp + i, res + i, RTE_MIN(o->burst, n - i));
		double dt = now_s() - t0;
		if (pass == 0)
			continue; /* warm-up: caches, page faults */
		mpps[r.passes++] = dt > 0 ? n / dt / 1e6 : 0;
		spent += dt;
		if (r.passes >= o->repeat && spent >= o->min_time)
			break;
	}
	qsort(mpps, r.passes, sizeof(mpps[0]), cmp_double);
	r.median = r.passes ? mpps[r.passes / 2] : 0;
	r.best = r.passes ? mpps[r.passes - 1] : 0;
	return r;
}

static double
rebuild_s(const struct nicfw_rule *rules, uint32_t n, char *err, size_t errlen, double *del_out,
	  double *ins_out)
{
	struct nicfw_rule *less = malloc(sizeof(*less) * (n ? n : 1));
	double t0, del_s, ins_s;
	struct nicfw_ruleset *rs;

	if (less == NULL || n < 2) {
		free(less);
		return -1;
	}
	/* Delete: the set without its middle rule. Insert: the full set again. */
	memcpy(less, rules, sizeof(*less) * (n / 2));
	memcpy(less + n / 2, rules + n / 2 + 1, sizeof(*less) * (n - n / 2 - 1));
	t0 = now_s();
	rs = ruleset_build(&nicfw_acl_ops, less, n - 1, NICFW_BUILD_NO_FRAG, err, errlen);
	del_s = now_s() - t0;
	ruleset_free(rs);
	free(less);
	t0 = now_s();
	rs = ruleset_build(&nicfw_acl_ops, rules, n, NICFW_BUILD_NO_FRAG, err, errlen);
	ins_s = now_s() - t0;
	ruleset_free(rs);
	*del_out = del_s;
	*ins_out = ins_s;
	return (del_s + ins_s) / 2;
}

/* Flow-cache hit path: conntrack key + lookup + state update per packet. */
static double
ct_bench(const struct nicfw_key *keys, uint32_t n, uint32_t repeat, uint32_t *flows)
{
	struct ct_timeouts to = {60, 7440, 30, 60, 30, 60};
	struct conntrack ct;
	struct nicfw_pkt pi;
	double best = 0;
	uint64_t now = rte_rdtsc();

	if (ct_init(&ct, "nicfw_bench_ct", n < 64 ? 64 : n, &to) < 0)
		return -1;
	memset(&pi, 0, sizeof(pi));
	pi.tcp_flags = 0x10;
	for (uint32_t i = 0; i < n; i++) {
		struct ct_key ck;
		uint8_t b;
		ct_make_key(&keys[i], &ck, &b);
		pi.key = keys[i];
		if (ct_lookup(&ct, &ck, NULL) == NULL)
			ct_create(&ct, &ck, b, &pi, 1, now);
	}
	*flows = ct.count;
	for (uint32_t r = 0; r < repeat; r++) {
		double t0 = now_s();
		for (uint32_t i = 0; i < n; i++) {
			struct ct_key ck;
			uint8_t b;
			ct_make_key(&keys[i], &ck, &b);
			struct ct_entry *e = ct_lookup(&ct, &ck, NULL);
			if (e != NULL)
				ct_update(&ct, e, b, &pi, 64, now);
		}
		double dt = now_s() - t0;
		if (dt > 0 && n / dt / 1e6 > best)
			best = n / dt / 1e6;
	}
	ct_free(&ct);
	return best;
}

/* Resimulation of `flows` tracked connections against the rule set with every other rule
 * turned into a drop; returns seconds, fills the number removed. */
static double
resim_bench(const struct nicfw_rule *rules, uint32_t nr, const struct nicfw_key *keys, uint32_t n,
	    uint32_t flows, uint32_t *tracked, uint32_t *removed, char *err, size_t errlen)
{
	struct dp_config cfg = {.max_flows = flows < 64 ? 64 : flows, .max_identities = 64,
				.timeouts = {60, 7440, 30, 60, 30, 60}};
	struct nicfw_rule *alt = malloc(sizeof(*alt) * (nr ? nr : 1));
	struct dp_cmd cmd = {.type = CMD_RESIMULATE};
	static struct datapath dp;
	struct nicfw_pkt pi;
	uint64_t now = rte_rdtsc();

	if (alt == NULL || n == 0 || dp_init(&dp, &cfg, NULL) < 0) {
		free(alt);
		return -1;
	}
	for (uint32_t i = 0; i < nr; i++) {
		alt[i] = rules[i];
		alt[i].action = (i % 2) ? NICFW_ACT_DROP : NICFW_ACT_ALLOW;
	}
	dp.rs = ruleset_build(&nicfw_acl_ops, alt, nr, NICFW_BUILD_NO_FRAG, err, errlen);
	free(alt);
	memset(&pi, 0, sizeof(pi));
	pi.tcp_flags = 0x02;
	/* Distinct connections: trace headers with the source port stepped per round. */
	for (uint32_t i = 0; i < flows * 2 && dp.ct.count < flows; i++) {
		struct ct_key ck;
		uint8_t b;

		pi.key = keys[i % n];
		pi.key.sport = rte_cpu_to_be_16(
			(uint16_t)(rte_be_to_cpu_16(pi.key.sport) + i / n));
		ct_make_key(&pi.key, &ck, &b);
		if (ct_lookup(&dp.ct, &ck, NULL) == NULL)
			ct_create(&dp.ct, &ck, b, &pi, 1, now);
	}
	*tracked = dp.ct.count;
	double t0 = now_s();
	dp_execute(&dp, &cmd);
	double dt = now_s() - t0;
	*removed = cmd.n_recs;
	free(cmd.recs);
	dp_free(&dp);
	return dt;
}

static int
parse_opts(int argc, char **argv, struct bench_opts *o)
{
	static const struct option opts[] = {
		{"bench", no_argument, NULL, 'b'},	{"rules", required_argument, NULL, 'r'},
		{"trace", required_argument, NULL, 't'},	{"repeat", required_argument, NULL, 'n'},
		{"alg", required_argument, NULL, 'a'},	{"burst", required_argument, NULL, 'u'},
		{"verify-linear", no_argument, NULL, 'l'}, {"ct", no_argument, NULL, 'c'},
		{"resim", required_argument, NULL, 's'},	{"min-time", required_argument, NULL, 'm'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'b': break;
		case 'r': o->rules = optarg; break;
		case 't': o->trace = optarg; break;
		case 'a': o->alg = optarg; break;
		case 'n': o->repeat = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'u': o->burst = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'l': o->verify_linear = true; break;
		case 'c': o->ct = true; break;
		case 's': o->resim = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'm': o->min_time = strtod(optarg, NULL); break;
		default: return -1;
		}
	}
	if (o->rules == NULL || o->trace == NULL || o->repeat == 0 || o->repeat > 1000 ||
	    o->burst == 0 || o->burst > 4096 || o->min_time < 0 || o->min_time > 60 ||
	    optind < argc) {
		fprintf(stderr, "usage: --bench --rules FILE --trace FILE [--repeat 1..1000] "
				"[--alg best|all|NAME] [--burst 1..4096] [--verify-linear] [--ct] "
				"[--resim FLOWS] [--min-time S]\n");
		return -1;
	}
	return 0;
}

int
bench_main(int argc, char **argv)
{
	struct bench_opts o = {.alg = "best", .repeat = 3, .burst = 64, .min_time = 0.2};
	struct nicfw_rule *rules = NULL;
	struct nicfw_key *keys = NULL;
	const struct nicfw_key **kp = NULL;
	int64_t *expected = NULL;
	uint32_t *res = NULL, nr = 0, n = 0, mismatches = 0;
	struct nicfw_ruleset *rs = NULL;
	bool has_expected;
	char err[512] = "";
	double t0, build_s;
	struct rate best = {0, 0, 0};
	int best_alg, rc = 1;

	if (parse_opts(argc, argv, &o) < 0)
		return 2;
	if (classbench_read_rules(o.rules, &rules, &nr, err, sizeof(err)) < 0 ||
	    classbench_read_trace(o.trace, &keys, &expected, &n, &has_expected, err,
				  sizeof(err)) < 0) {
		fprintf(stderr, "bench: %s\n", err);
		return 2;
	}
	kp = malloc(sizeof(*kp) * (n ? n : 1));
	res = calloc(n ? n : 1, sizeof(*res));
	if (kp == NULL || res == NULL)
		goto out;
	for (uint32_t i = 0; i < n; i++)
		kp[i] = &keys[i];

	t0 = now_s();
	rs = ruleset_build(&nicfw_acl_ops, rules, nr, NICFW_BUILD_NO_FRAG, err, sizeof(err));
	build_s = now_s() - t0;
	if (rs == NULL) {
		fprintf(stderr, "bench: %s\n", err);
		goto out;
	}
	best_alg = acl_get_alg(rs->ctx);

	printf("{\"backend\":\"dpdk\",\"classifier\":\"rte_acl\",\"dpdk\":\"%s\",", rte_version());
	printf("\"rules\":%u,\"packets\":%u,\"repeat\":%u,\"burst\":%u,\"categories\":1,", nr, n,
	       o.repeat, o.burst);
	printf("\"build_s\":%.6f,\"memory_bytes\":%zu,\"mpps_by_alg\":{", build_s, rs->memory);
	if (strcmp(o.alg, "all") == 0) {
		static const char *const names[] = {"scalar", "sse", "avx2", "avx512x16",
						    "avx512x32"};
		int first = 1;

		for (unsigned int i = 0; i < RTE_DIM(names); i++) {
			int alg = alg_by_name(names[i]);
			if (acl_set_alg(rs->ctx, alg) != 0)
				continue; /* not supported by this CPU or EAL SIMD width */
			struct rate r = classify_mpps(rs, kp, res, n, &o);
			printf("%s\"%s\":%.3f", first ? "" : ",", names[i], r.median);
			first = 0;
			if (r.median > best.median) {
				best = r;
				best_alg = alg;
			}
		}
		acl_set_alg(rs->ctx, best_alg);
		for (uint32_t i = 0; i < n; i += o.burst) /* the results verified below */
			ruleset_classify(rs, kp + i, res + i, RTE_MIN(o.burst, n - i));
	} else {
		if (strcmp(o.alg, "best") != 0) {
			best_alg = alg_by_name(o.alg);
			if (best_alg < 0 || acl_set_alg(rs->ctx, best_alg) != 0) {
				printf("}}\n");
				fprintf(stderr, "bench: classify method %s unknown or not supported "
						"here\n", o.alg);
				goto out;
			}
		}
		best = classify_mpps(rs, kp, res, n, &o);
		printf("\"%s\":%.3f", acl_alg_name(best_alg), best.median);
	}
	printf("},\"alg\":\"%s\",\"mpps\":%.3f,\"mpps_best\":%.3f,\"passes\":%u,",
	       acl_alg_name(best_alg), best.median, best.best, best.passes);

	/* Verify the last pass against the trace's expected column. */
	printf("\"mismatch_examples\":[");
	for (uint32_t i = 0; i < n && has_expected; i++) {
		int64_t got = res[i] ? (int64_t)res[i] - 1 : -1;
		if (got == expected[i])
			continue;
		if (mismatches < MAX_EXAMPLES)
			printf("%s{\"packet\":%u,\"expected\":%ld,\"got\":%ld}",
			       mismatches ? "," : "", i, expected[i], got);
		mismatches++;
	}
	printf("],\"mismatches\":%u,\"verified\":%s,", mismatches, has_expected ? "true" : "false");

	if (o.verify_linear) {
		struct nicfw_ruleset *lin =
			ruleset_build(&nicfw_linear_ops, rules, nr, 0, err, sizeof(err));
		uint32_t *lres = calloc(n ? n : 1, sizeof(*lres)), lm = 0;
		if (lin != NULL && lres != NULL) {
			ruleset_classify(lin, kp, lres, n);
			for (uint32_t i = 0; i < n; i++)
				lm += lres[i] != res[i];
			printf("\"linear_mismatches\":%u,", lm);
		}
		ruleset_free(lin);
		free(lres);
	}
	double del_s = 0, ins_s = 0, rb = rebuild_s(rules, nr, err, sizeof(err), &del_s, &ins_s);
	printf("\"rebuild_s\":%.6f,\"rebuild_delete_s\":%.6f,\"rebuild_insert_s\":%.6f,", rb,
	       del_s, ins_s);
	printf("\"delete_rate\":%.3f,\"insert_rate\":%.3f", del_s > 0 ? 1 / del_s : 0,
	       ins_s > 0 ? 1 / ins_s : 0);
	if (o.ct) {
		uint32_t flows = 0;
		double m = ct_bench(keys, n, o.repeat, &flows);
		printf(",\"ct_flows\":%u,\"ct_hit_mpps\":%.3f", flows, m);
	}
	if (o.resim > 0) {
		uint32_t tracked = 0, removed = 0;
		double s = resim_bench(rules, nr, keys, n, o.resim, &tracked, &removed, err,
				       sizeof(err));
		printf(",\"resim_flows\":%u,\"resim_removed\":%u,\"resim_s\":%.6f", tracked,
		       removed, s);
	}
	printf("}\n");
	rc = 0;
out:
	fflush(stdout);
	ruleset_free(rs);
	free(rules);
	free(keys);
	free(kp);
	free(expected);
	free(res);
	return rc;
}
