/* SPDX-License-Identifier: Apache-2.0
 * nicfw-fastpath: the firewall service fast path.
 *
 *   nicfw-fastpath <EAL args> -- --ctrl PATH [options]        service mode
 *   nicfw-fastpath <EAL args> -- --bench --rules F --trace F   classification benchmark
 *
 * Service mode attaches to the service port (one vdev: net_af_packet, net_tap, net_pcap, ...),
 * runs the datapath on the first worker lcore (or the main one) and the control channel on a
 * control thread. See dpdk_app/README.md.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "bench.h"
#include "ctrl.h"
#include "datapath.h"

#define NB_MBUF 4095
#define MBUF_CACHE 256
#define NB_RXD 1024
#define NB_TXD 1024

static uint64_t wall_base_ns, wall_base_tsc;
static double ns_per_tsc;

uint64_t
nicfw_wall_ns(uint64_t tsc)
{
	return wall_base_ns + (uint64_t)((double)(tsc - wall_base_tsc) * ns_per_tsc);
}

static void
time_init(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	wall_base_tsc = rte_rdtsc();
	wall_base_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	ns_per_tsc = 1e9 / (double)rte_get_tsc_hz();
}

static void
signal_handler(int signum)
{
	(void)signum;
	force_quit = true;
}

static void
usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s <EAL args> -- --ctrl PATH [options]\n"
		"       %s <EAL args> -- --bench --rules FILE --trace FILE [bench options]\n"
		"       %s <EAL args> -- --bench-fastpath [--flows N] [--packets N] ...\n"
		"options:\n"
		"  --ctrl PATH             control channel UNIX socket (required)\n"
		"  --port N                service port id (default 0); --no-port: none\n"
		"  --wait-rules            do not poll the port before the first LOAD_RULES\n"
		"  --no-tcp-pickup         drop non-SYN TCP segments of untracked connections\n"
		"  --no-drop-records       emit flow records for allowed connections only\n"
		"  --idle-sleep-us N       sleep after 64 idle polls (default 100; x10 after 4096;\n"
		"                          0 = busy poll)\n"
		"  --reject-rate N         reject responses per second at most (default 1000)\n"
		"  --max-flows N           connection table size (default 65536)\n"
		"  --max-identities N      identity table size (default 16384)\n"
		"  --tcp-syn-timeout S     handshake (default 60)\n"
		"  --tcp-est-timeout S     established (default 7440: TCP keepalive's 2 h + margin)\n"
		"  --tcp-close-timeout S   FIN/RST seen (default 30)\n"
		"  --udp-timeout S         (default 60)  --icmp-timeout S (default 30)\n"
		"  --other-timeout S       other protocols (default 60)\n",
		prog, prog, prog);
}

enum {
	OPT_CTRL = 256, OPT_PORT, OPT_NO_PORT, OPT_WAIT_RULES, OPT_NO_PICKUP, OPT_NO_DROP_REC,
	OPT_IDLE, OPT_REJECT_RATE, OPT_MAX_FLOWS, OPT_MAX_IDS, OPT_TO_SYN, OPT_TO_EST,
	OPT_TO_CLOSE, OPT_TO_UDP, OPT_TO_ICMP, OPT_TO_OTHER, OPT_HELP,
};

static int
parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int
parse_args(int argc, char **argv, struct dp_config *cfg, const char **ctrl_path)
{
	static const struct option opts[] = {
		{"ctrl", required_argument, NULL, OPT_CTRL},
		{"port", required_argument, NULL, OPT_PORT},
		{"no-port", no_argument, NULL, OPT_NO_PORT},
		{"wait-rules", no_argument, NULL, OPT_WAIT_RULES},
		{"no-tcp-pickup", no_argument, NULL, OPT_NO_PICKUP},
		{"no-drop-records", no_argument, NULL, OPT_NO_DROP_REC},
		{"idle-sleep-us", required_argument, NULL, OPT_IDLE},
		{"reject-rate", required_argument, NULL, OPT_REJECT_RATE},
		{"max-flows", required_argument, NULL, OPT_MAX_FLOWS},
		{"max-identities", required_argument, NULL, OPT_MAX_IDS},
		{"tcp-syn-timeout", required_argument, NULL, OPT_TO_SYN},
		{"tcp-est-timeout", required_argument, NULL, OPT_TO_EST},
		{"tcp-close-timeout", required_argument, NULL, OPT_TO_CLOSE},
		{"udp-timeout", required_argument, NULL, OPT_TO_UDP},
		{"icmp-timeout", required_argument, NULL, OPT_TO_ICMP},
		{"other-timeout", required_argument, NULL, OPT_TO_OTHER},
		{"help", no_argument, NULL, OPT_HELP},
		{NULL, 0, NULL, 0},
	};
	uint32_t port = 0;
	int opt;

	cfg->has_port = true;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int bad = 0;
		switch (opt) {
		case OPT_CTRL: *ctrl_path = optarg; break;
		case OPT_PORT: bad = parse_u32(optarg, 0, RTE_MAX_ETHPORTS - 1, &port); break;
		case OPT_NO_PORT: cfg->has_port = false; break;
		case OPT_WAIT_RULES: cfg->wait_rules = true; break;
		case OPT_NO_PICKUP: cfg->tcp_pickup = false; break;
		case OPT_NO_DROP_REC: cfg->drop_records = false; break;
		case OPT_IDLE: bad = parse_u32(optarg, 0, 1000000, &cfg->idle_sleep_us); break;
		case OPT_REJECT_RATE: bad = parse_u32(optarg, 0, 10000000, &cfg->reject_rate); break;
		case OPT_MAX_FLOWS: bad = parse_u32(optarg, 64, 1u << 26, &cfg->max_flows); break;
		case OPT_MAX_IDS: bad = parse_u32(optarg, 64, 1u << 24, &cfg->max_identities); break;
		case OPT_TO_SYN: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.tcp_syn); break;
		case OPT_TO_EST: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.tcp_est); break;
		case OPT_TO_CLOSE: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.tcp_close); break;
		case OPT_TO_UDP: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.udp); break;
		case OPT_TO_ICMP: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.icmp); break;
		case OPT_TO_OTHER: bad = parse_u32(optarg, 1, 1u << 22, &cfg->timeouts.other); break;
		default: return -1;
		}
		if (bad) {
			fprintf(stderr, "invalid value for --%s: %s\n", opts[opt - OPT_CTRL].name,
				optarg);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	if (*ctrl_path == NULL) {
		fprintf(stderr, "--ctrl PATH is required\n");
		return -1;
	}
	cfg->port_id = (uint16_t)port;
	return 0;
}

static int
port_init(uint16_t port, struct rte_mempool *pool)
{
	struct rte_eth_conf conf = {0};
	struct rte_eth_dev_info info;
	uint16_t nb_rxd = NB_RXD, nb_txd = NB_TXD;
	int socket = rte_eth_dev_socket_id(port), rc;

	if (!rte_eth_dev_is_valid_port(port))
		return -ENODEV;
	rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
	if ((rc = rte_eth_dev_configure(port, 1, 1, &conf)) != 0 ||
	    (rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd)) != 0 ||
	    (rc = rte_eth_rx_queue_setup(port, 0, nb_rxd, socket < 0 ? 0 : (unsigned)socket,
					 NULL, pool)) != 0 ||
	    (rc = rte_eth_tx_queue_setup(port, 0, nb_txd, socket < 0 ? 0 : (unsigned)socket,
					 NULL)) != 0 ||
	    (rc = rte_eth_dev_start(port)) != 0)
		return rc;
	/* The service port carries frames addressed to the pipeline's MACs, not ours. */
	rte_eth_promiscuous_enable(port);
	return 0;
}

static int
service_main(int argc, char **argv)
{
	struct dp_config cfg = {
		.tcp_pickup = true,
		.drop_records = true,
		.idle_sleep_us = 100,
		.reject_rate = 1000,
		.max_flows = 65536,
		.max_identities = 16384,
		.timeouts = {.tcp_syn = 60, .tcp_est = 7440, .tcp_close = 30, .udp = 60,
			     .icmp = 30, .other = 60},
	};
	static struct datapath dp;
	struct rte_mempool *pool = NULL;
	const char *ctrl_path = NULL;
	int rc;

	if (parse_args(argc, argv, &cfg, &ctrl_path) < 0) {
		usage(argv[0]);
		return 2;
	}
	if (cfg.has_port && !rte_eth_dev_is_valid_port(cfg.port_id)) {
		fprintf(stderr, "port %u does not exist (%u ports; give a --vdev or --no-port)\n",
			cfg.port_id, rte_eth_dev_count_avail());
		return 1;
	}
	if (cfg.has_port) {
		pool = rte_pktmbuf_pool_create("nicfw_mbuf", NB_MBUF, MBUF_CACHE, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
		if (pool == NULL) {
			fprintf(stderr, "mbuf pool: %s\n", rte_strerror(rte_errno));
			return 1;
		}
		rc = port_init(cfg.port_id, pool);
		if (rc != 0) {
			fprintf(stderr, "port %u setup failed: %s\n", cfg.port_id, strerror(-rc));
			return 1;
		}
	}
	rc = dp_init(&dp, &cfg, pool);
	if (rc < 0) {
		fprintf(stderr, "datapath init failed: %s\n", strerror(-rc));
		return 1;
	}
	dp.lcore_id = rte_get_next_lcore(-1, 1, 0);
	if (dp.lcore_id >= RTE_MAX_LCORE)
		dp.lcore_id = rte_get_main_lcore();
	rc = ctrl_start(ctrl_path, &dp);
	if (rc < 0) {
		fprintf(stderr, "control channel %s: %s\n", ctrl_path, strerror(-rc));
		dp_free(&dp);
		return 1;
	}
	printf("nicfw-fastpath: ready ctrl=%s port=%d lcore=%u\n", ctrl_path,
	       cfg.has_port ? cfg.port_id : -1, dp.lcore_id);
	fflush(stdout);

	rte_eal_mp_remote_launch(dp_main_loop, &dp, CALL_MAIN);
	rte_eal_mp_wait_lcore();

	ctrl_stop();
	if (cfg.has_port) {
		rte_eth_dev_stop(cfg.port_id);
		rte_eth_dev_close(cfg.port_id);
	}
	RTE_LOG(INFO, NICFW, "exiting: rx %lu tx %lu allowed %lu dropped %lu\n", dp.stats.rx,
		dp.stats.tx, dp.stats.allowed, dp.stats.dropped);
	dp_free(&dp);
	return 0;
}

int
main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv), rc;
	bool bench = false, bench_fp = false;

	if (ret < 0) {
		fprintf(stderr, "EAL initialization failed: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	argc -= ret;
	argv += ret;
	argv[0] = (char *)"nicfw-fastpath";
	time_init();
	signal(SIGINT, signal_handler);
	signal(SIGTERM, signal_handler);
	for (int i = 1; i < argc; i++) {
		bench |= strcmp(argv[i], "--bench") == 0;
		bench_fp |= strcmp(argv[i], "--bench-fastpath") == 0;
	}
	if (bench_fp)
		rc = bench_fastpath_main(argc, argv);
	else
		rc = bench ? bench_main(argc, argv) : service_main(argc, argv);
	rte_eal_cleanup();
	return rc;
}
