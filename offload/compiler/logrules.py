"""The rule log's table: one `acl.log_rules` entry per rule with `log: true`.

`acl.log_rules` is keyed on the rule id that `acl.acl` decided with; a hit (`log_hit`) makes the
pipeline send a `log_digest_t` digest, as does any `acl.acl_audit` hit, so audit rules need no
entry here. This table is part of the host's desired state beside the compiled ACL: the agent
syncs it with the other policy tables and diffs it on every change.

`rule_catalog` is what the daemon needs to turn a digest back into words: each rule's name,
section, mode and action, by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from offload import names
from offload.compiler.compile import CompileError
from offload.compiler.rules import ResolvedPolicy, ResolvedRule
from offload.entries import Entry, Exact
from offload.sync import Diff
from offload.sync import diff as diff_entries

# p4/include/size.p4 LOG_RULES_TABLE_SIZE (the target refuses more; say so before writing).
LOG_RULES_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What a log line says about a rule besides its id."""

    rule_id: int
    name: str
    section: str
    action: str
    audit: bool
    log: bool


def logged_rules(rules: Iterable[ResolvedRule], host: str | None = None) -> list[ResolvedRule]:
    """The enforced rules on `host` whose hits are logged (audit rules log without an entry)."""
    return [r for r in rules if r.log and not r.audit and r.applies_on(host)]


def log_entry(rule_id: int) -> Entry:
    """The `acl.log_rules` entry that logs the rule with this id."""
    return Entry.make(names.LOG_RULES, {"rule_id": Exact(rule_id)}, names.LOG_HIT)


def log_entries(
    resolved: ResolvedPolicy, host: str | None = None, size: int = LOG_RULES_SIZE
) -> tuple[Entry, ...]:
    """The `acl.log_rules` entries of a policy on one host, in rule id order."""
    ids = sorted({r.rule_id for r in logged_rules(resolved.rules, host)})
    if len(ids) > size:
        raise CompileError(
            f"{len(ids)} rules have `log: true` on this host; acl.log_rules holds {size}"
        )
    return tuple(log_entry(rule_id) for rule_id in ids)


def log_diff(old: Iterable[Entry] | None, new: Iterable[Entry]) -> Diff:
    """The writes from one set of log entries to the next (None: none written yet)."""
    return diff_entries(list(new), list(old or ()))


def merge_diffs(*diffs: Diff) -> Diff:
    """One diff holding the writes of several (over disjoint tables)."""
    out = Diff()
    for d in diffs:
        out.inserts += d.inserts
        out.modifies += d.modifies
        out.deletes += d.deletes
        out.unchanged += d.unchanged
    return out


def rule_catalog(resolved: ResolvedPolicy) -> dict[int, RuleInfo]:
    """Every rule of a resolved policy by id: name, section, action, audit, log."""
    return {
        r.rule_id: RuleInfo(r.rule_id, r.name, r.section, str(r.action), r.audit, r.log)
        for r in resolved.rules
    }
