"""Options shared by the commands that talk to a running daemon (`nicfw tag`, `log`, `service`)."""

from __future__ import annotations

import click

from controlplane.api import DEFAULT_SOCKET

socket_option = click.option(
    "--socket",
    "socket_path",
    default=DEFAULT_SOCKET,
    show_default=True,
    envvar="NICFW_CONTROL_SOCKET",
    help="The daemon's control socket.",
)
