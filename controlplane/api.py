"""A small local control API: JSON lines over a UNIX socket, served by the daemon.

Each request is one JSON object on a line, `{"op": "tag.add", ...}`; each reply is one JSON
object on a line, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. A bad request gets
an error reply and changes nothing. The socket file is created mode 0600: whoever can open it
can change the firewall.

Ops: `tag.add` (workload, tag, expires: seconds or null), `tag.rm` (workload, tag), `tag.ls`.
`log.recent` (since, audit, limit): the rule log's last records (`controlplane.rulelog`).
Tag changes go through an `Inventory` and the resulting diff through the `apply` callback
(which writes it to the target); expired tags are detached by the server's own timer.

    server = ControlServer(path, TagService(inventory, apply=write_to_target))
    server.start(); ...; server.stop()
    tag_add(path, "web-1", "quarantine", expires=600)          # the client side
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controlplane.inventory import Inventory, InventoryError, TagAttached, TagDetached
from offload.sync import Diff

log = logging.getLogger(__name__)

DEFAULT_SOCKET = os.environ.get("NICFW_CONTROL_SOCKET", "/run/nicfw/control.sock")
MAX_REQUEST = 64 * 1024  # bytes in one request line

Reply = dict[str, Any]


class ApiError(RuntimeError):
    """The daemon refused a request, or could not be reached."""


class TagService:
    """The tag ops over an inventory; `apply` writes each diff (under the service's lock)."""

    def __init__(self, inventory: Inventory, apply: Callable[[Diff], object]) -> None:
        self.inventory = inventory
        self.apply = apply
        self.lock = threading.Lock()
        # Ops other parts of the daemon serve on the same socket (`log.recent`: the rule log).
        self.extra_ops: dict[str, Callable[[Mapping[str, Any]], Reply]] = {}

    def handle(self, request: Mapping[str, Any]) -> Reply:
        """One request -> its reply (errors become `ok: false`)."""
        op = request.get("op")
        handler = self._ops().get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r} (one of {sorted(self._ops())})"}
        try:
            return handler(request)
        except (InventoryError, ApiError, ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": str(exc)}

    def _ops(self) -> dict[str, Callable[[Mapping[str, Any]], Reply]]:
        return {"tag.add": self._add, "tag.rm": self._rm, "tag.ls": self._ls} | self.extra_ops

    def _change(self, event: TagAttached | TagDetached, dry_run: bool = False) -> Reply:
        if dry_run:
            return self._dry_run(event)
        with self.lock:
            inv = self.inventory
            had = next(
                (g for g in inv.tags if (g.workload, g.tag) == (event.name, event.tag)), None
            )
            writes = inv.apply(event)
            try:
                self.apply(writes)
            except Exception as exc:
                # The target did not take it: put the inventory back as it was.
                undo: TagAttached | TagDetached = TagDetached(event.name, event.tag)
                if had is not None:
                    left = (
                        None if had.expires is None else max(0.001, had.expires - inv.tags.clock())
                    )
                    undo = TagAttached(event.name, event.tag, left)
                inv.apply(undo)
                raise ApiError(f"the target refused the change: {exc}") from exc
        return {
            "ok": True,
            "inserts": len(writes.inserts),
            "modifies": len(writes.modifies),
            "deletes": len(writes.deletes),
        }

    def _dry_run(self, event: TagAttached | TagDetached) -> Reply:
        """What the change would write and whom it touches; nothing is changed."""
        with self.lock:
            inv = self.inventory
            result = inv.dry_run(event)
            names = inv.compiled.rule_names
        return {
            "ok": True,
            "dry_run": True,
            "inserts": len(result.diff.inserts),
            "modifies": len(result.diff.modifies),
            "deletes": len(result.diff.deletes),
            "workloads": sorted(result.workloads),
            "groups": sorted(result.groups),
            "rules": sorted(names.get(r, str(r)) for r in result.rules),
            "reachability": [
                {
                    "src": f.src,
                    "dst": f.dst,
                    "proto": f.proto,
                    "port": f.port,
                    "before": f.before,
                    "after": f.after,
                    "host": f.host,
                }
                for f in result.reachability
            ],
            "reachability_complete": result.reachability_complete,
        }

    def _add(self, r: Mapping[str, Any]) -> Reply:
        expires = r.get("expires")
        if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, int | float)
        ):
            raise ValueError(f"expires must be a number of seconds, not {expires!r}")
        event = TagAttached(_text(r, "workload"), _text(r, "tag"), expires)
        return self._change(event, bool(r.get("dry_run")))

    def _rm(self, r: Mapping[str, Any]) -> Reply:
        return self._change(
            TagDetached(_text(r, "workload"), _text(r, "tag")), bool(r.get("dry_run"))
        )

    def _ls(self, r: Mapping[str, Any]) -> Reply:
        with self.lock:
            return {"ok": True, "tags": [g.to_json() for g in self.inventory.tags]}

    def expire(self) -> int:
        """Detach expired tags and write the diff; the number of entries written."""
        with self.lock:
            if not self.inventory.tags.expired():
                return 0
            writes = self.inventory.expire()
            self.apply(writes)
            return len(writes)


def _text(r: Mapping[str, Any], key: str) -> str:
    value = r.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for line in iter(lambda: self.rfile.readline(MAX_REQUEST + 1), b""):
            if len(line) > MAX_REQUEST:
                self._send({"ok": False, "error": "request too long"})
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as exc:
                self._send({"ok": False, "error": f"bad request: {exc}"})
                continue
            try:
                reply = self.server.service.handle(request)
            except Exception as exc:  # the daemon outlives one failed request
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.wfile.write(json.dumps(reply).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, service: TagService) -> None:
        self.service = service
        super().__init__(path, _Handler)


class ControlServer:
    """Serves a `TagService` on a UNIX socket, and detaches expired tags every `tick` s."""

    def __init__(self, path: str | Path, service: TagService, tick: float = 0.5) -> None:
        self.path = str(path)
        self.service = service
        self.tick = tick
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and serve in background threads."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = _Server(self.path, self.service)
        finally:
            os.umask(old)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="control-api", daemon=True),
            threading.Thread(target=self._expiry, name="tag-expiry", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _expiry(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.service.expire()
            except Exception:  # keep expiring later ones
                log.exception("tag expiry failed")

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str | Path, message: Mapping[str, Any], timeout: float = 10.0) -> Reply:
    """Send one request and return the reply; `ApiError` on refusal or no daemon."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            with sock.makefile("rb") as f:
                line = f.readline()
    except OSError as exc:
        raise ApiError(f"cannot reach the nicfw daemon at {path}: {exc}") from exc
    if not line:
        raise ApiError(f"the nicfw daemon at {path} closed the connection")
    reply: Reply = json.loads(line)
    if not reply.get("ok"):
        raise ApiError(str(reply.get("error", "refused")))
    return reply


def tag_add(
    path: str | Path,
    workload: str,
    tag: str,
    expires: float | None = None,
    dry_run: bool = False,
) -> Reply:
    """Attach a dynamic tag (for `expires` seconds); `dry_run`: only say what it would do."""
    message = {"op": "tag.add", "workload": workload, "tag": tag, "expires": expires}
    return request(path, message | {"dry_run": dry_run})


def tag_rm(path: str | Path, workload: str, tag: str, dry_run: bool = False) -> Reply:
    """Detach a dynamic tag; `dry_run`: only say what it would do."""
    message = {"op": "tag.rm", "workload": workload, "tag": tag, "dry_run": dry_run}
    return request(path, message)


def tag_ls(path: str | Path) -> list[dict[str, Any]]:
    """The dynamic tags: workload, tag, expires (epoch seconds or None)."""
    tags: list[dict[str, Any]] = request(path, {"op": "tag.ls"})["tags"]
    return tags


def log_recent(path: str | Path, since: int = 0, audit: bool = False, limit: int = 100) -> Reply:
    """The rule log's records after `since` (audit hits only if `audit`): records, last."""
    return request(path, {"op": "log.recent", "since": since, "audit": audit, "limit": limit})


def service_stats(path: str | Path) -> Reply:
    """The firewall service's counters: `controller` (offloads) and `fastpath` (its own)."""
    return request(path, {"op": "service.stats"})
