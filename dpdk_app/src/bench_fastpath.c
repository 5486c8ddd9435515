/* SPDX-License-Identifier: Apache-2.0
 * Bench mode of the established-flow path (conntrack hit), the datapath only:
 *
 *   nicfw-fastpath <EAL args> -- --bench-fastpath [--flows N] [--packets N] [--burst N]
 *                                 [--min-time S] [--repeat N]
 *
 * Builds `packets` service-encapsulated IPv4 TCP ACK segments of `flows` connections (both
 * directions alternate), loads a two-rule set (allow TCP to port 80, drop the rest), runs one
 * pass so every connection is tracked (TCP pickup: ESTABLISHED), then times passes of
 * dp_process_burst() over the same mbufs: parse, identity lookup, rte_acl classify, conntrack
 * lookup and state update, rule id rewrite. No PMD, no copies: each mbuf's reference count is
 * raised before a burst and dropped after it, which is the only cost added to the datapath's.
 * Prints one JSON line: mpps (median pass), mpps_best, ns_per_packet, ct_hit, flows.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_version.h>

#include "bench.h"
#include "datapath.h"

#define MAX_PASSES 1000

static double
wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Frame i: connection i % flows, client -> server on even rounds, server -> client on odd. */
static void
build_frame(struct rte_mbuf *m, uint32_t i, uint32_t flows)
{
	uint32_t f = i % flows, reply = (i / flows) & 1;
	uint16_t len = RTE_ETHER_HDR_LEN + NICFW_SERVICE_HDR_LEN + RTE_ETHER_HDR_LEN +
		       sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_tcp_hdr);
	uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, len);
	struct rte_ether_hdr *outer = (struct rte_ether_hdr *)p;
	struct nicfw_service_hdr *svc = (struct nicfw_service_hdr *)(outer + 1);
	struct rte_ether_hdr *inner = (struct rte_ether_hdr *)(svc + 1);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(inner + 1);
	struct rte_tcp_hdr *tcp = (struct rte_tcp_hdr *)(ip + 1);
	uint32_t client = RTE_IPV4(10, 1, (f >> 8) & 0xff, f & 0xff);
	uint32_t server = RTE_IPV4(10, 2, 0, 1);
	uint16_t cport = (uint16_t)(10000 + (f >> 16)), sport = 80;

	memset(p, 0, len);
	outer->ether_type = rte_cpu_to_be_16(NICFW_SERVICE_ETHERTYPE);
	svc->ingress_port = rte_cpu_to_be_16(1);
	svc->egress_port = rte_cpu_to_be_16(2);
	svc->reason = NICFW_REASON_MISS;
	inner->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16(sizeof(*ip) + sizeof(*tcp));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_TCP;
	ip->src_addr = rte_cpu_to_be_32(reply ? server : client);
	ip->dst_addr = rte_cpu_to_be_32(reply ? client : server);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	tcp->src_port = rte_cpu_to_be_16(reply ? sport : cport);
	tcp->dst_port = rte_cpu_to_be_16(reply ? cport : sport);
	tcp->data_off = 5 << 4;
	tcp->tcp_flags = RTE_TCP_ACK_FLAG;
	tcp->rx_win = rte_cpu_to_be_16(65535);
}

/* One pass over every packet, in bursts; returns the packets forwarded. */
static uint64_t
run_pass(struct datapath *dp, struct rte_mbuf **pkts, uint32_t n, uint16_t burst)
{
	struct rte_mbuf *in[MAX_PKT_BURST], *tx[2 * MAX_PKT_BURST];
	uint64_t fwd = 0, now = rte_rdtsc();

	for (uint32_t i = 0; i < n; i += burst) {
		uint16_t b = (uint16_t)RTE_MIN((uint32_t)burst, n - i);

		for (uint16_t j = 0; j < b; j++) {
			in[j] = pkts[i + j];
			rte_mbuf_refcnt_update(in[j], 1); /* the datapath frees or forwards it */
		}
		uint16_t ntx = dp_process_burst(dp, in, b, tx, now);
		fwd += ntx;
		for (uint16_t j = 0; j < ntx; j++)
			rte_pktmbuf_free(tx[j]);
	}
	return fwd;
}

int
bench_fastpath_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"bench-fastpath", no_argument, NULL, 'B'}, {"flows", required_argument, NULL, 'f'},
		{"packets", required_argument, NULL, 'p'},  {"burst", required_argument, NULL, 'b'},
		{"min-time", required_argument, NULL, 't'}, {"repeat", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0}};
	uint32_t flows = 10000, n = 0, repeat = 5;
	unsigned long burst = MAX_PKT_BURST;
	double min_time = 0.5, passes[MAX_PASSES];
	int c, npass = 0, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'B': break;
		case 'f': flows = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'p': n = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'b': burst = strtoul(optarg, NULL, 0); break;
		case 't': min_time = atof(optarg); break;
		case 'r': repeat = (uint32_t)strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: --bench-fastpath [--flows N] [--packets N] "
					"[--burst 1..%d] [--min-time S] [--repeat N]\n",
				MAX_PKT_BURST);
			return 2;
		}
	}
	if (n == 0)
		n = flows * 4;
	if (flows == 0 || flows > (1u << 22) || n < flows || n > (1u << 24) || burst == 0 ||
	    burst > MAX_PKT_BURST || repeat == 0 || repeat > MAX_PASSES) {
		fprintf(stderr, "bench-fastpath: flows 1..4M, packets >= flows and <= 16M, "
				"burst 1..%d, repeat 1..%d\n",
			MAX_PKT_BURST, MAX_PASSES);
		return 2;
	}

	struct dp_config cfg = {.has_port = false, .tcp_pickup = true, .drop_records = true,
				.reject_rate = 0, .max_flows = flows * 2, .max_identities = 1024,
				.timeouts = {60, 7440, 30, 60, 30, 60}};
	struct rte_mempool *pool = rte_pktmbuf_pool_create("nicfw_bench_fp", n + 1024, 256, 0,
							   RTE_MBUF_DEFAULT_BUF_SIZE,
							   (int)rte_socket_id());
	struct rte_mbuf **pkts = calloc(n, sizeof(*pkts));
	static struct datapath dp;
	struct nicfw_rule rules[2];
	char err[256] = "";

	if (pool == NULL || pkts == NULL || dp_init(&dp, &cfg, pool) < 0) {
		fprintf(stderr, "bench-fastpath: out of memory (EAL -m?)\n");
		free(pkts);
		return 1;
	}
	memset(rules, 0, sizeof(rules));
	rules[0] = (struct nicfw_rule){.rule_id = 10, .priority = 2, .proto = IPPROTO_TCP,
				       .proto_mask = 0xff, .sport_hi = 65535, .dport_lo = 80,
				       .dport_hi = 80, .action = NICFW_ACT_ALLOW};
	rules[1] = (struct nicfw_rule){.rule_id = 11, .priority = 1, .sport_hi = 65535,
				       .dport_hi = 65535, .action = NICFW_ACT_DROP};
	dp.rs = ruleset_build(&nicfw_acl_ops, rules, 2, 0, err, sizeof(err));
	if (dp.rs == NULL) {
		fprintf(stderr, "bench-fastpath: %s\n", err);
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		pkts[i] = rte_pktmbuf_alloc(pool);
		if (pkts[i] == NULL) {
			fprintf(stderr, "bench-fastpath: mbuf pool exhausted\n");
			goto out;
		}
		build_frame(pkts[i], i, flows);
	}
	/* The first pass picks every connection up; the records are not read: drop them. */
	run_pass(&dp, pkts, n, (uint16_t)burst);
	rte_ring_reset(dp.rec_ring);
	uint64_t hits0 = dp.stats.ct_hit, fwd = 0;
	double start = wall_s();
	while (npass < MAX_PASSES && ((uint32_t)npass < repeat || wall_s() - start < min_time)) {
		double t0 = wall_s();
		fwd += run_pass(&dp, pkts, n, (uint16_t)burst);
		passes[npass++] = n / (wall_s() - t0) / 1e6;
	}
	qsort(passes, (size_t)npass, sizeof(double), cmp_double);
	uint64_t hits = dp.stats.ct_hit - hits0, total = (uint64_t)n * (uint64_t)npass;
	printf("{\"backend\":\"dpdk\",\"dpdk\":\"%s\",\"flows\":%u,\"tracked\":%u,\"packets\":%u,"
	       "\"burst\":%lu,\"passes\":%d,\"mpps\":%.3f,\"mpps_best\":%.3f,"
	       "\"ns_per_packet\":%.1f,\"ct_hit\":%lu,\"forwarded\":%lu,\"total\":%lu}\n",
	       rte_version(), flows, dp.ct.count, n, burst, npass, passes[npass / 2],
	       passes[npass - 1], 1e3 / passes[npass / 2], hits, fwd, total);
	rc = hits == total && fwd == total ? 0 : 3;
	if (rc != 0)
		fprintf(stderr, "bench-fastpath: %lu of %lu packets hit a tracked connection, %lu "
				"forwarded\n",
			hits, total, fwd);
out:
	for (uint32_t i = 0; i < n; i++)
		rte_pktmbuf_free(pkts[i]);
	free(pkts);
	ruleset_free(dp.rs);
	dp.rs = NULL;
	dp_free(&dp);
	rte_mempool_free(pool);
	return rc;
}
