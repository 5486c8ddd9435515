/* SPDX-License-Identifier: Apache-2.0
 * The control channel: a UNIX stream socket between the fast path and the Python side
 * (dpdk_app/fastpath.py). Protocol, documented in dpdk_app/README.md:
 *
 *   every message = struct nicfw_msg_hdr {u32 type; u32 length;} + length bytes of payload,
 *   host byte order. A request gets one reply, type | NICFW_MSG_REPLY, whose payload starts
 *   with struct nicfw_reply_hdr {i32 status; u32 count;}: status 0 or -errno; on error the
 *   rest is a UTF-8 message. FLOW_RECORDS turns its connection into an event stream: after the
 *   reply, messages of type NICFW_MSG_FLOW_EVENT carry arrays of struct nicfw_flow_record.
 */
#ifndef NICFW_CTRL_H
#define NICFW_CTRL_H

#include <stdint.h>

#define NICFW_MSG_PING 1         /* -> JSON {version, pid, ...} */
#define NICFW_MSG_LOAD_RULES 2   /* struct nicfw_rule[] -> count, struct nicfw_load_reply */
#define NICFW_MSG_IDENTITY_ADD 3 /* struct nicfw_identity[] -> count added */
#define NICFW_MSG_IDENTITY_DEL 4 /* struct nicfw_identity[] -> count removed */
#define NICFW_MSG_FLOW_RECORDS 5 /* subscribe; then FLOW_EVENT messages */
#define NICFW_MSG_STATS 6        /* -> JSON object of counters */
#define NICFW_MSG_FLUSH_FLOWS 7  /* -> struct nicfw_flows_reply + END records of all flows */
#define NICFW_MSG_RESIMULATE 8   /* -> struct nicfw_flows_reply + records of removed flows */
#define NICFW_MSG_FLOW_DUMP 9    /* -> struct nicfw_flows_reply + UPDATE records of all flows */
#define NICFW_MSG_SHUTDOWN 10    /* -> reply, then the process exits */
#define NICFW_MSG_FLOW_DEL 11    /* struct nicfw_flow_del[] -> nicfw_flows_reply + END records */

#define NICFW_MSG_REPLY 0x80000000u
#define NICFW_MSG_FLOW_EVENT (0x40000000u | NICFW_MSG_FLOW_RECORDS)

#define NICFW_MSG_MAX (64u << 20) /* largest accepted payload */

struct nicfw_msg_hdr {
	uint32_t type;
	uint32_t length;
};

struct nicfw_reply_hdr {
	int32_t status;
	uint32_t count;
};

struct nicfw_load_reply { /* after nicfw_reply_hdr (count = rules loaded) */
	uint64_t build_ns;
	uint64_t generation;
	uint64_t memory_bytes;
};

struct nicfw_flows_reply { /* after nicfw_reply_hdr (count = records that follow) */
	uint32_t checked;
	uint32_t reserved;
	uint64_t elapsed_ns;
};

struct datapath;

/* Start the control thread listening on path; returns 0 or -errno. */
int ctrl_start(const char *path, struct datapath *dp);
/* Stop it (after force_quit is set) and remove the socket. */
void ctrl_stop(void);

#endif /* NICFW_CTRL_H */
