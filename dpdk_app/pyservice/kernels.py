"""numba kernels of the fallback datapath: connection tracking, records, the verdict loop.

The connection table (a tables.py hash table) is keyed by the normalized 5-tuple (both
directions one entry); the state machine, timeouts, records and verdict order are those of
dpdk_app/src/conntrack.c and datapath.c, ported line by line (see dpdk_app/README.md, "What
the datapath decides").
"""

from __future__ import annotations

import numpy as np

from dpdk_app import packets
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, EV_END, EV_NEW
from dpdk_app.packets import FRAG_LATER, PARSE_OK, quote_key
from dpdk_app.pyservice.jit import kernel
from dpdk_app.pyservice.tables import (
    M_CURSOR,
    set_probe,
    tbl_add,
    tbl_del,
    tbl_find,
)

# Drop reasons beyond the parser's (enum nicfw_drop in dpdk_app/src/nicfw.h, in order).
DROP_NAMES = (
    *packets.DROP_NAMES,
    "multiseg",
    "fragment",
    "rule",
    "default",
    "ct_invalid",
    "no_rules",
)
DROP_MULTISEG, DROP_FRAGMENT, DROP_RULE, DROP_DEFAULT = 7, 8, 9, 10
DROP_CT_INVALID, DROP_NO_RULES = 11, 12
REASON_REJECT = 5

FATE_FORWARD, FATE_DROP, FATE_REJECT = 0, 1, 2

# Connection states (enum ct_state, fastpath.CtState).
CT_SYN_SENT, CT_SYN_RECV, CT_ESTABLISHED, CT_FIN_WAIT = 1, 2, 3, 4
CT_TIME_WAIT, CT_CLOSED, CT_UNREPLIED, CT_REPLIED = 5, 6, 7, 8
CT_PASS, CT_INVALID, CT_END, CT_RESTART = 0, 1, 2, 3

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

# cfg: configuration words handed to the kernels (timeouts in ns).
C_PICKUP, C_DROP_RECORDS, C_TO_SYN, C_TO_EST, C_TO_CLOSE = 0, 1, 2, 3, 4
C_TO_UDP, C_TO_ICMP, C_TO_OTHER, C_SEED, C_WALL_OFF = 5, 6, 7, 8, 9
CFG_WORDS = 10

# stats: counters the kernels advance (then drop.<reason> at S_DROP + code).
S_ALLOWED, S_DROPPED, S_REJECTED, S_CT_HIT, S_CT_NEW = 0, 1, 2, 3, 4
S_CT_FULL, S_CT_END, S_CT_EXPIRED, S_RECORDS, S_RECORDS_LOST = 5, 6, 7, 8, 9
S_CT_RELATED = 10
S_DROP = 16
STATS_WORDS = S_DROP + len(DROP_NAMES)


CT_DTYPE = np.dtype(
    [
        ("a_hi", "<u8"),
        ("a_lo", "<u8"),
        ("b_hi", "<u8"),
        ("b_lo", "<u8"),
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("first_ns", "<i8"),
        ("last_ns", "<i8"),
        ("expire_ns", "<i8"),
        ("rule_id", "<u4"),
        ("pa", "<u2"),
        ("pb", "<u2"),
        ("orig_sport", "<u2"),  # as classified; ICMP: identifier and type << 8 | code
        ("orig_dport", "<u2"),
        ("ingress_port", "<u2"),
        ("egress_port", "<u2"),
        ("workload_id", "<u2"),
        ("proto", "u1"),
        ("orig_is_b", "u1"),  # the initiator's address is b
        ("state", "u1"),
        ("fin_orig", "u1"),
        ("fin_reply", "u1"),
        ("ended", "u1"),  # an END record has been emitted
        ("reason", "u1"),
        ("direction", "u1"),
        ("live", "u1"),
    ]
)


# --- records ----------------------------------------------------------------------------------


@kernel(inline="always")
def _put_addr(out: np.ndarray, hi: np.uint64, lo: np.uint64) -> None:
    for k in range(8):
        out[k] = (hi >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)
        out[8 + k] = (lo >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)


@kernel
def _push(recs: np.ndarray, rmeta: np.ndarray, stats: np.ndarray) -> int:
    """Index of a free record slot, or -1 (counted lost) when the ring is full."""
    n = rmeta[0]
    if n >= recs.shape[0]:
        stats[S_RECORDS_LOST] += 1
        return -1
    rmeta[0] = n + 1
    stats[S_RECORDS] += 1
    recs[n].reserved = 0
    return n


@kernel
def fill_record(ct: np.ndarray, e: int, event: int, rec: np.ndarray, k: int, wall: int) -> None:
    """recs[k] = the record of connection entry e (ct_fill_record)."""
    c = ct[e]
    r = rec[k]
    if c.orig_is_b:
        _put_addr(r.src_addr, c.b_hi, c.b_lo)
        _put_addr(r.dst_addr, c.a_hi, c.a_lo)
    else:
        _put_addr(r.src_addr, c.a_hi, c.a_lo)
        _put_addr(r.dst_addr, c.b_hi, c.b_lo)
    r.sport = c.orig_sport
    r.dport = c.orig_dport
    r.proto = c.proto
    r.verdict = ACT_ALLOW
    r.reason = c.reason
    r.direction = c.direction
    r.rule_id = c.rule_id
    r.ingress_port = c.ingress_port
    r.egress_port = c.egress_port
    r.workload_id = c.workload_id
    r.tcp_state = c.state
    r.event = event
    r.reserved = 0
    r.packets = c.packets
    r.bytes = c.bytes
    r.first_seen_ns = c.first_ns + wall
    r.last_seen_ns = c.last_ns + wall


@kernel
def emit_entry(
    ct: np.ndarray,
    e: int,
    event: int,
    recs: np.ndarray,
    rmeta: np.ndarray,
    stats: np.ndarray,
    wall: int,
) -> None:
    """Stream the record of entry e; an END marks it ended."""
    k = _push(recs, rmeta, stats)
    if k >= 0:
        fill_record(ct, e, event, recs, k, wall)
    if event == EV_END:
        ct[e].ended = 1


@kernel
def _emit_decision(
    hdr: np.ndarray,
    info: np.ndarray,
    i: int,
    verdict: int,
    rule_id: int,
    length: int,
    now: int,
    recs: np.ndarray,
    rmeta: np.ndarray,
    stats: np.ndarray,
    wall: int,
) -> None:
    k = _push(recs, rmeta, stats)
    if k < 0:
        return
    r = recs[k]
    h = hdr[i]
    _put_addr(r.src_addr, h.src_hi, h.src_lo)
    _put_addr(r.dst_addr, h.dst_hi, h.dst_lo)
    r.sport = h.sport
    r.dport = h.dport
    r.proto = h.proto
    r.verdict = verdict
    r.reason = info[i].reason
    r.direction = info[i].direction
    r.rule_id = rule_id
    r.ingress_port = info[i].ingress_port
    r.egress_port = info[i].egress_port
    r.workload_id = info[i].workload_id
    r.tcp_state = 0
    r.event = EV_NEW
    r.packets = 1
    r.bytes = length
    r.first_seen_ns = now + wall
    r.last_seen_ns = now + wall


# --- connection tracking ------------------------------------------------------------------------


@kernel(inline="always")
def _timeout(cfg: np.ndarray, proto: int, state: int) -> np.int64:
    if proto == 6:
        if state == CT_SYN_SENT or state == CT_SYN_RECV:  # noqa: SIM109 - numba kernel
            return cfg[C_TO_SYN]
        if state == CT_ESTABLISHED:
            return cfg[C_TO_EST]
        return cfg[C_TO_CLOSE]
    if proto == 17:
        return cfg[C_TO_UDP]
    if proto == 1 or proto == 58:
        return cfg[C_TO_ICMP]
    return cfg[C_TO_OTHER]


@kernel(inline="always")
def _is_echo(proto: int, dport: int) -> bool:
    t = dport >> 8
    if proto == 1:
        return t == 8 or t == 0
    if proto == 58:
        return t == 128 or t == 129
    return False


@kernel
def make_key(keys: np.ndarray, probe: int, hdr: np.ndarray, i: int) -> bool:
    """Write the normalized key of header i into keys[probe]; -> whether its source is b."""
    h = hdr[i]
    sp = np.int64(h.sport)
    dp = np.int64(h.dport)
    if _is_echo(h.proto, dp):
        dp = sp  # echo request and reply differ in type: key them by identifier alone
    c = 0
    if h.src_hi != h.dst_hi:
        c = 1 if h.src_hi > h.dst_hi else -1
    elif h.src_lo != h.dst_lo:
        c = 1 if h.src_lo > h.dst_lo else -1
    elif sp != dp:
        c = 1 if sp > dp else -1
    if c > 0:
        set_probe(keys, probe, h.dst_hi, h.dst_lo, h.src_hi, h.src_lo, dp, sp, h.proto)
    else:
        set_probe(keys, probe, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, sp, dp, h.proto)
    return c > 0


@kernel
def _ct_create(
    ct: np.ndarray,
    p: int,
    keys: np.ndarray,
    src_is_b: bool,
    hdr: np.ndarray,
    info: np.ndarray,
    i: int,
    rule_id: int,
    now: int,
    cfg: np.ndarray,
) -> None:
    e = ct[p]
    e.a_hi = keys[p, 0]
    e.a_lo = keys[p, 1]
    e.b_hi = keys[p, 2]
    e.b_lo = keys[p, 3]
    e.pa = (keys[p, 4] >> np.uint64(24)) & np.uint64(0xFFFF)
    e.pb = (keys[p, 4] >> np.uint64(8)) & np.uint64(0xFFFF)
    e.proto = hdr[i].proto
    e.orig_sport = hdr[i].sport
    e.orig_dport = hdr[i].dport
    e.orig_is_b = 1 if src_is_b else 0
    f = info[i].tcp_flags
    e.fin_orig = 0
    e.fin_reply = 0
    e.ended = 0
    if e.proto != 6:
        e.state = CT_UNREPLIED
    elif (f & (TCP_SYN | TCP_ACK)) == TCP_SYN:
        e.state = CT_SYN_SENT
    elif f & TCP_FIN:  # picked up mid-stream
        e.state = CT_FIN_WAIT
        e.fin_orig = 1
    else:
        e.state = CT_ESTABLISHED
    e.reason = info[i].reason
    e.direction = info[i].direction
    e.ingress_port = info[i].ingress_port
    e.egress_port = info[i].egress_port
    e.workload_id = info[i].workload_id
    e.rule_id = rule_id
    e.packets = 0
    e.bytes = 0
    e.first_ns = now
    e.last_ns = now
    e.expire_ns = now + _timeout(cfg, e.proto, e.state)
    e.live = 1


@kernel
def _ct_update(
    ct: np.ndarray, p: int, src_is_b: bool, flags: int, length: int, now: int, cfg: np.ndarray
) -> int:
    e = ct[p]
    orig = (1 if src_is_b else 0) == e.orig_is_b
    v = CT_PASS
    if e.proto == 6:
        f = flags
        closed = e.state == CT_TIME_WAIT or e.state == CT_CLOSED
        if (f & (TCP_SYN | TCP_ACK)) == TCP_SYN:
            if closed and orig:
                return CT_RESTART
            if not orig:
                return CT_INVALID  # simultaneous open: not supported
        elif f & TCP_RST:
            v = CT_PASS if e.state == CT_CLOSED else CT_END
            e.state = CT_CLOSED
        elif e.state == CT_CLOSED:
            return CT_INVALID
        elif f & TCP_SYN:  # SYN-ACK
            if orig or closed:
                return CT_INVALID
            if e.state == CT_SYN_SENT:
                e.state = CT_SYN_RECV
        else:
            if e.state == CT_SYN_RECV and orig and (f & TCP_ACK):
                e.state = CT_ESTABLISHED
            if f & TCP_FIN:
                if orig:
                    e.fin_orig = 1
                else:
                    e.fin_reply = 1
                if e.fin_orig and e.fin_reply:
                    v = CT_PASS if e.state == CT_TIME_WAIT else CT_END
                    e.state = CT_TIME_WAIT
                else:
                    e.state = CT_FIN_WAIT
    elif not orig and e.state == CT_UNREPLIED:
        e.state = CT_REPLIED
    e.packets += 1
    e.bytes += length
    e.last_ns = now
    e.expire_ns = now + _timeout(cfg, e.proto, e.state)
    return v


@kernel
def ct_remove(
    ct: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    p: int,
    seed: int,
) -> None:
    """Forget connection entry p."""
    if ct[p].live and tbl_del(index, keys, free, meta, p, seed):
        ct[p].live = 0


@kernel
def expire_scan(
    ct: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    now: int,
    budget: int,
    cfg: np.ndarray,
    recs: np.ndarray,
    rmeta: np.ndarray,
    stats: np.ndarray,
) -> int:
    """Visit up to `budget` pool positions from the cursor; expired entries END and go."""
    n = ct.shape[0]
    seed = cfg[C_SEED]
    removed = 0
    for _ in range(min(budget, n)):
        p = meta[M_CURSOR]
        meta[M_CURSOR] = (p + 1) % n
        if ct[p].live and now >= ct[p].expire_ns:
            stats[S_CT_EXPIRED] += 1
            if not ct[p].ended:
                emit_entry(ct, p, EV_END, recs, rmeta, stats, cfg[C_WALL_OFF])
            ct_remove(ct, index, keys, free, meta, p, seed)
            removed += 1
    return removed


@kernel(inline="always")
def _track_kind(cfg: np.ndarray, proto: int, flags: int, dport: int) -> int:
    """0 track, 1 pass untracked, 2 invalid (datapath.c track_kind)."""
    if proto == 6:
        if flags & TCP_RST:
            return 1
        if (flags & (TCP_SYN | TCP_ACK)) == TCP_SYN:
            return 0
        if flags & TCP_SYN:
            return 2  # SYN-ACK of a connection never seen
        return 0 if cfg[C_PICKUP] else 2
    if proto == 1:
        return 0 if (dport >> 8) == 8 else 1
    if proto == 58:
        return 0 if (dport >> 8) == 128 else 1
    return 0


@kernel
def _related(
    data: np.ndarray,
    offsets: np.ndarray,
    hdrs: np.ndarray,
    info: np.ndarray,
    i: int,
    quote: np.ndarray,
    now: int,
    ct: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    probe: int,
    seed: int,
) -> int:
    """Entry of the connection the ICMP error i reports on (RELATED), or -1 (datapath.c).

    The quoted packet's tuple is a live connection (a TCP one not CLOSED) and the error travels
    toward the quoted packet's sender. Read only: the probe key is packet i's own again after.
    """
    p = -1
    if quote_key(data[offsets[i] : offsets[i + 1]], info, i, quote, 0) and (
        quote[0].src_hi == hdrs[i].dst_hi and quote[0].src_lo == hdrs[i].dst_lo
    ):
        make_key(keys, probe, quote, 0)
        p = tbl_find(index, keys, probe, np.uint64(seed))
        if p >= 0 and (now >= ct[p].expire_ns or (ct[p].proto == 6 and ct[p].state == CT_CLOSED)):
            p = -1
        make_key(keys, probe, hdrs, i)
    return p


@kernel
def decide_batch(
    data: np.ndarray,
    offsets: np.ndarray,
    quote: np.ndarray,
    hdrs: np.ndarray,
    info: np.ndarray,
    lengths: np.ndarray,
    act: np.ndarray,
    rid: np.ndarray,
    frag_ok: np.ndarray,
    have_rules: bool,
    now: int,
    cfg: np.ndarray,
    ct: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    recs: np.ndarray,
    rmeta: np.ndarray,
    stats: np.ndarray,
    fate: np.ndarray,
    out_rule: np.ndarray,
) -> None:
    """The verdict of every packet of a parsed and classified batch, in arrival order.

    data/offsets: the batch's frames (packets.pack_frames), read for ICMP errors' quotes; quote:
    one spare HEADER_DTYPE record. act/rid: the winning rule's action and id (0, 0 for none);
    frag_ok: 1 where a non-first fragment is allowed by a port-wildcard allow rule (rid is then
    that rule).
    """
    probe = keys.shape[0] - 1
    seed = cfg[C_SEED]
    wall = cfg[C_WALL_OFF]
    for i in range(hdrs.shape[0]):
        fate[i] = FATE_DROP
        out_rule[i] = 0
        why = np.int64(info[i].drop)
        length = np.int64(lengths[i])
        if why == PARSE_OK:
            why, f, r = _decide_one(
                data,
                offsets,
                quote,
                hdrs,
                info,
                i,
                length,
                np.int64(act[i]),
                np.int64(rid[i]),
                np.int64(frag_ok[i]),
                have_rules,
                now,
                cfg,
                ct,
                index,
                keys,
                free,
                meta,
                recs,
                rmeta,
                stats,
                probe,
                seed,
                wall,
            )
            fate[i] = f
            out_rule[i] = r
        if fate[i] == FATE_FORWARD:
            stats[S_ALLOWED] += 1
        elif fate[i] == FATE_REJECT:
            stats[S_REJECTED] += 1
        else:
            stats[S_DROPPED] += 1
            stats[S_DROP + why] += 1


@kernel
def _decide_one(
    data: np.ndarray,
    offsets: np.ndarray,
    quote: np.ndarray,
    hdrs: np.ndarray,
    info: np.ndarray,
    i: int,
    length: int,
    action: int,
    rule_id: int,
    frag_ok: int,
    have_rules: bool,
    now: int,
    cfg: np.ndarray,
    ct: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    recs: np.ndarray,
    rmeta: np.ndarray,
    stats: np.ndarray,
    probe: int,
    seed: int,
    wall: int,
) -> tuple[int, int, int]:
    """(drop reason, fate, deciding rule id) of one parsed packet (datapath.c decide)."""
    drop_records = cfg[C_DROP_RECORDS] != 0
    if info[i].reason == REASON_REJECT:  # the pipeline's ACL already decided
        rid = int(info[i].rule_id)
        if drop_records:
            _emit_decision(hdrs, info, i, ACT_REJECT, rid, length, now, recs, rmeta, stats, wall)
        return 0, FATE_REJECT, rid
    if info[i].frag == FRAG_LATER:
        if have_rules and frag_ok:
            return 0, FATE_FORWARD, rule_id
        return (DROP_FRAGMENT if have_rules else DROP_NO_RULES), FATE_DROP, 0

    src_is_b = make_key(keys, probe, hdrs, i)
    p = tbl_find(index, keys, probe, np.uint64(seed))
    if p >= 0 and now >= ct[p].expire_ns:
        stats[S_CT_EXPIRED] += 1
        if not ct[p].ended:
            emit_entry(ct, p, EV_END, recs, rmeta, stats, wall)
        ct_remove(ct, index, keys, free, meta, p, seed)
        p = -1
    if p >= 0:
        v = _ct_update(ct, p, src_is_b, info[i].tcp_flags, length, now, cfg)
        if v == CT_PASS:
            stats[S_CT_HIT] += 1
            return 0, FATE_FORWARD, int(ct[p].rule_id)
        if v == CT_END:
            stats[S_CT_HIT] += 1
            stats[S_CT_END] += 1
            if not ct[p].ended:
                emit_entry(ct, p, EV_END, recs, rmeta, stats, wall)
            return 0, FATE_FORWARD, int(ct[p].rule_id)
        if v == CT_INVALID:
            return DROP_CT_INVALID, FATE_DROP, 0
        if not ct[p].ended:  # CT_RESTART: forget it, classify as new
            emit_entry(ct, p, EV_END, recs, rmeta, stats, wall)
        ct_remove(ct, index, keys, free, meta, p, seed)

    proto = hdrs[i].proto
    if (proto == 1 or proto == 58) and info[i].l4_off != 0:
        p = _related(data, offsets, hdrs, info, i, quote, now, ct, index, keys, probe, seed)
        if p >= 0:
            stats[S_CT_RELATED] += 1
            return 0, FATE_FORWARD, int(ct[p].rule_id)

    if not have_rules:
        return DROP_NO_RULES, FATE_DROP, 0
    if action != ACT_ALLOW:
        act = action if action != 0 else ACT_DROP
        if drop_records:
            _emit_decision(hdrs, info, i, act, rule_id, length, now, recs, rmeta, stats, wall)
        why = DROP_RULE if action != 0 else DROP_DEFAULT
        return why, (FATE_REJECT if act == ACT_REJECT else FATE_DROP), rule_id
    kind = _track_kind(cfg, hdrs[i].proto, info[i].tcp_flags, hdrs[i].dport)
    if kind == 2:
        return DROP_CT_INVALID, FATE_DROP, 0
    if kind == 1:
        return 0, FATE_FORWARD, rule_id
    p = tbl_add(index, keys, free, meta, probe, seed)
    if p < 0:  # table full: the rule allows it, only the state is missing
        stats[S_CT_FULL] += 1
        _emit_decision(hdrs, info, i, ACT_ALLOW, rule_id, length, now, recs, rmeta, stats, wall)
        return 0, FATE_FORWARD, rule_id
    _ct_create(ct, p, keys, src_is_b, hdrs, info, i, rule_id, now, cfg)
    stats[S_CT_NEW] += 1
    ct[p].packets = 1
    ct[p].bytes = length
    emit_entry(ct, p, EV_NEW, recs, rmeta, stats, wall)
    return 0, FATE_FORWARD, rule_id


@kernel
def flow_keys(ct: np.ndarray, pos: np.ndarray, hdrs: np.ndarray) -> None:
    """hdrs[j] = the initiator's 5-tuple of entry pos[j], for resimulation (ct_entry_key)."""
    for j in range(pos.shape[0]):
        c = ct[pos[j]]
        h = hdrs[j]
        if c.orig_is_b:
            h.src_hi, h.src_lo, h.dst_hi, h.dst_lo = c.b_hi, c.b_lo, c.a_hi, c.a_lo
        else:
            h.src_hi, h.src_lo, h.dst_hi, h.dst_lo = c.a_hi, c.a_lo, c.b_hi, c.b_lo
        h.sport = c.orig_sport
        h.dport = c.orig_dport
        h.proto = c.proto
        h.valid = 1
