"""The fallback datapath: a batch of frames in, frames to send out, records in a ring.

One object owns every table (connections, identities, the rule set) and is only ever touched by
the service's single thread, between batches: the control channel's commands see a consistent
state, as the C app's commands on the datapath lcore do.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from dpdk_app.classifier.headers import HEADER_DTYPE
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, EV_END, EV_UPDATE, FLOW_RECORD_DTYPE
from dpdk_app.packets import FRAG_LATER, PARSE_OK, pack_frames, parse_batch
from dpdk_app.pyservice import kernels as k
from dpdk_app.pyservice import tables as tb
from dpdk_app.pyservice.reject import build_reject
from dpdk_app.pyservice.rules import RuleSet

RECORD_RING = 16384
MBUF_DATA_ROOM = 2048  # RTE_MBUF_DEFAULT_DATAROOM: a longer frame is multi-segment in the C app
EXPIRE_BUDGET = 1024
_RULE_ID = struct.Struct("!I")
_RULE_ID_OFF = 14 + 8  # the service header's rule_id


@dataclass
class Config:
    """Datapath options (the C app's service options)."""

    tcp_pickup: bool = True
    drop_records: bool = True
    reject_rate: int = 1000
    max_flows: int = 65536
    max_identities: int = 16384
    timeouts: dict[str, int] = field(
        default_factory=lambda: {
            "tcp_syn": 60,
            "tcp_est": 7440,
            "tcp_close": 30,
            "udp": 60,
            "icmp": 30,
            "other": 60,
        }
    )


@dataclass
class FlowsReply:
    """Result of RESIMULATE / FLUSH_FLOWS / FLOW_DUMP."""

    checked: int
    elapsed_ns: int
    records: np.ndarray


def _pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


class Table:
    """A pool of `cap` entries plus its open-addressing index (tables.tbl_*)."""

    def __init__(self, cap: int) -> None:
        self.keys = np.zeros((cap + 1, 5), dtype=np.uint64)  # last row: the lookup probe
        self.index = np.full(_pow2(2 * cap), -1, dtype=np.int64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.meta = np.zeros(4, dtype=np.int64)
        self.meta[tb.M_NFREE] = cap
        self.cap = cap

    @property
    def count(self) -> int:
        """Live entries."""
        return int(self.meta[tb.M_COUNT])


class Datapath:
    """Connection table, identity table and rule set, and the verdict of each batch."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.seed = int.from_bytes(os.urandom(8), "little") >> 1  # crafted tuples cannot collide
        self.ct = np.zeros(cfg.max_flows, dtype=k.CT_DTYPE)
        self.ctt = Table(cfg.max_flows)
        self.ids = Table(cfg.max_identities)
        self.id_class = np.zeros(cfg.max_identities, dtype=np.uint32)
        self.rules = RuleSet()
        self.recs = np.zeros(RECORD_RING, dtype=FLOW_RECORD_DTYPE)
        self.rmeta = np.zeros(1, dtype=np.int64)
        self.stats = np.zeros(k.STATS_WORDS, dtype=np.int64)
        self.quote = np.zeros(1, dtype=HEADER_DTYPE)  # an ICMP error's quoted packet
        self.counters = {"rx": 0, "tx": 0, "tx_fail": 0, "reject_sent": 0}
        self.counters["reject_suppressed"] = 0
        self.kcfg = np.zeros(k.CFG_WORDS, dtype=np.int64)
        ns = 1_000_000_000
        to = cfg.timeouts
        self.kcfg[k.C_PICKUP] = int(cfg.tcp_pickup)
        self.kcfg[k.C_DROP_RECORDS] = int(cfg.drop_records)
        self.kcfg[k.C_TO_SYN] = to["tcp_syn"] * ns
        self.kcfg[k.C_TO_EST] = to["tcp_est"] * ns
        self.kcfg[k.C_TO_CLOSE] = to["tcp_close"] * ns
        self.kcfg[k.C_TO_UDP] = to["udp"] * ns
        self.kcfg[k.C_TO_ICMP] = to["icmp"] * ns
        self.kcfg[k.C_TO_OTHER] = to["other"] * ns
        self.kcfg[k.C_SEED] = self.seed
        # Entries keep monotonic times; records carry wall-clock ones.
        self.kcfg[k.C_WALL_OFF] = time.time_ns() - time.monotonic_ns()
        self._tokens = float(cfg.reject_rate)
        self._tb_last = time.monotonic()

    # -- packets ------------------------------------------------------------------------------

    def process(self, frames: list[bytes]) -> list[bytes]:
        """Decide a batch in arrival order; -> the frames to send (forwarded and responses)."""
        n = len(frames)
        if n == 0:
            return []
        self.counters["rx"] += n
        data, offsets = pack_frames(frames)
        hdrs, info = parse_batch(data, offsets)
        lengths = np.diff(offsets)
        big = lengths > MBUF_DATA_ROOM
        if big.any():
            info["drop"][big] = k.DROP_MULTISEG
            hdrs["valid"][big] = 0
        t = self.ids
        tb.identity_fill(hdrs, t.index, t.keys, t.meta, self.id_class, self.seed)
        act, rid = self.rules.classify(hdrs)
        frag_ok = np.zeros(n, dtype=np.uint8)
        frag = np.flatnonzero((info["drop"] == PARSE_OK) & (info["frag"] == FRAG_LATER))
        if len(frag):
            frag_ok[frag], rid[frag] = self.rules.fragments(hdrs[frag])
        fate = np.zeros(n, dtype=np.uint8)
        out_rule = np.zeros(n, dtype=np.uint32)
        c = self.ctt
        k.decide_batch(
            data,
            offsets,
            self.quote,
            hdrs,
            info,
            lengths,
            act,
            rid,
            frag_ok,
            self.rules.loaded,
            time.monotonic_ns(),
            self.kcfg,
            self.ct,
            c.index,
            c.keys,
            c.free,
            c.meta,
            self.recs,
            self.rmeta,
            self.stats,
            fate,
            out_rule,
        )
        out: list[bytes] = []
        for i in np.flatnonzero(fate != k.FATE_DROP).tolist():
            if fate[i] == k.FATE_FORWARD:
                fr = bytearray(frames[i])
                _RULE_ID.pack_into(fr, _RULE_ID_OFF, int(out_rule[i]))
                out.append(bytes(fr))
            elif self._reject_allowed():
                try:
                    resp = build_reject(frames[i], info[i], int(hdrs[i]["proto"]), int(out_rule[i]))
                except (IndexError, ValueError, struct.error):
                    resp = None  # the parser vouched for the offsets: never happens, never fatal
                if resp is not None:
                    self.counters["reject_sent"] += 1
                    out.append(resp)
            else:
                self.counters["reject_suppressed"] += 1
        return out

    def _reject_allowed(self) -> bool:
        now = time.monotonic()
        rate = self.cfg.reject_rate
        self._tokens = min(float(rate), self._tokens + min(now - self._tb_last, 1.0) * rate)
        self._tb_last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def expire(self, budget: int = EXPIRE_BUDGET) -> int:
        """Incremental idle expiry: END records for connections past their timeout."""
        c = self.ctt
        return int(
            k.expire_scan(
                self.ct,
                c.index,
                c.keys,
                c.free,
                c.meta,
                time.monotonic_ns(),
                budget,
                self.kcfg,
                self.recs,
                self.rmeta,
                self.stats,
            )
        )

    def take_records(self) -> np.ndarray:
        """The records waiting in the ring (which is then empty)."""
        n = int(self.rmeta[0])
        out = self.recs[:n].copy()
        self.rmeta[0] = 0
        return out

    # -- identities -------------------------------------------------------------------------------

    def _identity_probe(self, ident: np.void) -> None:
        src = np.frombuffer(bytes(ident["src_addr"]), dtype=">u8")
        dst = np.frombuffer(bytes(ident["dst_addr"]), dtype=">u8")
        probe = self.ids.keys[-1]
        probe[0], probe[1], probe[2], probe[3] = int(src[0]), int(src[1]), int(dst[0]), int(dst[1])
        probe[4] = (int(ident["sport"]) << 24) | (int(ident["dport"]) << 8) | int(ident["proto"])

    def identity_add(self, ids: np.ndarray) -> tuple[int, bool]:
        """Add or replace entries; -> (written, table full)."""
        t = self.ids
        probe = t.cap
        for n, ident in enumerate(ids):
            self._identity_probe(ident)
            p = tb.tbl_find(t.index, t.keys, probe, np.uint64(self.seed))
            if p < 0:
                p = tb.tbl_add(t.index, t.keys, t.free, t.meta, probe, self.seed)
            if p < 0:
                return n, True
            self.id_class[p] = int(ident["id_class"])
        return len(ids), False

    def identity_del(self, ids: np.ndarray) -> int:
        """Remove entries by 5-tuple; -> how many existed."""
        t = self.ids
        removed = 0
        for ident in ids:
            self._identity_probe(ident)
            p = tb.tbl_find(t.index, t.keys, t.cap, np.uint64(self.seed))
            if p >= 0 and tb.tbl_del(t.index, t.keys, t.free, t.meta, p, self.seed):
                removed += 1
        return removed

    # -- the flow table ---------------------------------------------------------------------------

    def _records_of(self, pos: np.ndarray, event: int) -> np.ndarray:
        recs = np.zeros(len(pos), dtype=FLOW_RECORD_DTYPE)
        wall = int(self.kcfg[k.C_WALL_OFF])
        for j, p in enumerate(pos.tolist()):
            k.fill_record(self.ct, p, event, recs, j, wall)
        return recs

    def _remove(self, pos: np.ndarray) -> None:
        c = self.ctt
        for p in pos.tolist():
            k.ct_remove(self.ct, c.index, c.keys, c.free, c.meta, p, self.seed)

    def flows(self, what: str) -> FlowsReply:
        """'dump' (UPDATE records), 'flush' (END records, all removed) or 'resimulate'."""
        t0 = time.monotonic_ns()
        pos = np.flatnonzero(self.ct["live"]).astype(np.int64)
        if what == "dump":
            recs = self._records_of(pos, EV_UPDATE)
        elif what == "flush":
            recs = self._records_of(pos, EV_END)
            self._remove(pos)
        else:
            recs = self._resimulate(pos)
        return FlowsReply(len(pos), time.monotonic_ns() - t0, recs)

    def flow_del(self, dels: np.ndarray) -> FlowsReply:
        """FLOW_DEL: remove the named connections unless seen after their idle_before_ns."""
        t0 = time.monotonic_ns()
        n = len(dels)
        hdrs = np.zeros(n, dtype=HEADER_DTYPE)
        if n:
            src = np.ascontiguousarray(dels["src_addr"]).view(">u8").reshape(n, 2)
            dst = np.ascontiguousarray(dels["dst_addr"]).view(">u8").reshape(n, 2)
            hdrs["src_hi"], hdrs["src_lo"] = src[:, 0], src[:, 1]
            hdrs["dst_hi"], hdrs["dst_lo"] = dst[:, 0], dst[:, 1]
            hdrs["sport"], hdrs["dport"] = dels["sport"], dels["dport"]
            hdrs["proto"] = dels["proto"]
        c = self.ctt
        wall = int(self.kcfg[k.C_WALL_OFF])
        gone: list[int] = []
        for i in range(n):
            k.make_key(c.keys, c.cap, hdrs, i)
            p = int(tb.tbl_find(c.index, c.keys, c.cap, np.uint64(self.seed)))
            if p < 0 or p in gone:
                continue
            before = int(dels[i]["idle_before_ns"])
            if before and int(self.ct["last_ns"][p]) + wall > before:
                continue  # alive in software: seen after the caller's idle mark
            if not self.ct["ended"][p]:
                k.emit_entry(self.ct, p, EV_END, self.recs, self.rmeta, self.stats, wall)
            gone.append(p)
        pos = np.array(gone, dtype=np.int64)
        recs = self._records_of(pos, EV_END)
        self._remove(pos)
        return FlowsReply(n, time.monotonic_ns() - t0, recs)

    def _resimulate(self, pos: np.ndarray) -> np.ndarray:
        hdrs = np.zeros(len(pos), dtype=HEADER_DTYPE)
        k.flow_keys(self.ct, pos, hdrs)
        t = self.ids
        tb.identity_fill(hdrs, t.index, t.keys, t.meta, self.id_class, self.seed)
        if self.rules.loaded:
            act, rid = self.rules.classify(hdrs)
        else:
            act, rid = np.zeros(len(pos), np.uint8), np.zeros(len(pos), np.uint32)
        allowed = act == ACT_ALLOW
        moved = allowed & (rid != self.ct["rule_id"][pos])
        wall = int(self.kcfg[k.C_WALL_OFF])
        for j in np.flatnonzero(moved).tolist():  # still allowed, by another rule
            self.ct["rule_id"][pos[j]] = rid[j]
            k.emit_entry(self.ct, pos[j], EV_UPDATE, self.recs, self.rmeta, self.stats, wall)
        gone = np.flatnonzero(~allowed)
        recs = self._records_of(pos[gone], EV_END)
        recs["verdict"] = np.where(act[gone] != 0, act[gone], ACT_DROP)
        recs["rule_id"] = rid[gone]
        self._remove(pos[gone])
        return recs

    # -- counters ----------------------------------------------------------------------------------

    def stats_dict(self) -> dict[str, object]:
        """The STATS counters, with the C app's names."""
        s = self.stats
        out: dict[str, object] = dict(self.counters)
        out.update(
            allowed=int(s[k.S_ALLOWED]),
            dropped=int(s[k.S_DROPPED]),
            rejected=int(s[k.S_REJECTED]),
            ct_hit=int(s[k.S_CT_HIT]),
            ct_new=int(s[k.S_CT_NEW]),
            ct_full=int(s[k.S_CT_FULL]),
            ct_end=int(s[k.S_CT_END]),
            ct_expired=int(s[k.S_CT_EXPIRED]),
            ct_related=int(s[k.S_CT_RELATED]),
            records=int(s[k.S_RECORDS]),
            records_lost=int(s[k.S_RECORDS_LOST]),
            flows_active=self.ctt.count,
            flows_capacity=self.ctt.cap,
            identities=self.ids.count,
            records_pending=int(self.rmeta[0]),
        )
        out["drop"] = {name: int(s[k.S_DROP + i]) for i, name in enumerate(k.DROP_NAMES)}
        return out
