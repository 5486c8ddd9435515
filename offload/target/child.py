"""The software target as a child process: `nicfw target` in an interpreter of its own.

In-process, the target's packet pipeline and P4Runtime server share one interpreter lock with
whoever embeds it: a daemon's full sync then runs at the speed of both together. As a child it
is what BMv2 or a SmartNIC's P4Runtime server is to the daemon, another process; its log lines
go to this process's logger, and it stops by itself if this process dies without stopping it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

log = logging.getLogger(__name__)

LISTENING = "listening on "


class TargetProcessError(OSError):
    """The child target did not start (its last log lines say why)."""


class TargetProcess:
    """A running child target: its address, and its log lines as they come."""

    def __init__(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        self.proc = proc
        self.lines = lines
        self.address = ""
        self.recent: list[str] = []

    def wait_for(self, text: str, timeout: float) -> str:
        """The first log line holding `text`; raises if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    line = None
                elif time.monotonic() < deadline:
                    continue
                else:
                    raise TargetProcessError(self._why(f"no {text!r} in {timeout:g} s")) from None
            if line is None:
                raise TargetProcessError(self._why(f"exited with {self.proc.wait()}"))
            self.recent = [*self.recent[-9:], line]
            if text in line:
                return line

    def _why(self, what: str) -> str:
        tail = "; ".join(self.recent[-3:])
        return f"the software target {what}" + (f": {tail}" if tail else "")


@contextmanager
def target_process(
    address: str = "127.0.0.1:9559",
    device_id: int = 1,
    interfaces: Sequence[str] = (),
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[TargetProcess]:
    """Start `python -m offload.target` listening on `address` (port 0: a free one), with the
    PORT@IFACE `interfaces`; yields it once it listens, stops it on exit."""
    command = [sys.executable, "-m", "offload.target", "--grpc-server-addr", address]
    command += ["--device-id", str(device_id), "--exit-with", str(os.getpid()), *extra_args]
    for spec in interfaces:
        command += ["-i", spec]
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # Kept for `wait_for` (bounded: a long-lived child's later lines are only logged).
    lines: queue.Queue[str | None] = queue.Queue(maxsize=1000)
    stream = proc.stderr
    assert stream is not None

    def pump() -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            log.info("target: %s", line)
            with contextlib.suppress(queue.Full):
                lines.put_nowait(line)
        with contextlib.suppress(queue.Full):
            lines.put_nowait(None)  # (if full, `wait_for` sees the exit by polling)

    threading.Thread(target=pump, name="nicfw-target-log", daemon=True).start()
    child = TargetProcess(proc, lines)
    try:
        child.address = child.wait_for(LISTENING, timeout).rsplit(LISTENING, 1)[1].strip()
        yield child
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
