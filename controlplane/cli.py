"""The `nicfw` command line: thin click commands over the library.

Inspection commands read over P4Runtime without arbitration, so they never take the device
from the controller that programs it; every one offers `--json`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click
from rich.console import Console
from rich.table import Table

from controlplane.policy import PolicyError, load_policy_file, resolve
from controlplane.render import Labels, entry_rows
from offload.compiler import CompiledPolicy, CompileOptions, Compiler
from offload.counters import hits_by_param
from offload.p4client import P4Client
from offload.p4errors import P4ClientError
from offload.p4schema import P4Schema, SchemaError
from offload.sync import Diff, SyncError

if TYPE_CHECKING:
    from controlplane.dryrun import PolicyDryRun

DEFAULT_TARGET = "127.0.0.1:9559"
# Tables are wide: when output is not a terminal (make run, CI logs), do not wrap at 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class Failure(click.ClickException):
    """A one-line error and a non-zero exit."""

    def show(self, file: Any = None) -> None:
        """Print `error: ...` on stderr."""
        err_console.print(f"[red]error:[/red] {self.message}", highlight=False)


@contextmanager
def failures() -> Iterator[None]:
    """Turn library errors into one-line CLI errors."""
    try:
        yield
    except PolicyError as exc:
        raise Failure(str(exc)) from None
    except (P4ClientError, SyncError, SchemaError, OSError) as exc:
        raise Failure(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def emit_json(data: Any) -> None:
    """Print `data` as JSON (stdout)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_rows(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as a table."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console.print(table)


def print_diff(changes: Diff, labels: Labels, as_json: bool) -> None:
    """The writes of a diff as tables (or JSON), with a one-line summary."""
    rows = {
        "insert": entry_rows(changes.inserts, labels),
        "modify": entry_rows(changes.modifies, labels),
        "delete": entry_rows(changes.deletes, labels),
    }
    if as_json:
        emit_json({**rows, "unchanged": changes.unchanged})
        return
    for kind, kind_rows in rows.items():
        if kind_rows:
            print_rows(f"{kind} ({len(kind_rows)})", kind_rows)
    console.print(
        f"{len(changes.inserts)} to insert, {len(changes.modifies)} to modify, "
        f"{len(changes.deletes)} to delete, {changes.unchanged} unchanged"
    )


def limit_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--limit N: rows shown per list (counts always cover everything)."""
    return click.option(
        "--limit",
        default=20,
        show_default=True,
        type=click.IntRange(min=1),
        help="Rows shown per list (entries, flips); counts always cover everything.",
    )(f)


def print_dry_run(run: PolicyDryRun, as_json: bool, limit: int) -> None:
    """A policy dry run: writes per host (hosts alike on one row), the single-view writes (the
    first `limit` per kind), and the reachability flips (the first `limit`), with totals."""
    from controlplane.render import flip_row, host_rows

    reach = run.reachability
    overall = run.overall
    labels = Labels(rule_names=dict(run.rule_names))
    entries = {
        kind: entry_rows(items[:limit], labels)
        for kind, items in (
            ("insert", overall.inserts),
            ("modify", overall.modifies),
            ("delete", overall.deletes),
        )
    }
    to_allow = sum(1 for f in reach.flips if f.after == "allow")
    if as_json:
        emit_json(
            {
                "rules_changed": run.rules_changed,
                "hosts": [
                    {"host": h.host, "tables": h.counts(), "writes": len(h.diff), "exact": h.exact}
                    for h in run.hosts
                ],
                # The single-view writes as `print_diff` gives them (first `limit` of each kind).
                **entries,
                "unchanged": overall.unchanged,
                "writes": {
                    "insert": len(overall.inserts),
                    "modify": len(overall.modifies),
                    "delete": len(overall.deletes),
                },
                "reachability": {
                    "total": reach.total,
                    "by_host": {str(h): n for h, n in sorted(reach.by_host.items(), key=str)},
                    "complete": reach.complete,
                    "shown": len(reach.flips),
                    "flips": [flip_row(f) for f in reach.flips],
                },
            }
        )
        return
    changed = ", ".join(run.rules_changed[:limit]) or "none"
    more = len(run.rules_changed) - limit
    console.print(
        f"rules changed ({len(run.rules_changed)}): {changed}"
        + (f" (+{more})" if more > 0 else ""),
        highlight=False,
    )
    host_table = host_rows(run.hosts)
    shown_hosts = host_table[:limit]
    print_rows(f"writes per host ({len(run.hosts)} hosts)", shown_hosts)
    if len(host_table) > limit:
        console.print(f"... {len(host_table) - limit} more rows (--limit)")
    derived = sum(1 for h in run.hosts if not h.exact)
    if derived:
        console.print(
            f"{derived} hosts derived from the single view (more distinct applied-to rule sets "
            "than compiles allowed): their ACL rows are their rules', class codes may differ"
        )
    totals = {
        "insert": len(overall.inserts),
        "modify": len(overall.modifies),
        "delete": len(overall.deletes),
    }
    for kind, kind_rows in entries.items():
        total = totals[kind]
        if kind_rows:
            print_rows(f"{kind} ({len(kind_rows)} of {total}, single view)", kind_rows)
    if reach.flips:
        print_rows(
            f"reachability flips ({len(reach.flips)} of {reach.total})",
            [flip_row(f) for f in reach.flips],
            ["src", "dst", "service", "host", "before", "before_rule", "after", "after_rule"],
        )
    hosts_hit = len(reach.by_host)
    note = "" if reach.complete else " (evaluation budget ran out: a lower bound)"
    console.print(
        f"{len(overall.inserts)} to insert, {len(overall.modifies)} to modify, "
        f"{len(overall.deletes)} to delete (single view); {reach.total} workload pair/service/host "
        f"verdicts flip on {hosts_hit} hosts{note}"
        + (f"; of those shown, {to_allow} become allowed" if reach.flips else ""),
        highlight=False,
    )


def target_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--target HOST:PORT and --device-id."""
    f = click.option("--device-id", default=1, show_default=True, type=int)(f)
    return click.option(
        "--target",
        "target",
        default=DEFAULT_TARGET,
        show_default=True,
        envvar="NICFW_TARGET_ADDR",
        metavar="HOST:PORT",
        help="P4Runtime address of the target.",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def compile_file(path: Path, options: CompileOptions | None = None) -> CompiledPolicy:
    """Load, resolve and compile a policy file."""
    return Compiler(options or CompileOptions()).compile(resolve(load_policy_file(path)))


def labels_for(policy: Path | None) -> Labels:
    """Group and rule names for rendering, from a policy file when one is given."""
    if policy is None:
        return Labels()
    return labels_of(compile_file(policy))


def labels_of(compiled: CompiledPolicy) -> Labels:
    """Group and rule names of a compiled policy, for rendering."""
    encodings = {"src_class": compiled.src_class.encoding, "dst_class": compiled.dst_class.encoding}

    def class_names(field: str, value: int, mask: int) -> str:
        enc = encodings.get(field)
        return enc.label(value, mask) if enc else f"{value:#x}&&&{mask:#x}"

    return Labels(class_names=class_names, rule_names=dict(compiled.rule_names))


@click.group()
@click.version_option(package_name="nicfw")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """nicfw: a distributed firewall whose rules run in hardware."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- demo and daemon ------------------------------------------------------------------------


@cli.command()
@json_option
def demo(as_json: bool) -> None:
    """Run the demo: software target, demo policy, demo traffic; print verdicts and tables."""
    from controlplane.demo import run_demo

    with failures():
        result = run_demo()
    labels = labels_of(result["compiled"])
    rows = entry_rows(result["entries"], labels, result["counters"])
    if as_json:
        emit_json(
            {k: v for k, v in result.items() if k not in ("entries", "counters", "compiled")}
            | {"entries": rows}
        )
        return
    sync = result["sync"]
    console.print(
        f"[bold]policy applied[/bold]: {sync['inserted']} entries inserted in "
        f"{sync['total_s'] * 1000:.1f} ms; entries per table {result['compile']['entries']}; "
        f"ACL entries per rule {result['compile']['acl_entries_per_rule']:.2f}"
    )
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    print_rows("demo traffic", result["traffic"], ["packet", "ingress_port", "verdict", "rule"])
    print_rows("tables (read back over P4Runtime)", rows)
    print_rows(
        "hits per rule",
        [{"rule": k, "packets": v} for k, v in result["rule_hits"].items()],
    )
    if result["target_drops"]:
        console.print(f"target drops by reason: {result['target_drops']}")


@cli.command()
@click.option(
    "--target",
    "target",
    default=None,
    metavar="HOST:PORT",
    help="P4Runtime address of the target; none: start the embedded software target.",
)
@click.option("--device-id", default=1, show_default=True, type=int)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file to enforce and watch (default: the demo policy).",
)
@click.option(
    "-i",
    "--interface",
    "interfaces",
    multiple=True,
    metavar="PORT@IFACE",
    help="Embedded target only: attach a pipeline port to an interface.",
)
@click.option(
    "--device-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Target device config to push with P4Info (BMv2: the p4c JSON).",
)
@click.option("--election-id", default=10, show_default=True, type=int)
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=float,
    help="Seconds between checks of the policy file.",
)
@click.option("--once", is_flag=True, help="Apply the policy once and exit.")
@click.option(
    "--control-socket",
    default=None,
    metavar="PATH",
    help="The local API socket (`nicfw tag ...`); default $NICFW_CONTROL_SOCKET or "
    "/run/nicfw/control.sock; 'none' turns it off.",
)
@click.option(
    "--service-port",
    type=click.IntRange(1, 254),
    help="Stateful mode: the pipeline port of the firewall service (allows are offloaded).",
)
@click.option("--service-iface", metavar="IFACE", help="The interface the fast path polls.")
@click.option(
    "--fastpath",
    type=click.Choice(["dpdk", "numba", "auto"]),
    default="auto",
    show_default=True,
    help="The firewall service backend (auto: dpdk when built).",
)
@click.option("--fastpath-ctrl", metavar="PATH", help="Attach to a running fast path's socket.")
@click.option(
    "--flow-idle-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Seconds before an idle offloaded flow leaves flow_cache.",
)
@click.option(
    "--flows-db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where flow records are kept for `nicfw flows` (default $NICFW_FLOWS_DB, else "
    "/run/nicfw/flows.sqlite).",
)
@click.option(
    "--drop-offload",
    default=1024,
    show_default=True,
    type=click.IntRange(min=0),
    help="Stateful mode: flow-cache drop entries for denied flows at most at once (0: none).",
)
@click.option(
    "--drop-offload-after",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Packets of a denied 5-tuple the service drops before the target drops the rest.",
)
@click.option(
    "--rule-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where logged and audit hits are appended as JSON lines (default $NICFW_RULE_LOG, "
    "else rule-log.jsonl in $NICFW_STATE_DIR or /var/lib/nicfw).",
)
@click.option(
    "--rule-log-max-mb",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="The rule log rotates (FILE.1, FILE.2, ...) when it grows past this many MiB.",
)
@click.option(
    "--rule-log-backups",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rotated rule log files kept.",
)
def run(
    target: str | None,
    device_id: int,
    policy_path: Path | None,
    interfaces: tuple[str, ...],
    device_config: Path | None,
    election_id: int,
    interval: float,
    once: bool,
    service_port: int | None,
    service_iface: str | None,
    fastpath: Literal["dpdk", "numba", "auto"],
    fastpath_ctrl: str | None,
    flow_idle_timeout: float,
    flows_db: Path | None,
    control_socket: str | None,
    drop_offload: int,
    drop_offload_after: int,
    rule_log: Path | None,
    rule_log_max_mb: int,
    rule_log_backups: int,
) -> None:
    """The daemon: program the target from the policy and follow the policy file's changes."""
    from controlplane.api import DEFAULT_SOCKET
    from controlplane.daemon import Daemon, DaemonOptions
    from controlplane.flows import DEFAULT_FLOWS_DB

    options = DaemonOptions(
        target=target,
        device_id=device_id,
        policy_path=policy_path,
        interfaces=interfaces,
        device_config=device_config.read_bytes() if device_config else b"",
        election_id=election_id,
        interval=interval,
        service_port=service_port,
        service_iface=service_iface,
        fastpath=fastpath,
        fastpath_ctrl=fastpath_ctrl,
        flow_idle_timeout=flow_idle_timeout,
        flows_db=flows_db or DEFAULT_FLOWS_DB,
        control_socket=None if control_socket == "none" else control_socket or DEFAULT_SOCKET,
        drop_offload=drop_offload,
        drop_offload_after=drop_offload_after,
        rule_log=rule_log,
        rule_log_max_bytes=rule_log_max_mb * 1024 * 1024,
        rule_log_backups=rule_log_backups,
    )
    with failures():
        Daemon(options).run(once=once)


# -- policy ---------------------------------------------------------------------------------


@cli.group()
def policy() -> None:
    """Validate, diff and apply policy files."""


@policy.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def policy_validate(path: Path, as_json: bool) -> None:
    """Check a policy file: errors (exit 1), and warnings for shadowed, redundant, empty rules."""
    from controlplane.policy import analyze

    try:
        pol = load_policy_file(path)
    except PolicyError as exc:
        if as_json:
            emit_json({"ok": False, "errors": [p.format(str(path)) for p in exc.problems]})
            sys.exit(1)
        raise Failure(str(exc)) from None
    resolved = resolve(pol)
    warnings = analyze(pol, resolved)
    stats = Compiler(CompileOptions()).compile(resolved).stats
    if as_json:
        emit_json(
            {
                "ok": True,
                "warnings": [w.format(str(path)) for w in warnings],
                "rules": stats.rules,
                "entries": dict(stats.entries),
                "acl_entries_per_rule": stats.expansion,
            }
        )
        return
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w.format(str(path))}", highlight=False)
    console.print(
        f"{path}: ok, {stats.rules} rules -> {sum(stats.entries.values())} entries "
        f"({stats.expansion:.2f} ACL entries per rule)",
        highlight=False,
    )


def _connect(target: str, device_id: int, write: bool, election_id: int = 1) -> P4Client:
    schema = P4Schema.load()
    return P4Client.connect(
        target, device_id, election_id=election_id if write else None, schema=schema
    )


service_port_option = click.option(
    "--service-port",
    type=click.IntRange(1, 254),
    help="Compile as a daemon in stateful mode does (`nicfw run --service-port`): allows and "
    "misses to the service, ICMP errors to it first.",
)


def _compile_options(service_port: int | None) -> CompileOptions:
    if service_port is None:
        return CompileOptions()
    return CompileOptions(stateful=True, service_port=service_port)


@policy.command("diff")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@target_option
@service_port_option
@click.option(
    "--enforced",
    "enforced",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Dry run against this enforced policy file instead of the target: writes per host "
    "and the workload pairs whose reachability flips.",
)
@limit_option
@json_option
def policy_diff(
    path: Path,
    target: str,
    device_id: int,
    service_port: int | None,
    enforced: Path | None,
    limit: int,
    as_json: bool,
) -> None:
    """What applying PATH would write to the target (read from the target, nothing written);
    with --enforced, what it would change on every host, reachability included."""
    from controlplane.agent import HostAgent

    if enforced is not None:
        from controlplane.revisions import dry_run_texts

        with failures():
            run = dry_run_texts(
                enforced.read_text(encoding="utf-8"),
                str(enforced),
                path.read_text(encoding="utf-8"),
                str(path),
                limit,
                _compile_options(service_port),
            )
        print_dry_run(run, as_json, limit)
        return
    with failures():
        pol = load_policy_file(path)  # a bad file fails here, before reaching the target
        client = _connect(target, device_id, write=False)
        try:
            assert client.schema is not None
            agent = HostAgent(client, client.schema, _compile_options(service_port))
            changes = agent.target_diff(pol)
        finally:
            client.close()
    labels = labels_for(path)
    print_diff(changes, labels, as_json)


@policy.command("apply")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@target_option
@service_port_option
@click.option(
    "--election-id",
    default=20,
    show_default=True,
    type=int,
    help="Election id to arbitrate with (must be the highest to write).",
)
@json_option
def policy_apply(
    path: Path,
    target: str,
    device_id: int,
    service_port: int | None,
    election_id: int,
    as_json: bool,
) -> None:
    """Enforce PATH on the target now: only the entries that differ are written."""
    from controlplane.agent import HostAgent

    with failures():
        pol = load_policy_file(path)  # a bad file fails here, before touching the target
        client = _connect(target, device_id, write=True, election_id=election_id)
        try:
            assert client.schema is not None
            agent = HostAgent(client, client.schema, _compile_options(service_port))
            with _progress("writing entries") as progress:
                result = agent.apply(pol, progress)
        finally:
            client.close()
    if as_json:
        emit_json(result.report.as_dict())
        return
    r = result.report
    console.print(
        f"applied {path}: {r.inserted} inserted, {r.modified} modified, {r.deleted} deleted, "
        f"{r.unchanged} unchanged in {r.total_s * 1000:.1f} ms",
        highlight=False,
    )


def _store(state_dir: Path | None) -> Any:
    from controlplane.revisions import DEFAULT_STATE_DIR, RevisionStore

    return RevisionStore(state_dir or DEFAULT_STATE_DIR)


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where drafts and revisions live (default $NICFW_STATE_DIR/policy or "
    "/var/lib/nicfw/policy).",
)
enforced_option = click.option(
    "--enforced",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The enforced policy file (the one `nicfw run --policy` watches).",
)


@policy.group("draft")
def policy_draft() -> None:
    """Staged changes: save, list and diff drafts before publishing them."""


@policy_draft.command("save")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@state_dir_option
def draft_save(name: str, path: Path, state_dir: Path | None) -> None:
    """Check PATH and keep it as draft NAME."""
    from controlplane.revisions import RevisionError

    with failures():
        try:
            saved = _store(state_dir).save_draft(name, path.read_text(encoding="utf-8"))
        except RevisionError as exc:
            raise Failure(str(exc)) from None
    console.print(f"draft {name} saved ({saved})", highlight=False)


@policy_draft.command("ls")
@state_dir_option
@json_option
def draft_ls(state_dir: Path | None, as_json: bool) -> None:
    """The saved drafts."""
    names = _store(state_dir).drafts()
    if as_json:
        emit_json(names)
    else:
        console.print("\n".join(names) or "no drafts", highlight=False)


@policy_draft.command("diff")
@click.argument("name")
@enforced_option
@state_dir_option
@service_port_option
@limit_option
@json_option
def draft_diff(
    name: str,
    enforced: Path,
    state_dir: Path | None,
    service_port: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """What publishing draft NAME over the enforced policy would change: writes per host, and
    the workload pairs whose reachability flips (service, rule before and after)."""
    from controlplane.revisions import RevisionError

    with failures():
        try:
            run = _store(state_dir).dry_run(name, enforced, limit, _compile_options(service_port))
        except RevisionError as exc:
            raise Failure(str(exc)) from None
    print_dry_run(run, as_json, limit)


@policy.command("publish")
@click.argument("name")
@enforced_option
@state_dir_option
def policy_publish(name: str, enforced: Path, state_dir: Path | None) -> None:
    """Make draft NAME the enforced policy, atomically, as a new revision."""
    from controlplane.revisions import RevisionError

    with failures():
        try:
            rev = _store(state_dir).publish(name, enforced)
        except RevisionError as exc:
            raise Failure(str(exc)) from None
    console.print(f"published draft {name} as revision {rev.number} to {enforced}", highlight=False)


@policy.command("history")
@state_dir_option
@json_option
def policy_history(state_dir: Path | None, as_json: bool) -> None:
    """Every published revision."""
    revs = _store(state_dir).history()
    rows = [
        {
            "revision": r.number,
            "published": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.published_at)),
            "source": r.source,
            "sha256": r.sha256[:12],
        }
        for r in revs
    ]
    if as_json:
        emit_json([r.__dict__ for r in revs])
    else:
        print_rows("published revisions", rows)


@policy.command("revert")
@click.argument("revision", type=int)
@enforced_option
@state_dir_option
def policy_revert(revision: int, enforced: Path, state_dir: Path | None) -> None:
    """Enforce an earlier published REVISION again (recorded as a new revision)."""
    from controlplane.revisions import RevisionError

    with failures():
        try:
            rev = _store(state_dir).revert(revision, enforced)
        except RevisionError as exc:
            raise Failure(str(exc)) from None
    console.print(f"revision {revision} enforced again as revision {rev.number}", highlight=False)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for long writes (silent when not a terminal)."""
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- inspection -----------------------------------------------------------------------------


@cli.command()
@click.argument("table", required=False)
@target_option
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Name groups and rules from this policy.",
)
@json_option
def tables(
    table: str | None, target: str, device_id: int, policy_path: Path | None, as_json: bool
) -> None:
    """Entries read from the target, as readable rows (TABLE: name or alias; default all)."""
    with failures():
        client = _connect(target, device_id, write=False)
        try:
            assert client.schema is not None
            name = client.schema.table(table).name if table else None
            entries = client.read_table_entries(client.schema, name)
        finally:
            client.close()
        rows = entry_rows(entries, labels_for(policy_path))
    if as_json:
        emit_json(rows)
    else:
        print_rows(f"{len(rows)} entries", rows)


@cli.command()
@target_option
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Name rules from this policy.",
)
@click.option(
    "--by",
    type=click.Choice(["rule", "instance"]),
    default=None,
    help="Totals per rule (across its template instances) or per template instance "
    "(across its rules); default: one row per rule id.",
)
@json_option
def counters(
    target: str, device_id: int, policy_path: Path | None, by: str | None, as_json: bool
) -> None:
    """Hits per rule and template instance, summed over each rule's ACL entries; audit rules
    count in acl_audit (mode audit)."""
    from controlplane.render import counter_rows
    from offload.names import ACL_AUDIT

    with failures():
        client = _connect(target, device_id, write=False)
        try:
            assert client.schema is not None
            counts = client.read_direct_counters(client.schema)
            # A target running an older program has no acl_audit: no audit rules to show.
            has_audit = any(t.name == ACL_AUDIT for t in client.schema.iter_tables())
            audit = client.read_direct_counters(client.schema, ACL_AUDIT) if has_audit else {}
        finally:
            client.close()
        names = labels_for(policy_path).rule_names
    hits = [(rid, "enforced", c.packets, c.bytes) for rid, c in hits_by_param(counts).items()]
    hits += [(rid, "audit", c.packets, c.bytes) for rid, c in hits_by_param(audit).items()]
    rows = counter_rows(hits, names, by)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        for key in ("rule_ids", "rules", "instances"):
            if key in row:
                row[key] = ", ".join(map(str, row[key]))
    title = {None: "hits per rule", "rule": "hits per rule (instances summed)"}.get(
        by, "hits per template instance (rules summed)"
    )
    print_rows(title, rows)


@cli.command()
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The flow records file of `nicfw run --service-port` (default as `run`'s).",
)
@click.option("--rule", default=None, help="Only flows decided by this rule (name or id).")
@click.option("--active", is_flag=True, help="Only flows that have not ended.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="The newest N flows.")
@json_option
def flows(
    db: Path | None, rule: str | None, active: bool, limit: int | None, as_json: bool
) -> None:
    """Connections the firewall service decided, and the rule that decided each."""
    from controlplane.flows import DEFAULT_FLOWS_DB, read_flows_file

    with failures():
        found = read_flows_file(db or DEFAULT_FLOWS_DB, rule, active, limit)
    rows = [f.to_dict() for f in found]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        r["rule"] = r["rule"] or ("(default)" if not r["rule_id"] else "")
    columns = ["src", "sport", "dst", "dport", "proto", "verdict", "rule", "rule_id", "state"]
    print_rows("flows", rows, [*columns, "offloaded", "packets"])


# -- target and benchmarks ------------------------------------------------------------------


def _mount_target() -> None:
    from controlplane.cli_log import log
    from controlplane.cli_service import service
    from controlplane.cli_tags import tag
    from offload.target.cli import target_command

    cli.add_command(target_command, "target")
    cli.add_command(tag, "tag")
    cli.add_command(log, "log")
    cli.add_command(service, "service")


_mount_target()


@cli.group()
def bench() -> None:
    """Benchmarks (each prints a table; --json for figures)."""


def _bench_command(name: str, module: str, help_text: str) -> None:
    @bench.command(
        name,
        help=help_text,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def command(ctx: click.Context) -> None:
        import importlib

        root = Path(__file__).resolve().parent.parent
        if (root / "bench").is_dir() and str(root) not in sys.path:
            sys.path.insert(0, str(root))  # bench/ lives beside the packages in a checkout
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise Failure(f"{module} is not available: run benchmarks from a checkout") from exc
        code = mod.main(list(ctx.args))
        sys.exit(code or 0)


_bench_command(
    "compile",
    "bench.bench_compile",
    "Compile 10K rules / 1K groups / 10K workloads; a one-rule change; sync 50K entries.",
)
_bench_command(
    "target", "bench.bench_target", "P4Runtime write rate and packet rate of the target."
)
_bench_command("sync", "bench.bench_sync", "Full and incremental sync to the software target.")
_bench_command(
    "service",
    "bench.bench_service",
    "New connections/s through the service with offload; resimulation of 100K flows (root).",
)
_bench_command(
    "tags",
    "bench.bench_tags",
    "Tag change -> diff time and writes at 10K workloads / 1K groups / 10K rules; 50-VM instance.",
)
_bench_command(
    "dryrun",
    "bench.bench_dryrun",
    "Policy dry run (per-host writes, reachability flips): one-rule edits at 10K workloads.",
)
_bench_command(
    "fastpath",
    "bench.bench_fastpath",
    "Established-flow (conntrack hit) Mpps: DPDK datapath beside the numba service.",
)
_bench_command(
    "pyservice", "bench.bench_pyservice", "The numba service: rule loads, updates, Mpps."
)
_bench_command(
    "classify",
    "bench.bench_classify",
    "Classification on ClassBench rules: numba vs rte_acl (--rules, --trace, --verify).",
)


def main() -> None:
    """Console-script entry point."""
    cli()
