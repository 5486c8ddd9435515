"""`nicfw service`: the firewall service's counters, from a running daemon in stateful mode.

nicfw service           two tables: the controller's offloads, the fast path's own counters
nicfw service --json    both as one JSON object

`controlplane.cli` mounts the command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from controlplane.api import ApiError, service_stats
from controlplane.cli_common import socket_option


def counters_table(title: str, values: Mapping[str, Any]) -> Table:
    """A two-column table of counters, non-zero drop reasons and the rest as they come."""
    table = Table(title=title, title_justify="left")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in values.items():
        if isinstance(value, float):
            shown = f"{value:,.3f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            shown = f"{value:,}"
        else:
            shown = str(value)
        table.add_row(name, shown)
    return table


@click.command("service")
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON.")
@socket_option
def service(as_json: bool, socket_path: str) -> None:
    """Counters of the firewall service (stateful mode): offloads, denied-flow drop entries,
    offload latency, and the fast path's packets, verdicts and drops by reason."""
    try:
        reply = service_stats(socket_path)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None
    stats = {"controller": reply.get("controller", {}), "fastpath": reply.get("fastpath", {})}
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True))
        return
    console = Console()
    console.print(counters_table("controller", stats["controller"]))
    console.print(counters_table("fast path", stats["fastpath"]))
