"""`nicfw target`: run the software target, with a command line close to simple_switch_grpc's.

    nicfw target --grpc-server-addr 127.0.0.1:9559 --device-id 1 \\
        -i 1@veth1 -i 2@veth2 --cpu-port 255
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import click

from offload.names import CPU_PORT
from offload.target import wire
from offload.target.target import SoftwareTarget


def parse_interface(value: str) -> tuple[int, str]:
    """Parse PORT@IFACE."""
    port, sep, ifname = value.partition("@")
    if not sep or not port.isdigit() or not ifname:
        raise click.BadParameter(f"{value!r} is not PORT@IFACE (e.g. 1@veth1)")
    return int(port), ifname


@click.command("target")
@click.option(
    "--grpc-server-addr",
    default="127.0.0.1:9559",
    show_default=True,
    help="Address the P4Runtime server listens on (port 0: pick a free one).",
)
@click.option("--device-id", default=1, show_default=True, type=int, help="P4Runtime device id.")
@click.option(
    "-i",
    "--interface",
    "interfaces",
    multiple=True,
    metavar="PORT@IFACE",
    help="Attach a pipeline port to a network interface (repeatable).",
)
@click.option("--cpu-port", default=CPU_PORT, show_default=True, type=int, help="CPU port.")
@click.option(
    "--pcap-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Replay DIR/port<N>_in.pcap and write DIR/port<N>_out.pcap for the other ports.",
)
@click.option(
    "--pcap-wait",
    default=0.0,
    show_default=True,
    type=float,
    help="Seconds to wait before replaying the pcap inputs (time to configure the target).",
)
@click.option(
    "--p4info",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Commit this P4Info at start, before any controller pushes one.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--exit-with",
    "exit_with",
    type=int,
    hidden=True,
    help="Stop when the process with this pid is no longer this one's parent (a child target).",
)
def target_command(
    grpc_server_addr: str,
    device_id: int,
    interfaces: tuple[str, ...],
    cpu_port: int,
    pcap_dir: Path | None,
    pcap_wait: float,
    p4info: Path | None,
    log_level: str,
    exit_with: int | None,
) -> None:
    """Run the nicfw software target: a P4Runtime server executing firewall.p4."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ports: dict[int, str] = {}
    for value in interfaces:
        port, ifname = parse_interface(value)
        if port in ports:
            raise click.BadParameter(f"port {port} is given twice", param_hint="--interface")
        ports[port] = ifname
    try:
        target = SoftwareTarget(
            grpc_server_addr, device_id, cpu_port, ports, pcap_dir=pcap_dir, p4info=p4info
        )
        address = target.start()
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"nicfw target: P4Runtime device {device_id} listening on {address}", err=True)
    wire.kernel()  # a standalone target gets bulk Writes soon: load the decoder now, not then
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if exit_with is not None:  # a parent that dies without stopping us must not leave us running
        threading.Thread(target=_watch_parent, args=(exit_with, done), daemon=True).start()
    try:
        if pcap_dir is not None:
            if done.wait(pcap_wait):
                return
            count = target.replay_pcaps()
            logging.getLogger(__name__).info("replayed %d frames from %s", count, pcap_dir)
        while not done.wait(60):
            stats = target.stats()
            logging.getLogger(__name__).debug("stats %s", stats)
    finally:
        target.stop()


def _watch_parent(parent: int, done: threading.Event) -> None:
    """Set `done` once `parent` is no longer this process's parent (it exited)."""
    while not done.wait(0.5):
        if os.getppid() != parent:
            logging.getLogger(__name__).warning("parent %d is gone: stopping", parent)
            done.set()
