"""The host agent: one policy in, the host's target programmed, kept in step as the policy moves.

It owns the policy tables (classification, forwarding, ACL, service config) and the rule
log's table (`acl.log_rules`, from `offload.compiler.logrules`). The flow cache and
identity tables belong to the fast path and the identity module, so a policy sync never
touches them. With a service controller (stateful mode, `controlplane.service`) each applied
policy is also loaded into the firewall service, whose flows are resimulated against it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.inventory import Inventory
from controlplane.policy import Policy, PolicyError, Problem, analyze, load_policy_file
from offload import names
from offload.compiler import CompiledPolicy, CompileOptions
from offload.compiler.delta import diff as compiled_diff
from offload.compiler.logrules import RuleInfo, log_diff, log_entries, merge_diffs, rule_catalog
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
    names.ACL_AUDIT,
    names.ACL,
)
# The rule log's table (offload.compiler.logrules), synced with the policy tables; kept apart
# because the compiled policy does not hold its entries (they come from the resolved rules).
LOG_TABLES: tuple[str, ...] = (names.LOG_RULES,)


@dataclass
class ApplyResult:
    """What applying one policy did: the writes, the warnings, the compile figures."""

    report: SyncReport
    warnings: list[Problem] = field(default_factory=list)
    compiled: CompiledPolicy | None = None
    resimulation: ResimulationReport | None = None


class HostAgent:
    """Compiles policies for one host and keeps its target's policy tables equal to them.

    The compile state lives in an `Inventory`: a policy apply starts a new one (keeping the
    dynamic tags), and inventory events (tags, workloads, template instances) change it
    incrementally, so the agent's idea of what the target holds is always the inventory's.
    """

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
        self.inventory: Inventory | None = None
        self.policy: Policy | None = None
        self.compiled: CompiledPolicy | None = None
        self.logged: tuple[Entry, ...] = ()  # acl.log_rules as enforced (with `compiled`)
        self.lock = threading.RLock()  # one change at a time

    def push_pipeline(self, device_config: bytes = b"") -> None:
        """Push firewall.p4 (P4Info and the target's device config) to the target."""
        self.client.set_pipeline(self.schema, device_config)

    def _inventory(self, policy: Policy) -> Inventory:
        tags = self.inventory.tags if self.inventory is not None else None
        return Inventory(policy, self.options, tags=tags)

    def plan(self, policy: Policy) -> tuple[CompiledPolicy, Diff, list[Problem]]:
        """Compile `policy` and compute the writes from what is enforced now, writing nothing."""
        inventory = self._inventory(policy)
        warnings = analyze(inventory.current, inventory.resolved)
        changes = merge_diffs(
            compiled_diff(self.compiled, inventory.compiled),
            log_diff(self.logged if self.compiled else None, self._log_entries(inventory)),
        )
        return inventory.compiled, changes, warnings

    def _log_entries(self, inventory: Inventory) -> tuple[Entry, ...]:
        return log_entries(inventory.resolved, self.options.host)

    @staticmethod
    def _desired(inventory: Inventory, logged: tuple[Entry, ...]) -> list[Entry]:
        """Every entry a full sync makes the policy and log tables hold."""
        return inventory.compiled.entries() + list(logged)

    def target_diff(self, policy: Policy) -> Diff:
        """The writes a full sync of `policy` would make to the target as it is now (read from
        the target, nothing written): what `apply` writes the first time, log table included."""
        from offload.sync import diff, managed_tables, read_state

        inventory = self._inventory(policy)
        desired = self._desired(inventory, self._log_entries(inventory))
        managed = managed_tables(self.schema, POLICY_TABLES + LOG_TABLES)
        defaults = sorted({e.table for e in desired if e.is_default})
        return diff(desired, read_state(self.client, self.schema, managed, defaults))

    def apply(self, policy: Policy, progress: Progress | None = None) -> ApplyResult:
        """Enforce `policy`: a full sync against the target's real state the first time, then
        only the entries that changed. A failure leaves the previous policy recorded as enforced,
        and the next apply re-reads the target."""
        with self.lock:
            inventory = self._inventory(policy)
            resolved, compiled = inventory.resolved, inventory.compiled
            warnings = analyze(inventory.current, resolved)
            logged = self._log_entries(inventory)
            if self.compiled is None:
                desired = self._desired(inventory, logged)
                tables = POLICY_TABLES + LOG_TABLES
                report = sync(self.client, self.schema, desired, tables, progress=progress)
            else:
                changes = merge_diffs(
                    compiled_diff(self.compiled, compiled), log_diff(self.logged, logged)
                )
                try:
                    report = apply_diff(self.client, self.schema, changes, progress=progress)
                except Exception:
                    self.compiled = None  # unknown state: resync from the target next time
                    raise
            self.inventory, self.policy, self.compiled = inventory, policy, compiled
            self.logged = logged
            resimulation = self._resimulate(resolved)
            log.info(
                "policy applied: %d inserted, %d modified, %d deleted, %d unchanged",
                report.inserted,
                report.modified,
                report.deleted,
                report.unchanged,
            )
            return ApplyResult(report, warnings, compiled, resimulation)

    def write_inventory_change(self, writes: Diff) -> SyncReport:
        """Write a diff the inventory computed for its events; the service follows.

        Called after `self.inventory.apply(...)`; if the target refuses, the caller undoes the
        events, and the next policy apply re-reads the target.
        """
        with self.lock:
            if self.inventory is None:
                raise RuntimeError("no policy applied yet")
            logged = self._log_entries(self.inventory)
            writes = merge_diffs(writes, log_diff(self.logged, logged))
            try:
                report = apply_diff(self.client, self.schema, writes)
            except Exception:
                self.compiled = None
                raise
            self.compiled, self.logged = self.inventory.compiled, logged
            self._resimulate(self.inventory.resolved)
            return report

    def _resimulate(self, resolved: ResolvedPolicy) -> ResimulationReport | None:
        if self.service is None:
            return None
        return self.service.load_policy(resolved, self.options.host)

    def apply_file(self, path: str | Path, progress: Progress | None = None) -> ApplyResult:
        """Load, check and enforce a policy file; a bad file raises and changes nothing."""
        return self.apply(load_policy_file(path), progress)

    def rule_names(self) -> dict[int, str]:
        """Rule id -> rule name of the enforced policy."""
        return dict(self.compiled.rule_names) if self.compiled else {}

    def rule_info(self) -> dict[int, RuleInfo]:
        """Rule id -> name, section, action, audit, log of the enforced policy."""
        return rule_catalog(self.inventory.resolved) if self.inventory else {}


__all__ = ["LOG_TABLES", "POLICY_TABLES", "ApplyResult", "HostAgent", "PolicyError"]
