"""The service process: command line, control channel and the main loop.

The command line is nicfw-fastpath's (`<EAL args> -- --ctrl PATH [options]`): of the EAL
arguments only `--vdev` matters (the port, see ports.py); the rest are accepted and ignored. One
thread does everything, like the C datapath lcore between bursts: wait on the control socket,
its clients and the port; answer complete requests; take a burst from the port, decide it, send;
run the idle-expiry scan every 10 ms; hand the record ring to the subscribers.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpdk_app.fastpath import (
    MSG_FLOW_DEL,
    MSG_FLOW_DUMP,
    MSG_FLOW_EVENT,
    MSG_FLOW_RECORDS,
    MSG_FLUSH_FLOWS,
    MSG_IDENTITY_ADD,
    MSG_IDENTITY_DEL,
    MSG_LOAD_RULES,
    MSG_PING,
    MSG_REPLY,
    MSG_RESIMULATE,
    MSG_SHUTDOWN,
    MSG_STATS,
)
from dpdk_app.layout import FLOW_DEL_DTYPE, IDENTITY_DTYPE, RULE_DTYPE
from dpdk_app.pyservice.datapath import Config, Datapath
from dpdk_app.pyservice.kernels import S_DROPPED
from dpdk_app.pyservice.ports import Port, PortError, open_port
from dpdk_app.pyservice.rules import RuleError

VERSION = "0.1.0"
MSG_MAX = 64 << 20
MAX_CLIENTS = 16
BURST = 256
SUB_BACKLOG = 4 << 20  # a subscriber this far behind stops the ring from draining
_HDR = struct.Struct("=II")
_REPLY = struct.Struct("=iI")


# --- the command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dpdk_app.pyservice",
        description="nicfw fast path, numba fallback: <EAL args> -- --ctrl PATH [options]",
    )
    p.add_argument("--ctrl", required=True, help="control socket path")
    p.add_argument("--port", type=int, default=0, help="port id (only 0 exists)")
    p.add_argument("--no-port", action="store_true", help="run without a port")
    p.add_argument("--wait-rules", action="store_true", help="no RX before the first rules")
    p.add_argument("--no-tcp-pickup", action="store_true")
    p.add_argument("--no-drop-records", action="store_true")
    p.add_argument("--idle-sleep-us", type=int, default=100)
    p.add_argument("--reject-rate", type=int, default=1000)
    p.add_argument("--max-flows", type=int, default=65536)
    p.add_argument("--max-identities", type=int, default=16384)
    for name, default in (
        ("tcp-syn", 60),
        ("tcp-est", 7440),
        ("tcp-close", 30),
        ("udp", 60),
        ("icmp", 30),
        ("other", 60),
    ):
        p.add_argument(f"--{name}-timeout", type=int, default=default)
    return p


@dataclass
class Options:
    """The parsed command line."""

    ctrl: str
    vdev: str | None
    wait_rules: bool
    idle_sleep_us: int
    cfg: Config = field(default_factory=Config)


def parse_args(argv: list[str]) -> Options:
    """Split `<EAL args> -- <app args>`; keep the first --vdev of the EAL part."""
    if "--" in argv:
        cut = argv.index("--")
        eal, app = argv[:cut], argv[cut + 1 :]
    else:
        eal, app = [], argv
    vdevs = [a.split("=", 1)[1] for a in eal if a.startswith("--vdev=")]
    vdevs += [eal[i + 1] for i, a in enumerate(eal[:-1]) if a == "--vdev"]
    if "--bench" in app:
        raise SystemExit("bench mode is not part of the numba service (see classify_bench.py)")
    ns = _parser().parse_args(app)
    limits = {
        "max_flows": (ns.max_flows, 64, 1 << 26),
        "max_identities": (ns.max_identities, 64, 1 << 24),
        "reject_rate": (ns.reject_rate, 0, 10_000_000),
        "idle_sleep_us": (ns.idle_sleep_us, 0, 1_000_000),
    }
    for name in ("tcp_syn", "tcp_est", "tcp_close", "udp", "icmp", "other"):
        limits[name] = (getattr(ns, f"{name}_timeout"), 1, 1 << 22)
    for name, (value, lo, hi) in limits.items():
        if not lo <= value <= hi:
            raise SystemExit(f"invalid value for --{name.replace('_', '-')}: {value}")
    if ns.port != 0:
        raise SystemExit(f"port {ns.port} does not exist (1 port; give a --vdev or --no-port)")
    vdev = None if ns.no_port else (vdevs[0] if vdevs else None)
    if vdev is None and not ns.no_port:
        raise SystemExit("port 0 does not exist (0 ports; give a --vdev or --no-port)")
    cfg = Config(
        tcp_pickup=not ns.no_tcp_pickup,
        drop_records=not ns.no_drop_records,
        reject_rate=ns.reject_rate,
        max_flows=ns.max_flows,
        max_identities=ns.max_identities,
        timeouts={n: limits[n][0] for n in ("tcp_syn", "tcp_est", "tcp_close", "udp", "icmp")}
        | {"other": ns.other_timeout},
    )
    return Options(ns.ctrl, vdev, ns.wait_rules, ns.idle_sleep_us, cfg)


# --- the control channel -------------------------------------------------------------------


@dataclass
class Client:
    """One control connection: input buffer, output queue, subscriber flag."""

    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    subscriber: bool = False
    closing: bool = False


def _reply(msg_type: int, status: int, count: int, body: bytes = b"") -> bytes:
    payload = _REPLY.pack(status, count) + body
    return _HDR.pack(msg_type | MSG_REPLY, len(payload)) + payload


def _error(msg_type: int, status: int, text: str) -> bytes:
    raw = text.encode()
    return _reply(msg_type, status, len(raw), raw)


class Service:
    """The control server and the main loop around one Datapath and one Port."""

    def __init__(self, opts: Options, port: Port) -> None:
        self.opts = opts
        self.port = port
        self.dp = Datapath(opts.cfg)
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, Client] = {}
        self.quit = False
        self.loads = 0
        self.load_errors = 0
        self.commands = 0
        self.listen = self._listen(opts.ctrl)

    def _listen(self, path: str) -> socket.socket:
        p = Path(path)
        if p.is_socket():
            p.unlink()  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, "listen")
        fd = self.port.fileno()
        if fd is not None:
            self.sel.register(fd, selectors.EVENT_READ, "port")
        return sock

    # -- requests -------------------------------------------------------------------------------

    def dispatch(self, c: Client, mtype: int, payload: bytes) -> bytes:
        """The reply to one complete request."""
        if mtype == MSG_PING:
            body = json.dumps(
                {
                    "version": VERSION,
                    "pid": os.getpid(),
                    "port": self.opts.vdev is not None,
                    "lcore": 0,
                    "backend": "numba",
                }
            ).encode()
            return _reply(mtype, 0, len(body), body)
        if mtype == MSG_LOAD_RULES:
            return self._load_rules(payload)
        if mtype in (MSG_IDENTITY_ADD, MSG_IDENTITY_DEL):
            size = IDENTITY_DTYPE.itemsize
            if len(payload) % size:
                return _error(
                    mtype,
                    -errno.EINVAL,
                    f"identity payload length {len(payload)} is not a multiple of {size}",
                )
            ids = np.frombuffer(payload, dtype=IDENTITY_DTYPE)
            self.commands += 1
            if mtype == MSG_IDENTITY_DEL:
                return _reply(mtype, 0, self.dp.identity_del(ids))
            n, full = self.dp.identity_add(ids)
            if full:
                return _error(
                    mtype, -errno.ENOSPC, f"identity add failed after {n} entries: table full"
                )
            return _reply(mtype, 0, n)
        if mtype == MSG_FLOW_RECORDS:
            c.subscriber = True
            return _reply(mtype, 0, 0)
        if mtype == MSG_STATS:
            body = json.dumps(self.stats()).encode()
            return _reply(mtype, 0, len(body), body)
        what = {MSG_FLUSH_FLOWS: "flush", MSG_RESIMULATE: "resimulate", MSG_FLOW_DUMP: "dump"}
        if mtype in what:
            self.commands += 1
            res = self.dp.flows(what[mtype])
            body = struct.pack("=IIQ", res.checked, 0, res.elapsed_ns) + res.records.tobytes()
            return _reply(mtype, 0, len(res.records), body)
        if mtype == MSG_FLOW_DEL:
            size = FLOW_DEL_DTYPE.itemsize
            if len(payload) % size:
                return _error(
                    mtype,
                    -errno.EINVAL,
                    f"FLOW_DEL payload length {len(payload)} is not a multiple of {size}",
                )
            self.commands += 1
            res = self.dp.flow_del(np.frombuffer(payload, dtype=FLOW_DEL_DTYPE))
            body = struct.pack("=IIQ", res.checked, 0, res.elapsed_ns) + res.records.tobytes()
            return _reply(mtype, 0, len(res.records), body)
        if mtype == MSG_SHUTDOWN:
            self.quit = True
            return _reply(mtype, 0, 0)
        return _error(mtype, -errno.ENOTSUP, f"unknown message type {mtype}")

    def _load_rules(self, payload: bytes) -> bytes:
        size = RULE_DTYPE.itemsize
        if len(payload) % size:
            self.load_errors += 1
            return _error(
                MSG_LOAD_RULES,
                -errno.EINVAL,
                f"LOAD_RULES length {len(payload)} is not a multiple of {size}",
            )
        try:
            rep = self.dp.rules.load(np.frombuffer(payload, dtype=RULE_DTYPE))
        except (RuleError, ValueError, MemoryError) as exc:
            self.load_errors += 1
            return _error(MSG_LOAD_RULES, -errno.EINVAL, str(exc))
        self.loads += 1
        self.commands += 1
        n = len(payload) // size
        print(
            f"nicfw-fastpath(numba): loaded {n} rules (generation {rep.generation}, "
            f"{rep.build_ns / 1e6:.3f} ms, +{rep.inserted} -{rep.deleted}"
            f"{', rebuilt' if rep.rebuilt else ''})",
            flush=True,
        )
        body = struct.pack("=QQQ", rep.build_ns, rep.generation, rep.memory_bytes)
        return _reply(MSG_LOAD_RULES, 0, n, body)

    def stats(self) -> dict[str, Any]:
        """STATS: the datapath's counters and the control channel's."""
        out: dict[str, Any] = self.dp.stats_dict()
        rs = self.dp.rules
        out.update(
            commands=self.commands,
            subscribers=sum(c.subscriber for c in self.clients.values()),
            rules=0 if rs.rules is None else len(rs.rules),
            generation=rs.generation,
            build_ns=rs.build_ns,
            rules_memory=rs.memory_bytes(),
            loads=self.loads,
            load_errors=self.load_errors,
            rule_inserts=rs.inserted,
            rule_deletes=rs.deleted,
            rule_rebuilds=rs.rebuilds,
            backend="numba",
        )
        return out

    # -- sockets -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listen.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_CLIENTS:
            sock.close()
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = Client(sock)
        self.sel.register(sock, selectors.EVENT_READ, "client")

    def _close(self, c: Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()

    def _read(self, c: Client) -> None:
        try:
            data = c.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        c.inbuf += data
        while len(c.inbuf) >= _HDR.size and not c.closing:
            mtype, length = _HDR.unpack_from(c.inbuf)
            if length > MSG_MAX:  # the stream cannot be resynchronized: answer and hang up
                c.out += _error(
                    mtype, -errno.EMSGSIZE, f"message length {length} exceeds {MSG_MAX}"
                )
                c.closing = True
                break
            if len(c.inbuf) < _HDR.size + length:
                break
            payload = bytes(c.inbuf[_HDR.size : _HDR.size + length])
            del c.inbuf[: _HDR.size + length]
            try:
                c.out += self.dispatch(c, mtype, payload)
            except Exception as exc:  # a bug must not take the datapath down: report it
                c.out += _error(mtype, -errno.EIO, f"internal error: {exc!r}")
        self._flush(c)

    def _flush(self, c: Client) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c)
                return
            del c.out[:n]
        if c.closing and not c.out:
            self._close(c)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        if c.sock.fileno() in self.clients:
            self.sel.modify(c.sock, want, "client")

    def _drain_records(self) -> None:
        subs = [c for c in self.clients.values() if c.subscriber]
        if not subs or any(len(c.out) > SUB_BACKLOG for c in subs):
            return  # kept in the ring for the first subscriber / until they catch up
        recs = self.dp.take_records()
        if len(recs) == 0:
            return
        for start in range(0, len(recs), 1024):
            body = recs[start : start + 1024].tobytes()
            msg = _HDR.pack(MSG_FLOW_EVENT, len(body)) + body
            for c in subs:
                c.out += msg
        for c in subs:
            self._flush(c)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SHUTDOWN or a signal."""
        next_expire = 0.0
        idle = 0
        while not self.quit:
            polling = not self.opts.wait_rules or self.dp.rules.loaded
            busy = polling and self.port.pending()
            if busy or idle == 0:
                timeout = 0.0
            else:
                timeout = min(
                    0.01, max(self.opts.idle_sleep_us, 100) * 1e-6 * (10 if idle > 64 else 1)
                )
            for key, _ev in self.sel.select(timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "client":
                    c = self.clients.get(key.fd)
                    if c is not None:
                        self._read(c) if _ev & selectors.EVENT_READ else self._flush(c)
                        if c.sock.fileno() in self.clients and _ev & selectors.EVENT_WRITE:
                            self._flush(c)
            got = 0
            if polling:
                frames = self.port.rx(BURST)
                got = len(frames)
                if frames:
                    out = self._process(frames)
                    if out:
                        sent = self.port.tx(out)
                        self.dp.counters["tx"] += sent
                        self.dp.counters["tx_fail"] += len(out) - sent
            idle = 0 if got else idle + 1
            now = time.monotonic()
            if now >= next_expire:
                self.dp.expire()
                next_expire = now + 0.01
            self._drain_records()
        for c in list(self.clients.values()):
            self._flush(c)

    def _process(self, frames: list[bytes]) -> list[bytes]:
        """dp.process, except that a failure drops the whole burst (never allows, never dies)."""
        try:
            return self.dp.process(frames)
        except Exception as exc:
            self.dp.counters["burst_errors"] = self.dp.counters.get("burst_errors", 0) + 1
            self.dp.stats[S_DROPPED] += len(frames)
            print(f"nicfw-fastpath(numba): burst of {len(frames)} dropped: {exc!r}", flush=True)
            return []

    def close(self) -> None:
        """Close every socket and remove the control socket file."""
        for c in list(self.clients.values()):
            self._close(c)
        self.sel.close()
        self.listen.close()
        self.port.close()
        with contextlib.suppress(OSError):
            os.unlink(self.opts.ctrl)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel before the control socket opens."""
    from dpdk_app.pyservice.datapath import Config as Cfg
    from dpdk_app.pyservice.warm import run_warm_up

    run_warm_up(Datapath(Cfg(max_flows=64, max_identities=64)))


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 after SHUTDOWN, SIGINT or SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        _parser().print_help()
        return 0
    opts = parse_args(args)
    try:
        port = open_port(opts.vdev)
    except PortError as exc:
        print(f"nicfw-fastpath(numba): {exc}", file=sys.stderr)
        return 1
    warm_up()
    svc = Service(opts, port)

    def stop(_sig: int, _frame: object) -> None:
        svc.quit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"nicfw-fastpath: ready ctrl={opts.ctrl} port={0 if opts.vdev else -1} lcore=0", flush=True
    )
    try:
        svc.run()
    finally:
        svc.close()
    return 0
