"""firewall.p4, executed: the stages of docs/pipeline.md in order, with the P4 program's names.

Hold this file beside p4/firewall.p4: each numbered comment below is the stage of the same
number in docs/pipeline.md, and every table is looked up under its P4Info name. `process`
takes one frame and its ingress port and returns the frames to send, as (egress port, bytes);
the CPU port's frames carry the packet_in header in front, as the P4 deparser emits it.

The pipeline is not thread-safe; the target serialises packets and table writes with one lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

from offload import names as n
from offload.entries import Entry
from offload.names import CPU_PORT, Direction, Reason, Verdict
from offload.p4schema import P4Schema, TableInfo
from offload.p4values import decode_int
from offload.target.digests import DigestEngine
from offload.target.packet import (
    PACKET_OUT_LEN,
    encapsulate,
    parse,
    service_header,
)
from offload.target.tables import (
    ExactTable,
    KeylessTable,
    LpmTable,
    StoredEntry,
    Table,
    TernaryTable,
    make_table,
)

_T = TypeVar("_T", bound=Table)

# BMv2's drop port: the service header's egress_port when forwarding chose drop or multicast.
DROP_PORT = 511
PORT_MASK = 0x1FF  # v1model ports are 9 bits

Output = list[tuple[int, bytes]]

VERDICTS = {
    n.ACL_ALLOW: Verdict.ALLOW,
    n.ACL_DROP: Verdict.DROP,
    n.ACL_REJECT: Verdict.REJECT,
    n.ACL_SERVICE: Verdict.SERVICE,
}


def action_args(schema: P4Schema, action: str, params: Mapping[str, int]) -> tuple[int, ...]:
    """An action's parameter values in the order the action declares them."""
    if not action:
        return ()
    info = schema.action(action)
    return tuple(params[p.name] for p in info.params)


def default_entry(schema: P4Schema, table: TableInfo) -> StoredEntry:
    """A table's initial default action, from P4Info."""
    action = schema.action(table.initial_default_action_id)
    params = {
        action.params_by_id[pid].name: decode_int(value, action.params_by_id[pid].bitwidth)
        for pid, value in table.initial_default_args
    }
    entry = Entry.make(table.name, None, action.name, params, is_default=True)
    return StoredEntry(entry, action_args(schema, action.name, params))


class Pipeline:
    """firewall.p4's ingress and egress over the tables of one P4Info."""

    def __init__(self, schema: P4Schema, cpu_port: int = CPU_PORT) -> None:
        self.schema = schema
        self.cpu_port = cpu_port
        self.tables: dict[str, Table] = {}
        for info in schema.iter_tables():
            table = make_table(info)
            table.default = default_entry(schema, info)
            self.tables[info.name] = table
        self.service_config = self._table(n.SERVICE_CONFIG, KeylessTable)
        self.l2_forward = self._table(n.L2_FORWARD, ExactTable)
        self.src_class = self._table(n.SRC_CLASS, LpmTable)
        self.dst_class = self._table(n.DST_CLASS, LpmTable)
        self.flow_cache = self._table(n.FLOW_CACHE, ExactTable)
        self.identity = self._table(n.IDENTITY, ExactTable)
        self.acl_audit = self._table(n.ACL_AUDIT, TernaryTable)
        self.acl = self._table(n.ACL, TernaryTable)
        self.log_rules = self._table(n.LOG_RULES, ExactTable)
        # digest<T>(...) calls go here; the target wires its `send` to the primary's stream.
        self.digests = DigestEngine(schema)
        # The packet replication engine: multicast group id -> egress ports.
        self.mcast_groups: dict[int, tuple[int, ...]] = {}
        self.drops: Counter[str] = Counter()
        self.rx: Counter[int] = Counter()
        self.tx: Counter[int] = Counter()

    def _table(self, name: str, kind: type[_T]) -> _T:
        table = self.tables[name]
        if not isinstance(table, kind):
            raise TypeError(f"{name}: the pipeline needs a {kind.kind} table")
        return table

    def reset(self) -> None:
        """Forget every entry, group and counter: the state of a freshly committed pipeline."""
        for table in self.tables.values():
            table.clear()
            info = self.schema.table(table.name)
            table.default = default_entry(self.schema, info)
        self.mcast_groups.clear()
        self.digests.reset()
        self.drops.clear()
        self.rx.clear()
        self.tx.clear()

    def rebind(self, schema: P4Schema) -> None:
        """Adopt a compatible P4Info (other ids, same names): entries are kept by name."""
        self.schema = schema
        self.digests.rebind(schema)
        for table in self.tables.values():
            table.info = schema.table(table.name)
            table.size = table.info.size
            for rec in table:
                rec.wire = None  # encoded with the old ids

    def _drop(self, why: str) -> Output:
        self.drops[why] += 1
        return []

    def process(self, port: int, data: bytes) -> Output:
        """Run one frame through ingress and egress; the frames to send, by egress port."""
        self.rx[port] += 1
        # 1. Parser: a parser error drops the frame.
        h = parse(data, port == self.cpu_port)
        if h is None:
            return self._drop("parser_error")

        # 2. From the CPU port with packet_out: to packet_out.egress_port, nothing else.
        if h.packet_out is not None:
            egress = h.packet_out[0] & PORT_MASK  # (port_t) cast, as in the P4 program
            if egress == self.cpu_port or egress == DROP_PORT:
                return self._drop("packet_out_port")
            return self._emit([(egress, data[PACKET_OUT_LEN:])])

        # 3. svc.service_config: its default action names the service port, if any.
        svc = self.service_config.default
        assert svc is not None
        service_enabled = svc.action == n.SET_SERVICE_PORT
        service_port = svc.args[0] if service_enabled else -1

        # 4. Service encapsulation: trusted only from the service port, and not re-classified.
        if h.service is not None:
            if port != service_port:
                return self._drop("spoofed_service")
            egress = h.service[1] & PORT_MASK
            if egress == self.cpu_port or egress == DROP_PORT:
                return self._drop("service_egress_port")
            return self._emit([(egress, data[h.frame_start :])])

        # 5. fwd.l2_forward on ethernet.dst_addr.
        rec = self.l2_forward.entries.get((h.eth_dst,)) or self.l2_forward.default
        assert rec is not None
        group = 0
        if rec.action == n.SET_EGRESS_PORT:
            egress = rec.args[0]
        elif rec.action == n.SET_MCAST_GROUP:
            egress, group = DROP_PORT, rec.args[0]
        else:
            egress = DROP_PORT

        # 6. Non-IP packets are forwarded as stage 5 decided.
        if not h.is_ip:
            return self._forward(port, data, egress, group)

        # 7. classify.src_class / classify.dst_class (LPM); misses leave class 0.
        src = self.src_class.lookup(h.ip_src)
        dst = self.dst_class.lookup(h.ip_dst)
        src_class, src_workload = src.args if src is not None else (0, 0)
        dst_class, dst_workload = dst.args if dst is not None else (0, 0)
        if src_workload:
            direction, workload = Direction.OUTBOUND, src_workload
        elif dst_workload:
            direction, workload = Direction.INBOUND, dst_workload
        else:
            direction, workload = Direction.UNKNOWN, 0

        # 8. flows.flow_cache (exact 5-tuple, idle timeout, direct counter flow_counter).
        five_tuple = (h.ip_src, h.ip_dst, h.ip_proto, h.l4_src, h.l4_dst)
        rec = self.flow_cache.entries.get(five_tuple)
        if rec is not None:
            rec.packets += 1
            rec.bytes += len(data)
            rec.last_hit = time.monotonic_ns()
            if rec.action == n.FLOW_ALLOW:
                return self._forward(port, data, egress, group)
            return self._drop("flow_drop")

        # 9. ident.identity (exact 5-tuple) -> id_class, else 0.
        rec = self.identity.entries.get(five_tuple)
        id_class = rec.args[0] if rec is not None else 0

        # 10. acl.acl_audit (same keys, counter acl_audit_counter): a hit is only counted,
        # the verdict is acl.acl's (ternary/range/optional, priorities, counter acl_counter).
        key = (src_class, dst_class, h.ip_proto, h.l4_src, h.l4_dst, id_class)
        rec = self.acl_audit.lookup(key)
        audit_rule_id = 0
        if rec is not None:
            rec.packets += 1
            rec.bytes += len(data)
            audit_rule_id = rec.args[0]
        rec = self.acl.lookup(key)
        if rec is not None:
            rec.packets += 1
            rec.bytes += len(data)
        else:
            rec = self.acl.default
            assert rec is not None
        action = rec.action
        # acl.log_rules on the deciding rule; a logged rule or an audit hit sends
        # log_digest_t. Logging never changes the verdict.
        rule_id = rec.args[0] if rec.args else 0
        logged = self.log_rules.entries.get((rule_id,))
        if audit_rule_id or (logged is not None and logged.action == n.LOG_HIT):
            verdict = VERDICTS.get(action, 0)
            self.digests.learn(n.LOG_DIGEST, (rule_id, audit_rule_id, verdict, *five_tuple))
        if action == n.ACL_ALLOW:
            return self._forward(port, data, egress, group)
        if action == n.ACL_REJECT:
            reason = Reason.REJECT
        elif action == n.ACL_SERVICE:
            reason = Reason.PUNT
        else:
            return self._drop("acl_drop")

        # 11. To the service: encapsulated out of the service port, else packet_in to the CPU.
        header = service_header(port, egress, reason, direction, workload, rule_id)
        if service_enabled:
            return self._emit([(service_port, encapsulate(data, header))])
        return self._emit([(self.cpu_port, header + data)])

    def _forward(self, port: int, data: bytes, egress: int, group: int) -> Output:
        """Unicast, or replication to a multicast group's ports except the ingress port."""
        if group:
            ports = self.mcast_groups.get(group)
            if ports is None:
                return self._drop("unknown_mcast_group")
            # Egress: a copy for the ingress port is dropped.
            return self._emit([(p, data) for p in ports if p != port])
        if egress == DROP_PORT:
            return self._drop("l2_drop")
        return self._emit([(egress, data)])

    def _emit(self, out: Output) -> Output:
        for p, _ in out:
            self.tx[p] += 1
        return out
