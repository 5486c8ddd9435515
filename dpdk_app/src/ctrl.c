/* SPDX-License-Identifier: Apache-2.0
 * The control channel (protocol in ctrl.h and dpdk_app/README.md).
 *
 * One control thread (not an lcore) serves every client with poll() and non-blocking sockets.
 * It never touches the datapath's tables: rule sets are built here, then handed over with a
 * command that the datapath executes between two bursts; identity and flow-table requests are
 * commands too. Flow records come back through an rte_ring that this thread drains to the
 * subscribers; a subscriber that stops reading stops the draining, so the ring fills up and the
 * datapath counts lost records instead of ever waiting.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <rte_lcore.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "ctrl.h"
#include "datapath.h"

#define CTRL_POLL_MS 1
#define MAX_CLIENTS 16
#define EVENT_BATCH 256
#define SUB_BACKLOG (1u << 20)  /* pending bytes at which record draining pauses */
#define OUT_MAX (512u << 20)    /* a client that lets more than this pile up is dropped */

struct client {
	int fd;
	bool subscriber;
	struct nicfw_msg_hdr hdr;
	uint32_t hdr_got;
	uint8_t *payload;
	uint32_t payload_got;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
};

static struct {
	int listen_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct datapath *dp;
	pthread_t thread;
	bool started;
	struct client cl[MAX_CLIENTS];
	/* The rule set last loaded (the datapath's copy is not read from here). */
	uint32_t n_rules;
	uint64_t generation, build_ns, memory, loads, load_errors;
} C = {.listen_fd = -1};

static void
client_close(struct client *c)
{
	close(c->fd);
	free(c->payload);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static int
client_flush(struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (w < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
		c->out_off += (size_t)w;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* Queue a message made of up to three parts; returns -1 when the client must be dropped. */
static int
queue_msg(struct client *c, uint32_t type, const void *a, size_t alen, const void *b, size_t blen,
	  const void *d, size_t dlen)
{
	struct nicfw_msg_hdr h = {type, (uint32_t)(alen + blen + dlen)};
	size_t need = c->out_len + sizeof(h) + h.length;

	if (need > OUT_MAX)
		return -1;
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *o = realloc(c->out, cap);
		if (o == NULL)
			return -1;
		c->out = o;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, &h, sizeof(h));
	c->out_len += sizeof(h);
	if (alen)
		memcpy(c->out + c->out_len, a, alen);
	c->out_len += alen;
	if (blen)
		memcpy(c->out + c->out_len, b, blen);
	c->out_len += blen;
	if (dlen)
		memcpy(c->out + c->out_len, d, dlen);
	c->out_len += dlen;
	return client_flush(c);
}

static int
reply(struct client *c, int32_t status, uint32_t count, const void *b, size_t blen, const void *d,
      size_t dlen)
{
	struct nicfw_reply_hdr rh = {status, count};

	return queue_msg(c, c->hdr.type | NICFW_MSG_REPLY, &rh, sizeof(rh), b, blen, d, dlen);
}

static int
reply_error(struct client *c, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	RTE_LOG(WARNING, NICFW, "ctrl: request %u failed: %s\n", c->hdr.type, msg);
	return reply(c, status < 0 ? status : -EINVAL, (uint32_t)n, msg, (size_t)n, NULL, 0);
}

/* A small JSON object writer over a fixed buffer. */
struct json {
	char buf[4096];
	size_t len;
};

static void
json_add(struct json *j, const char *fmt, ...)
{
	va_list ap;

	if (j->len >= sizeof(j->buf))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(j->buf + j->len, sizeof(j->buf) - j->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		j->len = RTE_MIN(j->len + (size_t)n, sizeof(j->buf) - 1);
}

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static int
do_stats(struct client *c)
{
	const struct dp_stats *s = &C.dp->stats;
	struct json j = {.len = 0};
	int subs = 0;

	for (int i = 0; i < MAX_CLIENTS; i++)
		subs += C.cl[i].fd >= 0 && C.cl[i].subscriber;
	json_add(&j, "{\"rx\":%lu,\"tx\":%lu,\"tx_fail\":%lu,\"allowed\":%lu,\"dropped\":%lu,",
		 LD(s->rx), LD(s->tx), LD(s->tx_fail), LD(s->allowed), LD(s->dropped));
	json_add(&j, "\"rejected\":%lu,\"reject_sent\":%lu,\"reject_suppressed\":%lu,",
		 LD(s->rejected), LD(s->reject_sent), LD(s->reject_suppressed));
	json_add(&j, "\"ct_hit\":%lu,\"ct_new\":%lu,\"ct_full\":%lu,\"ct_end\":%lu,", LD(s->ct_hit),
		 LD(s->ct_new), LD(s->ct_full), LD(s->ct_end));
	json_add(&j, "\"ct_expired\":%lu,\"ct_related\":%lu,", LD(s->ct_expired),
		 LD(s->ct_related));
	json_add(&j, "\"records\":%lu,\"records_lost\":%lu,\"commands\":%lu,", LD(s->records),
		 LD(s->records_lost), LD(s->commands));
	json_add(&j, "\"flows_active\":%u,\"flows_capacity\":%u,\"identities\":%u,",
		 LD(C.dp->ct.count), C.dp->ct.capacity, LD(C.dp->ident.count));
	json_add(&j, "\"records_pending\":%u,\"subscribers\":%d,", rte_ring_count(C.dp->rec_ring),
		 subs);
	json_add(&j, "\"rules\":%u,\"generation\":%lu,\"build_ns\":%lu,\"rules_memory\":%lu,",
		 C.n_rules, C.generation, C.build_ns, C.memory);
	json_add(&j, "\"loads\":%lu,\"load_errors\":%lu,\"drop\":{", C.loads, C.load_errors);
	for (int i = 0; i < DROP_MAX; i++)
		json_add(&j, "%s\"%s\":%lu", i ? "," : "", nicfw_drop_names[i], LD(s->drop[i]));
	json_add(&j, "}}");
	return reply(c, 0, (uint32_t)j.len, j.buf, j.len, NULL, 0);
}

static int
do_load_rules(struct client *c)
{
	uint32_t len = c->hdr.length, n = len / sizeof(struct nicfw_rule);
	struct dp_cmd cmd = {.type = CMD_SWAP_RULES};
	struct nicfw_ruleset *rs;
	char err[256] = "";
	int rc;

	if (len % sizeof(struct nicfw_rule) != 0) {
		C.load_errors++;
		return reply_error(c, -EINVAL, "LOAD_RULES length %u is not a multiple of %zu", len,
				   sizeof(struct nicfw_rule));
	}
	rs = ruleset_build(&nicfw_acl_ops, (const struct nicfw_rule *)c->payload, n, 0, err,
			   sizeof(err));
	if (rs == NULL) {
		C.load_errors++;
		return reply_error(c, -EINVAL, "%s", err);
	}
	cmd.in = rs;
	rc = dp_submit(C.dp, &cmd);
	if (rc < 0) {
		ruleset_free(rs);
		C.load_errors++;
		return reply_error(c, rc, "datapath did not take the rule set: %s", strerror(-rc));
	}
	ruleset_free(cmd.old);
	C.n_rules = n;
	C.generation = rs->generation;
	C.build_ns = rs->build_ns;
	C.memory = rs->memory;
	C.loads++;
	RTE_LOG(INFO, NICFW, "ctrl: loaded %u rules (generation %lu, %.3f ms)\n", n,
		rs->generation, rs->build_ns / 1e6);
	struct nicfw_load_reply lr = {rs->build_ns, rs->generation, rs->memory};
	return reply(c, 0, n, &lr, sizeof(lr), NULL, 0);
}

static int
do_identity(struct client *c, enum dp_cmd_type type)
{
	uint32_t len = c->hdr.length;
	struct dp_cmd cmd = {.type = type, .in = c->payload};
	int rc;

	if (len % sizeof(struct nicfw_identity) != 0)
		return reply_error(c, -EINVAL, "identity payload length %u is not a multiple of %zu",
				   len, sizeof(struct nicfw_identity));
	cmd.n_in = len / sizeof(struct nicfw_identity);
	rc = dp_submit(C.dp, &cmd);
	if (rc < 0)
		return reply_error(c, rc, "identity %s failed after %u entries: %s",
				   type == CMD_IDENTITY_ADD ? "add" : "delete", cmd.n_checked,
				   rc == -ENOSPC ? "identity table full" : strerror(-rc));
	return reply(c, 0, cmd.n_checked, NULL, 0, NULL, 0);
}

static int
do_flows(struct client *c, enum dp_cmd_type type)
{
	struct dp_cmd cmd = {.type = type};
	int rc = dp_submit(C.dp, &cmd);

	if (rc < 0) {
		free(cmd.recs);
		return reply_error(c, rc, "flow table request failed: %s", strerror(-rc));
	}
	struct nicfw_flows_reply fr = {cmd.n_checked, 0, cmd.elapsed_ns};
	if (type == CMD_RESIMULATE)
		RTE_LOG(INFO, NICFW, "ctrl: resimulated %u flows in %.3f ms, %u removed\n",
			cmd.n_checked, cmd.elapsed_ns / 1e6, cmd.n_recs);
	rc = reply(c, 0, cmd.n_recs, &fr, sizeof(fr), cmd.recs,
		   sizeof(struct nicfw_flow_record) * cmd.n_recs);
	free(cmd.recs);
	return rc;
}

static int
do_flow_del(struct client *c)
{
	uint32_t len = c->hdr.length;
	struct dp_cmd cmd = {.type = CMD_FLOW_DEL, .in = c->payload};
	int rc;

	if (len % sizeof(struct nicfw_flow_del) != 0)
		return reply_error(c, -EINVAL, "FLOW_DEL payload length %u is not a multiple of %zu",
				   len, sizeof(struct nicfw_flow_del));
	cmd.n_in = len / sizeof(struct nicfw_flow_del);
	rc = dp_submit(C.dp, &cmd);
	if (rc < 0) {
		free(cmd.recs);
		return reply_error(c, rc, "FLOW_DEL failed: %s", strerror(-rc));
	}
	struct nicfw_flows_reply fr = {cmd.n_checked, 0, cmd.elapsed_ns};
	rc = reply(c, 0, cmd.n_recs, &fr, sizeof(fr), cmd.recs,
		   sizeof(struct nicfw_flow_record) * cmd.n_recs);
	free(cmd.recs);
	return rc;
}

static int
dispatch(struct client *c)
{
	struct json j = {.len = 0};

	switch (c->hdr.type) {
	case NICFW_MSG_PING:
		json_add(&j, "{\"version\":\"%s\",\"pid\":%d,\"port\":%s,\"lcore\":%u}",
			 NICFW_VERSION, getpid(), C.dp->cfg.has_port ? "true" : "false",
			 C.dp->lcore_id);
		return reply(c, 0, (uint32_t)j.len, j.buf, j.len, NULL, 0);
	case NICFW_MSG_LOAD_RULES:
		return do_load_rules(c);
	case NICFW_MSG_IDENTITY_ADD:
		return do_identity(c, CMD_IDENTITY_ADD);
	case NICFW_MSG_IDENTITY_DEL:
		return do_identity(c, CMD_IDENTITY_DEL);
	case NICFW_MSG_FLOW_RECORDS:
		c->subscriber = true;
		return reply(c, 0, 0, NULL, 0, NULL, 0);
	case NICFW_MSG_STATS:
		return do_stats(c);
	case NICFW_MSG_FLUSH_FLOWS:
		return do_flows(c, CMD_FLUSH);
	case NICFW_MSG_RESIMULATE:
		return do_flows(c, CMD_RESIMULATE);
	case NICFW_MSG_FLOW_DUMP:
		return do_flows(c, CMD_FLOW_DUMP);
	case NICFW_MSG_FLOW_DEL:
		return do_flow_del(c);
	case NICFW_MSG_SHUTDOWN:
		RTE_LOG(INFO, NICFW, "ctrl: shutdown requested\n");
		force_quit = true;
		return reply(c, 0, 0, NULL, 0, NULL, 0);
	default:
		return reply_error(c, -ENOTSUP, "unknown message type %u", c->hdr.type);
	}
}

/* Read what is available; dispatch complete requests. Returns -1 to drop the client. */
static int
client_read(struct client *c)
{
	for (;;) {
		ssize_t r;

		if (c->hdr_got < sizeof(c->hdr)) {
			r = recv(c->fd, (uint8_t *)&c->hdr + c->hdr_got, sizeof(c->hdr) - c->hdr_got,
				 0);
		} else {
			r = recv(c->fd, c->payload + c->payload_got, c->hdr.length - c->payload_got,
				 0);
		}
		if (r == 0)
			return -1;
		if (r < 0)
			return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
		if (c->hdr_got < sizeof(c->hdr)) {
			c->hdr_got += (uint32_t)r;
			if (c->hdr_got < sizeof(c->hdr))
				continue;
			if (c->hdr.length > NICFW_MSG_MAX) {
				/* The stream cannot be resynchronized: answer and hang up. */
				reply_error(c, -EMSGSIZE, "message length %u exceeds %u",
					    c->hdr.length, NICFW_MSG_MAX);
				client_flush(c);
				return -1;
			}
			c->payload = malloc(c->hdr.length ? c->hdr.length : 1);
			if (c->payload == NULL)
				return -1;
			c->payload_got = 0;
		} else {
			c->payload_got += (uint32_t)r;
		}
		if (c->hdr_got == sizeof(c->hdr) && c->payload_got == c->hdr.length) {
			int rc = dispatch(c);

			free(c->payload);
			c->payload = NULL;
			c->hdr_got = c->payload_got = 0;
			if (rc < 0)
				return -1;
		}
	}
}

static void
drain_records(void)
{
	struct nicfw_flow_record recs[EVENT_BATCH];
	int subs = 0;

	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &C.cl[i];
		if (c->fd >= 0 && c->subscriber) {
			if (c->out_len - c->out_off > SUB_BACKLOG)
				return;
			subs++;
		}
	}
	if (subs == 0)
		return; /* keep them in the ring for the first subscriber */
	for (int round = 0; round < 16; round++) {
		unsigned int n = rte_ring_dequeue_burst_elem(C.dp->rec_ring, recs, sizeof(recs[0]),
							     EVENT_BATCH, NULL);
		if (n == 0)
			return;
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = &C.cl[i];
			if (c->fd >= 0 && c->subscriber &&
			    queue_msg(c, NICFW_MSG_FLOW_EVENT, recs, sizeof(recs[0]) * n, NULL, 0,
				      NULL, 0) < 0)
				client_close(c);
		}
	}
}

static void
accept_client(void)
{
	int fd = accept4(C.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (C.cl[i].fd < 0) {
			memset(&C.cl[i], 0, sizeof(C.cl[i]));
			C.cl[i].fd = fd; /* after the memset: 0 is a valid descriptor */
			return;
		}
	}
	RTE_LOG(WARNING, NICFW, "ctrl: too many clients, refusing one\n");
	close(fd);
}

static void *
ctrl_thread(void *arg)
{
	struct pollfd pfd[MAX_CLIENTS + 1];
	int map[MAX_CLIENTS + 1];

	(void)arg;
	while (!force_quit) {
		int n = 0;

		pfd[n] = (struct pollfd){.fd = C.listen_fd, .events = POLLIN};
		map[n++] = -1;
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = &C.cl[i];
			if (c->fd < 0)
				continue;
			pfd[n] = (struct pollfd){.fd = c->fd, .events = POLLIN};
			if (c->out_off < c->out_len)
				pfd[n].events |= POLLOUT;
			map[n++] = i;
		}
		/* 1 ms: flow records wait here before they reach the controller, and every
		 * millisecond of that lets an unoffloaded connection send more through the service. */
		if (poll(pfd, (nfds_t)n, CTRL_POLL_MS) < 0 && errno != EINTR)
			break;
		for (int k = 0; k < n; k++) {
			if (pfd[k].revents == 0)
				continue;
			if (map[k] < 0) {
				accept_client();
				continue;
			}
			struct client *c = &C.cl[map[k]];
			int rc = 0;
			if (pfd[k].revents & POLLOUT)
				rc = client_flush(c);
			if (rc == 0 && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				rc = client_read(c);
			if (rc < 0)
				client_close(c);
		}
		drain_records();
	}
	return NULL;
}

int
ctrl_start(const char *path, struct datapath *dp)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int rc;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	/* Replace a stale socket, never any other kind of file. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path);
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	snprintf(C.path, sizeof(C.path), "%s", path);
	C.dp = dp;
	for (int i = 0; i < MAX_CLIENTS; i++)
		C.cl[i].fd = -1;
	C.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (C.listen_fd < 0)
		return -errno;
	if (bind(C.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(C.listen_fd, 8) < 0) {
		rc = -errno;
		close(C.listen_fd);
		C.listen_fd = -1;
		return rc;
	}
	rc = rte_ctrl_thread_create(&C.thread, "nicfw-ctrl", NULL, ctrl_thread, NULL);
	if (rc != 0) {
		close(C.listen_fd);
		unlink(path);
		return -rc;
	}
	C.started = true;
	return 0;
}

void
ctrl_stop(void)
{
	if (!C.started)
		return;
	pthread_join(C.thread, NULL);
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (C.cl[i].fd >= 0)
			client_close(&C.cl[i]);
	close(C.listen_fd);
	unlink(C.path);
	C.started = false;
}
