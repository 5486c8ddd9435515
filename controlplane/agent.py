"""The host agent: one policy in, the host's target programmed, kept in step as the policy moves.

It owns the policy tables (classification, forwarding, ACL, service config). The flow cache and
identity tables belong to the fast path and the identity module, so a policy sync never
touches them. With a service controller (stateful mode, `controlplane.service`) each applied
policy is also loaded into the firewall service, whose flows are resimulated against it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.policy import Policy, PolicyError, Problem, analyze, load_policy_file, resolve
from offload import names
from offload.compiler import CompiledPolicy, CompileOptions, Compiler
from offload.compiler.delta import diff as compiled_diff
from offload.compiler.rules import ResolvedPolicy
from offload.entries import Entry
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.sync import Diff, Progress, SyncReport, apply_diff, sync

if TYPE_CHECKING:
    from controlplane.service import ResimulationReport, ServiceController

log = logging.getLogger(__name__)

POLICY_TABLES: tuple[str, ...] = (
    names.SERVICE_CONFIG,
    names.L2_FORWARD,
    names.SRC_CLASS,
    names.DST_CLASS,
    names.ACL,
)


@dataclass
class ApplyResult:
    """What applying one policy did: the writes, the warnings, the compile figures."""

    report: SyncReport
    warnings: list[Problem] = field(default_factory=list)
    compiled: CompiledPolicy | None = None
    resimulation: ResimulationReport | None = None


def stateful_default(compiled: CompiledPolicy) -> CompiledPolicy:
    """In stateful mode an ACL miss goes to the service instead of being dropped.

    The replies of a connection the service allowed reach the pipeline before their
    flow_cache entries are written; only the service's connection state can let them
    through. Its rule set ends with the policy's default, so the rest is still dropped there.
    """
    if compiled.acl_default.action != names.ACL_DROP:
        return compiled
    default = Entry(names.ACL, (), names.ACL_SERVICE, (("rule_id", 0),), is_default=True)
    return replace(compiled, acl_default=default)


class HostAgent:
    """Compiles policies for one host and keeps its target's policy tables equal to them."""

    def __init__(
        self,
        client: P4Client,
        schema: P4Schema,
        options: CompileOptions | None = None,
        service: ServiceController | None = None,
    ) -> None:
        self.client = client
        self.schema = schema
        self.options = options or CompileOptions()
        self.service = service
        if service is not None and not self.options.stateful:
            raise ValueError("a service controller needs CompileOptions(stateful=True)")
        self.compiler = Compiler(self.options)
        self.policy: Policy | None = None
        self.compiled: CompiledPolicy | None = None
        self.lock = threading.Lock()  # one apply at a time

    def push_pipeline(self, device_config: bytes = b"") -> None:
        """Push firewall.p4 (P4Info and the target's device config) to the target."""
        self.client.set_pipeline(self.schema, device_config)

    def plan(self, policy: Policy) -> tuple[CompiledPolicy, Diff, list[Problem]]:
        """Compile `policy` and compute the writes from what is enforced now, writing nothing."""
        resolved = resolve(policy)
        warnings = analyze(policy, resolved)
        compiled = self._compile(resolved)
        return compiled, compiled_diff(self.compiled, compiled), warnings

    def _compile(self, resolved: ResolvedPolicy) -> CompiledPolicy:
        compiled = self.compiler.compile(resolved)
        if self.service is not None and self.options.service_port is not None:
            compiled = stateful_default(compiled)
        return compiled

    def apply(self, policy: Policy, progress: Progress | None = None) -> ApplyResult:
        """Enforce `policy`: a full sync against the target's real state the first time, then
        only the entries that changed. A failure leaves the previous policy recorded as enforced,
        and the next apply re-reads the target."""
        with self.lock:
            resolved = resolve(policy)
            warnings = analyze(policy, resolved)
            compiled = self._compile(resolved)
            if self.compiled is None:
                report = sync(
                    self.client, self.schema, compiled.entries(), POLICY_TABLES, progress=progress
                )
            else:
                changes = compiled_diff(self.compiled, compiled)
                try:
                    report = apply_diff(self.client, self.schema, changes, progress=progress)
                except Exception:
                    self.compiled = None  # unknown state: resync from the target next time
                    raise
            self.policy, self.compiled = policy, compiled
            resimulation = None
            if self.service is not None:
                resimulation = self.service.load_policy(resolved, self.options.host)
            log.info(
                "policy applied: %d inserted, %d modified, %d deleted, %d unchanged",
                report.inserted,
                report.modified,
                report.deleted,
                report.unchanged,
            )
            return ApplyResult(report, warnings, compiled, resimulation)

    def apply_file(self, path: str | Path, progress: Progress | None = None) -> ApplyResult:
        """Load, check and enforce a policy file; a bad file raises and changes nothing."""
        return self.apply(load_policy_file(path), progress)

    def rule_names(self) -> dict[int, str]:
        """Rule id -> rule name of the enforced policy."""
        return dict(self.compiled.rule_names) if self.compiled else {}


__all__ = ["POLICY_TABLES", "ApplyResult", "HostAgent", "PolicyError"]
