"""The rule log without processes: log_rules entries, the digest codec, the target's digest
engine (BMv2/PI semantics: dedup of unacked data, batching, timeouts) and the daemon's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.policy import load_policy, resolve
from controlplane.rulelog import RuleLog
from offload import names
from offload.compiler import CompileError
from offload.compiler.logrules import log_diff, log_entries, log_entry, rule_catalog
from offload.digests import (
    DigestError,
    DigestList,
    decode_digest_list,
    decode_sample,
    digest_infos,
    encode_sample,
)
from offload.entries import Exact
from offload.p4entity import EntityError
from offload.p4schema import P4Schema
from offload.p4values import ip_to_int128
from offload.proto import p4r, rpc_code
from offload.target.config import ConfigError, check_p4info
from offload.target.digests import DigestEngine

POLICY = """
workloads:
  web: {addresses: [10.9.1.10], tags: [web]}
  db: {addresses: [10.9.2.10], tags: [db]}
groups:
  web: {match: {tags: [web]}}
  db: {match: {tags: [db]}}
sections:
  - name: trial
    audit: true
    rules:
      - {name: trial-drop, source: web, destination: db, protocol: tcp, ports: 5432,
         action: drop, log: true}
  - name: main
    rules:
      - {name: web-db, source: web, destination: db, protocol: tcp, ports: 5432,
         action: allow, log: true}
      - {name: web-db-other, source: web, destination: db, action: drop}
      - {name: db-web, source: db, destination: web, action: allow, log: true,
         applied_to: [db]}
default_action: drop
"""


@pytest.fixture(scope="module")
def schema() -> P4Schema:
    return P4Schema.load()


def _ids(text: str = POLICY) -> dict[str, int]:
    return {r.name: r.rule_id for r in resolve(load_policy(text, "log.yaml")).rules}


# ------------------------------------------------------------------------------ compiler


def test_log_entries_are_the_enforced_rules_with_log_true() -> None:
    resolved = resolve(load_policy(POLICY, "log.yaml"))
    ids = _ids()
    entries = log_entries(resolved)
    assert [e.match_dict["rule_id"] for e in entries] == [
        Exact(i) for i in sorted(ids[n] for n in ("web-db", "db-web"))
    ]  # the audit rule logs through acl_audit; web-db-other has no `log`
    assert {(e.table, e.action) for e in entries} == {(names.LOG_RULES, names.LOG_HIT)}


def test_log_entries_follow_applied_to() -> None:
    resolved = resolve(load_policy(POLICY, "log.yaml"))
    db_web = _ids()["db-web"]
    rules = next(r for r in resolved.rules if r.rule_id == db_web)
    if rules.hosts is None:
        pytest.skip("this policy model has no applied_to hosts for workload groups")
    on_other = {e.match_dict["rule_id"] for e in log_entries(resolved, host="elsewhere")}
    assert Exact(db_web) not in on_other


def test_log_entries_refuse_more_than_the_table_holds() -> None:
    resolved = resolve(load_policy(POLICY, "log.yaml"))
    with pytest.raises(CompileError, match=r"acl\.log_rules holds 1"):
        log_entries(resolved, size=1)


def test_log_diff_writes_only_the_change() -> None:
    before = (log_entry(1), log_entry(2))
    after = (log_entry(2), log_entry(3))
    d = log_diff(before, after)
    assert (d.inserts, d.deletes, d.modifies) == ([log_entry(3)], [log_entry(1)], [])
    assert len(log_diff(None, after).inserts) == 2


def test_rule_catalog_names_sections_and_modes() -> None:
    catalog = rule_catalog(resolve(load_policy(POLICY, "log.yaml")))
    ids = _ids()
    trial = catalog[ids["trial-drop"]]
    assert (trial.name, trial.section, trial.audit, trial.action) == (
        "trial-drop",
        "trial",
        True,
        "drop",
    )
    assert (catalog[ids["web-db"]].section, catalog[ids["web-db"]].audit) == ("main", False)


# ------------------------------------------------------------------------------ codec


def test_digest_info_comes_from_type_info(schema: P4Schema) -> None:
    info = digest_infos(schema.p4info)[names.LOG_DIGEST]
    assert info.fields == (
        ("rule_id", 32),
        ("audit_rule_id", 32),
        ("verdict", 8),
        ("ip_src", 128),
        ("ip_dst", 128),
        ("ip_proto", 8),
        ("l4_src", 16),
        ("l4_dst", 16),
    )


def test_sample_round_trip_and_errors(schema: P4Schema) -> None:
    info = digest_infos(schema.p4info)[names.LOG_DIGEST]
    values = (7, 0, 1, ip_to_int128("10.0.0.1"), ip_to_int128("::1"), 6, 40000, 443)
    data = encode_sample(info, values)
    assert [m.bitstring for m in data.struct.members][:3] == [b"\x07", b"\x00", b"\x01"]
    assert tuple(decode_sample(info, data).values()) == values
    with pytest.raises(DigestError, match="does not fit 8 bits"):
        encode_sample(info, (7, 0, 256, 0, 0, 6, 1, 2))
    with pytest.raises(DigestError, match="7 values for 8 fields"):
        encode_sample(info, values[:-1])
    del data.struct.members[-1]
    with pytest.raises(DigestError, match="7 members"):
        decode_sample(info, data)
    data.struct.members.add().bitstring = b"\x01\x00\x00"  # 17 bits for a 16-bit member
    with pytest.raises(DigestError, match="l4_dst"):
        decode_sample(info, data)
    msg = p4r.DigestList(digest_id=info.id + 1, list_id=1)
    with pytest.raises(DigestError, match="unknown digest id"):
        decode_digest_list({info.id: info}, msg)


# ------------------------------------------------------------------------------ engine


def _engine(schema: P4Schema) -> tuple[DigestEngine, list[p4r.StreamMessageResponse], int]:
    sent: list[p4r.StreamMessageResponse] = []
    engine = DigestEngine(schema, sent.append)
    return engine, sent, digest_infos(schema.p4info)[names.LOG_DIGEST].id


def _configure(
    engine: DigestEngine, digest_id: int, utype: int = p4r.Update.INSERT, **config: int
) -> None:
    entry = p4r.DigestEntry(digest_id=digest_id)
    for k, v in config.items():
        setattr(entry.config, k, v)
    entry.config.SetInParent()
    engine.apply(engine.prepare(utype, entry))


SAMPLE = (5, 0, 1, ip_to_int128("10.0.0.1"), ip_to_int128("10.0.0.2"), 6, 1000, 80)
OTHER = (5, 0, 1, ip_to_int128("10.0.0.1"), ip_to_int128("10.0.0.2"), 6, 1001, 80)


def test_unconfigured_digest_drops_samples(schema: P4Schema) -> None:
    engine, sent, _ = _engine(schema)
    engine.learn(names.LOG_DIGEST, SAMPLE)
    assert sent == [] and engine.dropped_samples == 1


def test_unacked_data_is_sent_once_until_acked(schema: P4Schema) -> None:
    engine, sent, did = _engine(schema)
    _configure(engine, did, max_list_size=1, ack_timeout_ns=10**12)
    engine.learn(names.LOG_DIGEST, SAMPLE)
    engine.learn(names.LOG_DIGEST, SAMPLE)  # same flow, not acked: dropped
    engine.learn(names.LOG_DIGEST, OTHER)  # another flow: its own list
    assert [m.digest.list_id for m in sent] == [1, 2]
    assert engine.ack(did, 1)
    engine.learn(names.LOG_DIGEST, SAMPLE)  # acked: reported again
    engine.learn(names.LOG_DIGEST, OTHER)  # list 2 not acked yet
    assert [m.digest.list_id for m in sent] == [1, 2, 3]
    assert len(sent[2].digest.data) == 1


def test_ack_timeout_frees_the_cache(schema: P4Schema) -> None:
    engine, sent, did = _engine(schema)
    _configure(engine, did, max_list_size=1, ack_timeout_ns=1000)
    engine.learn(names.LOG_DIGEST, SAMPLE, now=0)
    engine.learn(names.LOG_DIGEST, SAMPLE, now=10)
    assert len(sent) == 1
    engine.sweep(now=1000)
    engine.learn(names.LOG_DIGEST, SAMPLE, now=1001)
    assert len(sent) == 2


def test_no_ack_timeout_means_no_dedup(schema: P4Schema) -> None:
    engine, sent, did = _engine(schema)
    _configure(engine, did, max_list_size=1)
    engine.learn(names.LOG_DIGEST, SAMPLE)
    engine.learn(names.LOG_DIGEST, SAMPLE)
    assert len(sent) == 2


def test_lists_batch_up_to_size_or_timeout(schema: P4Schema) -> None:
    engine, sent, did = _engine(schema)
    _configure(engine, did, max_list_size=3, max_timeout_ns=500, ack_timeout_ns=10**12)
    engine.learn(names.LOG_DIGEST, SAMPLE, now=0)
    engine.learn(names.LOG_DIGEST, OTHER, now=100)
    assert sent == []
    assert engine.sweep(now=499) == 0
    assert engine.sweep(now=500) == 1
    assert len(sent[0].digest.data) == 2
    samples = [(9, 0, 2, 1, 2, 17, p, 53) for p in range(3)]
    for s in samples:
        engine.learn(names.LOG_DIGEST, s, now=600)
    assert len(sent) == 2 and len(sent[1].digest.data) == 3  # full: sent at once


def test_config_writes_are_validated(schema: P4Schema) -> None:
    engine, _, did = _engine(schema)

    def code(utype: int, digest_id: int = did, **config: int) -> int:
        try:
            _configure(engine, digest_id, utype, **config)
        except EntityError as exc:
            return exc.code
        return rpc_code.OK

    assert code(p4r.Update.MODIFY) == rpc_code.NOT_FOUND  # not configured yet
    assert code(p4r.Update.INSERT, digest_id=did + 1) == rpc_code.NOT_FOUND
    assert code(p4r.Update.INSERT, max_list_size=-1) == rpc_code.INVALID_ARGUMENT
    assert not engine.configured(names.LOG_DIGEST)  # a refused write changes nothing
    assert code(p4r.Update.INSERT, max_list_size=1) == rpc_code.OK
    assert code(p4r.Update.INSERT, max_list_size=1) == rpc_code.ALREADY_EXISTS
    with pytest.raises(EntityError, match="need a config"):
        engine.prepare(p4r.Update.MODIFY, p4r.DigestEntry(digest_id=did))
    assert code(p4r.Update.DELETE) == rpc_code.OK
    assert code(p4r.Update.DELETE) == rpc_code.NOT_FOUND


def test_a_pipeline_config_must_declare_the_same_digest(schema: P4Schema) -> None:
    narrowed = P4Schema.load()
    struct = narrowed.p4info.type_info.structs[names.LOG_DIGEST]
    struct.members[2].type_spec.bitstring.bit.bitwidth = 16
    with pytest.raises(ConfigError, match="digests"):
        check_p4info(schema, narrowed)
    missing = P4Schema.load()
    del missing.p4info.digests[:]
    with pytest.raises(ConfigError, match="digests"):
        check_p4info(schema, missing)
    check_p4info(schema, P4Schema.load())  # the same P4Info is fine


# ------------------------------------------------------------------------------ records


def _list(*samples: tuple[int, ...]) -> DigestList:
    fields = ("rule_id", "audit_rule_id", "verdict", "ip_src", "ip_dst", "ip_proto")
    fields += ("l4_src", "l4_dst")
    decoded = tuple(dict(zip(fields, s, strict=True)) for s in samples)
    return DigestList(1, names.LOG_DIGEST, 1, 0, decoded)


def test_records_name_rules_and_are_written(tmp_path: Path) -> None:
    resolved = resolve(load_policy(POLICY, "log.yaml"))
    ids = _ids()
    catalog = rule_catalog(resolved)
    path = tmp_path / "state" / "rule-log.jsonl"
    clock = [1000.0]
    rl = RuleLog(lambda: catalog, path, repeat_s=10, clock=lambda: clock[0])
    audit = (ids["web-db"], ids["trial-drop"], 1, *SAMPLE[3:])
    logged = (ids["web-db"], 0, 1, *OTHER[3:])
    fresh = rl.handle(_list(audit, logged, audit))
    assert len(fresh) == 2 and rl.repeats == 1
    first = fresh[0]
    assert (first.rule, first.audit, first.audit_rule, first.audit_section) == (
        "web-db",
        True,
        "trial-drop",
        "trial",
    )
    assert (first.verdict, first.src, first.dst, first.proto, first.sport, first.dport) == (
        "allow",
        "10.0.0.1",
        "10.0.0.2",
        6,
        1000,
        80,
    )
    assert "rule=web-db section=main audit=yes verdict=allow" in first.line()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2] and lines[1]["audit"] is False
    assert [r.seq for r in rl.recent(audit_only=True)] == [1]
    assert [r["seq"] for r in rl.api_recent({"since": 1})["records"]] == [2]
    with pytest.raises(ValueError, match="since"):
        rl.api_recent({"since": -1})
    clock[0] += 11  # past repeat_s: the same flow is written again
    assert len(rl.handle(_list(audit))) == 1


def test_unknown_rule_ids_and_unwritable_file_do_not_stop_the_log(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    rl = RuleLog(dict, blocker / "rule-log.jsonl")
    (rec,) = rl.handle(_list((0, 0, 2, *SAMPLE[3:])))
    assert (rec.rule, rec.verdict) == ("default", "drop")
    assert rl.file_errors == 1


def test_the_file_rotates_by_size_and_keeps_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "rule-log.jsonl"
    rl = RuleLog(dict, path, repeat_s=0, max_bytes=2000, backups=3)
    samples = [(5, 0, 1, *SAMPLE[3:6], sport, 80) for sport in range(1, 41)]
    written = [rec for sample in samples for rec in rl.handle(_list(sample))]
    rl.close()
    assert len(written) == 40
    files = [path, *(path.with_name(f"{path.name}.{n}") for n in (1, 2, 3))]
    assert all(f.exists() for f in files) and not path.with_name(f"{path.name}.4").exists()
    assert all(f.stat().st_size <= 2000 for f in files)
    # newest last in the live file, older ones in .1, .2, .3; lines whole and in order
    seqs = [json.loads(line)["seq"] for f in reversed(files) for line in f.read_text().splitlines()]
    assert seqs == list(range(seqs[0], 41)) and seqs[0] > 1  # the oldest rotated away
    assert rl.file_errors == 0


def test_rotation_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="backups"):
        RuleLog(dict, Path("unused.jsonl"), backups=0)


def test_nicfw_run_passes_the_rule_log_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from controlplane import daemon
    from controlplane.cli import cli

    seen = {}

    class Recorder:
        def __init__(self, options: daemon.DaemonOptions) -> None:
            seen["options"] = options

        def run(self, once: bool = False) -> None:
            seen["once"] = once

    monkeypatch.setattr(daemon, "Daemon", Recorder)
    log = tmp_path / "hits.jsonl"
    args = ["run", "--once", "--rule-log", str(log), "--rule-log-max-mb", "3"]
    result = CliRunner().invoke(cli, [*args, "--rule-log-backups", "2"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert isinstance(options, daemon.DaemonOptions)
    assert (options.rule_log, options.rule_log_max_bytes, options.rule_log_backups) == (
        log,
        3 * 1024 * 1024,
        2,
    )
    bad = CliRunner().invoke(cli, [*args, "--rule-log-backups", "0"])
    assert bad.exit_code != 0 and "rule-log-backups" in bad.output
