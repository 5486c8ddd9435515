"""`nicfw run`: the host daemon.

It connects to the host's target as the primary controller (or starts the embedded software
target, as a child process), makes sure the target runs firewall.p4, enforces the policy file
and follows its changes: each change is checked first, and only a good policy reaches the
target, as a diff.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from controlplane.agent import HostAgent
from controlplane.api import DEFAULT_SOCKET, ControlServer, TagService
from controlplane.policy import Policy, PolicyError, demo_policy_text, load_policy, load_policy_file
from controlplane.rejects import RejectResponder
from controlplane.rulelog import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    DIGEST_CONFIG,
    RuleLog,
    default_log_path,
)
from controlplane.service import Backend, ServiceController, ServiceOptions
from offload.compiler import CompileOptions
from offload.compiler.logrules import RuleInfo
from offload.names import LOG_DIGEST, Reason
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.packetio import PacketIn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon runs."""

    target: str | None = None  # None: start the embedded software target
    device_id: int = 1
    policy_path: Path | None = None  # None: the demo policy
    interfaces: tuple[str, ...] = ()  # embedded target: PORT@IFACE
    embedded_address: str = "127.0.0.1:9559"  # where the embedded target listens (port 0: any)
    device_config: bytes = b""
    election_id: int = 10
    control_socket: str | None = DEFAULT_SOCKET  # the local API (`nicfw tag ...`); None: off
    interval: float = 0.5
    service_port: int | None = None  # stateful mode: the pipeline's service port
    service_iface: str | None = None  # the interface the fast path polls (the port's peer)
    fastpath: Backend = "auto"
    fastpath_ctrl: str | None = None  # attach to a running fast path instead
    flow_idle_timeout: float = 60.0
    flows_db: Path | None = None
    rule_log: Path | None = None  # JSON lines of logged/audit hits; None: default_log_path()
    rule_log_max_bytes: int = DEFAULT_MAX_BYTES  # the file rotates beyond this size
    rule_log_backups: int = DEFAULT_BACKUPS  # rotated files kept
    drop_offload: int = 1024  # stateful mode: flow_drop entries for denied flows, at most
    drop_offload_after: int = 2  # drop records of a 5-tuple before it gets one


def same_pipeline(client: P4Client, schema: P4Schema) -> bool:
    """Whether the target already runs this P4Info (then its entries are kept on restart)."""
    current = client.get_pipeline(response_type=0)
    return current.p4info is not None and current.p4info == schema.p4info


class PolicyWatcher:
    """Notices a changed policy file by modification time and size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """True once per change of the file."""
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return stamp is not None


class Daemon:
    """The control-plane daemon of one host."""

    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.schema = P4Schema.load()
        self.stop_event = threading.Event()
        self.agent: HostAgent | None = None
        self.service: ServiceController | None = None
        self.client: P4Client | None = None
        self.tags: TagService | None = None
        self.rejects = RejectResponder()
        self.address = options.target or ""
        self.rule_log = RuleLog(
            self._rule_info,
            options.rule_log or default_log_path(),
            max_bytes=options.rule_log_max_bytes,
            backups=options.rule_log_backups,
        )

    def _rule_info(self) -> dict[int, RuleInfo]:
        return self.agent.rule_info() if self.agent is not None else {}

    def _enable_rule_log(self, client: P4Client) -> None:
        """Receive log digests (logged rules, audit hits); the daemon works on without."""
        client.on_digest = self.rule_log.handle
        try:
            client.configure_digest(self.schema, LOG_DIGEST, **DIGEST_CONFIG)
        except Exception as exc:  # e.g. a target whose P4Info predates the digest
            log.warning("rule log unavailable: cannot configure digest %s: %s", LOG_DIGEST, exc)

    def _policy(self) -> Policy:
        if self.options.policy_path is None:
            return load_policy(demo_policy_text(), "demo/policy.yaml")
        return load_policy_file(self.options.policy_path)

    @contextmanager
    def _target(self) -> Iterator[str]:
        if self.options.target is not None:
            yield self.options.target
            return
        from offload.target.child import target_process

        # A child process: the target's Python pipeline does not share this interpreter's lock
        # with the daemon (a full sync runs at the speed `nicfw bench sync` shows for it).
        with target_process(
            self.options.embedded_address, self.options.device_id, self.options.interfaces
        ) as child:
            log.info(
                "embedded software target (pid %d) listening on %s", child.proc.pid, child.address
            )
            yield child.address

    def _service_options(self) -> ServiceOptions:
        o = self.options
        assert o.service_port is not None
        return ServiceOptions(
            service_port=o.service_port,
            iface=o.service_iface,
            backend=o.fastpath,
            ctrl_path=o.fastpath_ctrl,
            idle_timeout_s=o.flow_idle_timeout,
            flows_db=o.flows_db,
            drop_offload=o.drop_offload,
            drop_offload_after=o.drop_offload_after,
        )

    def on_packet_in(self, packet: PacketIn) -> None:
        """Packets the pipeline sent to the controller (no service port configured)."""
        header = packet.service_header
        log.info(
            "packet-in: reason %d, port %d, rule %d, %d bytes",
            header.reason,
            header.ingress_port,
            header.rule_id,
            len(packet.payload),
        )
        if header.reason == Reason.REJECT and self.client is not None:
            try:
                answer = self.rejects.response(packet)
                if answer is not None:
                    frame, port = answer
                    self.client.packet_out(frame, {"egress_port": port, "flags": 0})
            except Exception:  # one bad packet never stops the daemon
                log.exception("could not answer a reject")

    def run(self, once: bool = False) -> None:
        """Program the target and follow the policy until stopped (or once)."""
        policy = self._policy()  # a bad policy stops the daemon before it touches the target
        with ExitStack() as stack:
            self.address = stack.enter_context(self._target())
            client = P4Client.connect(
                self.address,
                self.options.device_id,
                election_id=self.options.election_id,
                schema=self.schema,
                wait_for_target=True,
            )
            stack.callback(client.close)
            self.client = client
            client.on_packet_in = self.on_packet_in
            options = CompileOptions()
            if self.options.service_port is not None:
                options = CompileOptions(stateful=True, service_port=self.options.service_port)
                self.service = ServiceController(client, self.schema, self._service_options())
                self.service.start()
                stack.callback(self.service.stop)
            agent = self.agent = HostAgent(client, self.schema, options, self.service)
            if not same_pipeline(client, self.schema):
                agent.push_pipeline(self.options.device_config)
            result = agent.apply(policy)
            self._enable_rule_log(client)
            stack.callback(self.rule_log.close)
            if self.options.control_socket:
                assert agent.inventory is not None
                self.tags = TagService(agent.inventory, agent.write_inventory_change)
                self.tags.extra_ops["log.recent"] = self.rule_log.api_recent
                if self.service is not None:
                    self.tags.extra_ops["service.stats"] = self.service.api_stats
                control = ControlServer(self.options.control_socket, self.tags)
                control.start()
                stack.callback(control.stop)
            for w in result.warnings:
                log.warning("%s", w)
            print(
                f"nicfw: policy enforced on {self.address}: {result.report.inserted} inserted, "
                f"{result.report.modified} modified, {result.report.deleted} deleted",
                flush=True,
            )
            if once:
                return
            self._install_signals()
            watcher = PolicyWatcher(self.options.policy_path) if self.options.policy_path else None
            while not self.stop_event.wait(self.options.interval):
                if watcher is not None and watcher.changed():
                    self.reload()

    def reload(self) -> None:
        """Re-read the policy file; enforce it if it is good, keep the old one otherwise."""
        assert self.agent is not None
        try:
            policy = self._policy()
        except PolicyError as exc:
            log.error("policy change rejected, keeping the enforced policy:\n%s", exc)
            return
        try:
            with self._tags_locked():
                result = self.agent.apply(policy)  # dynamic tags carry over to the new policy
                if self.tags is not None and self.agent.inventory is not None:
                    self.tags.inventory = self.agent.inventory
        except Exception as exc:  # the daemon outlives one failed write
            log.error("policy change failed on the target: %s", exc)
            return
        r = result.report
        log.warning(
            "policy change enforced: %d inserted, %d modified, %d deleted",
            r.inserted,
            r.modified,
            r.deleted,
        )
        resim = result.resimulation
        if resim is not None:
            log.warning(
                "flows resimulated in %.1f ms: %d tracked (%d removed), %d offloaded "
                "(%d removed, %d updated)",
                resim.seconds * 1e3,
                resim.fastpath_checked,
                resim.fastpath_removed,
                resim.offloaded_checked,
                resim.offloads_removed,
                resim.offloads_updated,
            )

    def _tags_locked(self) -> contextlib.AbstractContextManager[object]:
        """Hold off tag changes while the policy is replaced."""
        return self.tags.lock if self.tags is not None else contextlib.nullcontext()

    def stop(self) -> None:
        """Ask the run loop to end."""
        self.stop_event.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
