"""The flow records store: merge of NEW/UPDATE/END, eviction, the SQLite file and `nicfw flows`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from controlplane.cli import cli
from controlplane.flows import FlowStore, read_flows_file, records_to_flows
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, EV_END, EV_NEW, FLOW_RECORD_DTYPE
from offload.p4values import ip_to_int128


def rec(sport: int, verdict: int = ACT_ALLOW, event: int = EV_NEW, rule_id: int = 7) -> np.ndarray:
    r = np.zeros(1, FLOW_RECORD_DTYPE)
    r["src_addr"] = np.frombuffer(ip_to_int128("10.0.0.1").to_bytes(16, "big"), np.uint8)
    r["dst_addr"] = np.frombuffer(ip_to_int128("2001:db8::2").to_bytes(16, "big"), np.uint8)
    r["proto"], r["sport"], r["dport"] = 6, sport, 443
    r["verdict"], r["event"], r["rule_id"], r["tcp_state"] = verdict, event, rule_id, 3
    return r


def test_merge_offloaded_and_end(tmp_path: Path) -> None:
    store = FlowStore(path=tmp_path / "flows.sqlite")
    (flow,) = store.update(records_to_flows(rec(1), {7: "web"}))
    assert (flow.rule, flow.verdict, flow.state, flow.ended) == (
        "web",
        "allow",
        "established",
        False,
    )
    store.mark_offloaded(flow.key)
    (ended,) = store.update(records_to_flows(rec(1, event=EV_END), {7: "web"}))
    assert ended.ended and ended.offloaded  # until the controller removes its entries
    store.mark_offloaded(flow.key, False)
    assert store.get(flow.key) == replace(ended, offloaded=False)
    store.update(records_to_flows(rec(2, verdict=ACT_DROP, rule_id=0)))
    assert [f.sport for f in store.query(active_only=True)] == []
    assert [f.sport for f in store.query(rule="web")] == [1]
    on_disk = read_flows_file(tmp_path / "flows.sqlite")
    assert [(f.sport, f.verdict, f.src) for f in on_disk] == [
        (1, "allow", ip_to_int128("10.0.0.1")),
        (2, "drop", ip_to_int128("10.0.0.1")),
    ]
    store.close()


def test_bounded_evicts_ended_first(tmp_path: Path) -> None:
    store = FlowStore(max_flows=3, path=tmp_path / "f.sqlite")
    store.update(records_to_flows(np.concatenate([rec(1), rec(2), rec(3)])))
    store.update(records_to_flows(rec(2, event=EV_END)))
    store.update(records_to_flows(rec(4)))
    assert sorted(f.sport for f in store.query()) == [1, 3, 4]
    store.update(records_to_flows(rec(5)))
    assert sorted(f.sport for f in store.query()) == [3, 4, 5]
    assert len(read_flows_file(tmp_path / "f.sqlite")) == 3


def test_cli_flows(tmp_path: Path) -> None:
    db = tmp_path / "flows.sqlite"
    store = FlowStore(path=db)
    store.update(records_to_flows(np.concatenate([rec(1), rec(2, rule_id=9)]), {7: "web"}))
    store.close()
    out = CliRunner().invoke(cli, ["flows", "--db", str(db), "--rule", "web", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [(r["sport"], r["rule"], r["src"], r["dst"]) for r in rows] == [
        (1, "web", "10.0.0.1", "2001:db8::2")
    ]
    table = CliRunner().invoke(cli, ["flows", "--db", str(db)])
    assert table.exit_code == 0 and "web" in table.output
    missing = CliRunner().invoke(cli, ["flows", "--db", str(tmp_path / "none.sqlite")])
    assert missing.exit_code != 0 and "no flow records" in missing.output
