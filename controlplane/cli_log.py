"""`nicfw log`: what logged rules and audit rules saw, from a running daemon.

nicfw log                  the last records, one line each
nicfw log --audit          audit hits only
nicfw log --json           one JSON object per line
nicfw log --follow         keep printing new records until interrupted

`controlplane.cli` mounts the command.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from controlplane.api import ApiError, log_recent
from controlplane.cli_common import socket_option
from controlplane.rulelog import PROTOCOLS

POLL_S = 0.5


def format_record(r: dict[str, Any]) -> str:
    """One record as a human-readable line."""
    when = datetime.fromtimestamp(r["time"]).strftime("%Y-%m-%d %H:%M:%S")
    proto = PROTOCOLS.get(r["proto"], str(r["proto"]))
    where = f"{r['src']}:{r['sport']} -> {r['dst']}:{r['dport']} {proto}"
    if r["audit"]:
        return (
            f"{when} AUDIT {r['audit_rule']} [{r['audit_section'] or '-'}] would match {where}; "
            f"enforced: {r['verdict']} by {r['rule']}"
        )
    return f"{when} {r['verdict'].upper()} {r['rule']} [{r['section'] or '-'}] {where}"


@click.command("log")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--audit", is_flag=True, help="Only audit-rule hits.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@socket_option
@click.option("--count", type=click.IntRange(min=1), hidden=True, help="Stop after N records.")
def log(
    follow: bool, as_json: bool, audit: bool, limit: int, socket_path: str, count: int | None
) -> None:
    """Hits of rules with `log: true` and of audit rules (rule, section, verdict, 5-tuple)."""
    since, shown = 0, 0
    while True:
        try:
            reply = log_recent(socket_path, since, audit, limit)
        except ApiError as exc:
            raise click.ClickException(str(exc)) from None
        for record in reply["records"]:
            click.echo(json.dumps(record, sort_keys=True) if as_json else format_record(record))
            shown += 1
            if count is not None and shown >= count:
                return
        since = max(since, int(reply["last"]))
        if not follow:
            return
        try:
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            return
