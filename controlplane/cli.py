"""The `nicfw` command line: thin click commands over the library."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="nicfw")
def cli() -> None:
    """nicfw: a distributed firewall whose rules run in hardware."""


def main() -> None:
    """Console-script entry point."""
    cli()
