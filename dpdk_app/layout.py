"""Layouts of the structures shared with the DPDK fast path (include/nicfw_shared.h).

The numpy dtypes here are the Python side's view of the C structs; the numba fallback works on
arrays of them directly. tests/unit/test_dwarf_layout.py reads the built binary's DWARF and
fails if a size or field offset differs from these.
"""

from __future__ import annotations

import numpy as np

ACT_ALLOW = 1
ACT_DROP = 2
ACT_REJECT = 3
RULE_LOG = 0x01

EV_NEW = 1
EV_UPDATE = 2
EV_END = 3

RULE_DTYPE = np.dtype(
    [
        ("rule_id", "<u4"),
        ("priority", "<u4"),
        ("src_addr", "u1", (16,)),
        ("dst_addr", "u1", (16,)),
        ("src_plen", "u1"),
        ("dst_plen", "u1"),
        ("proto", "u1"),
        ("proto_mask", "u1"),
        ("sport_lo", "<u2"),
        ("sport_hi", "<u2"),
        ("dport_lo", "<u2"),
        ("dport_hi", "<u2"),
        ("action", "u1"),
        ("flags", "u1"),
        ("reserved", "<u2"),
        ("id_class", "<u4"),
        ("id_mask", "<u4"),
    ]
)

FLOW_RECORD_DTYPE = np.dtype(
    [
        ("src_addr", "u1", (16,)),
        ("dst_addr", "u1", (16,)),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("verdict", "u1"),
        ("reason", "u1"),
        ("direction", "u1"),
        ("rule_id", "<u4"),
        ("ingress_port", "<u2"),
        ("egress_port", "<u2"),
        ("workload_id", "<u2"),
        ("tcp_state", "u1"),
        ("event", "u1"),
        ("reserved", "<u4"),
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("first_seen_ns", "<u8"),
        ("last_seen_ns", "<u8"),
    ]
)

IDENTITY_DTYPE = np.dtype(
    [
        ("src_addr", "u1", (16,)),
        ("dst_addr", "u1", (16,)),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("reserved", "u1", (3,)),
        ("id_class", "<u4"),
        ("user_id", "<u4"),
    ]
)

# FLOW_DEL entry: a 5-tuple (either direction) and "remove only if not seen after" (wall ns).
FLOW_DEL_DTYPE = np.dtype(
    [
        ("src_addr", "u1", (16,)),
        ("dst_addr", "u1", (16,)),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("reserved", "u1", (3,)),
        ("idle_before_ns", "<u8"),
    ]
)

# C struct name -> dtype, for the DWARF layout check.
SHARED_STRUCTS: dict[str, np.dtype] = {
    "nicfw_rule": RULE_DTYPE,
    "nicfw_flow_record": FLOW_RECORD_DTYPE,
    "nicfw_identity": IDENTITY_DTYPE,
    "nicfw_flow_del": FLOW_DEL_DTYPE,
}
