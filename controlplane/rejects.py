"""Answers to reject rules when the pipeline has no service port: RST / ICMP via packet-out.

A reject rule sends its packet to the controller as a packet-in with reason REJECT. The
response is the one the firewall service builds (`dpdk_app.pyservice.reject`, a port of the C
fast path's reject.c), so both paths answer alike: a TCP RST, or an ICMP/ICMPv6
"administratively prohibited", never to a RST, an ICMP error, a fragment or a broadcast.
"""

from __future__ import annotations

import logging
import time

from offload.names import Reason
from offload.packetio import PacketError, PacketIn, decapsulate, encapsulate

log = logging.getLogger(__name__)


class RejectResponder:
    """Builds reject responses for REJECT packet-ins, rate limited like the fast path."""

    def __init__(self, per_second: float = 100.0) -> None:
        self.per_second = per_second
        self._allowance = per_second
        self._last = time.monotonic()
        self.sent = 0
        self.suppressed = 0

    def _allowed(self) -> bool:
        now = time.monotonic()
        self._allowance = min(
            self.per_second, self._allowance + (now - self._last) * self.per_second
        )
        self._last = now
        if self._allowance < 1.0:
            self.suppressed += 1
            return False
        self._allowance -= 1.0
        return True

    def response(self, packet: PacketIn) -> tuple[bytes, int] | None:
        """(frame, egress port) to send back for a REJECT packet-in, or None when none is due."""
        from dpdk_app.packets import PARSE_OK, parse_frames
        from dpdk_app.pyservice.reject import build_reject

        header = packet.service_header
        if header.reason != Reason.REJECT or not self._allowed():
            return None
        framed = encapsulate(packet.payload, header)
        hdrs, info = parse_frames([framed])
        if len(info) != 1 or int(info[0]["drop"]) != PARSE_OK:
            return None  # malformed: nothing is answered
        resp = build_reject(framed, info[0], int(hdrs[0]["proto"]), header.rule_id)
        if resp is None:
            return None
        try:
            out = decapsulate(resp)
        except PacketError:
            log.warning("reject response could not be decapsulated; not sent")
            return None
        self.sent += 1
        return out.inner, out.header.egress_port
