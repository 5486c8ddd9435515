"""The policy model: YAML -> checked, frozen `Policy` -> `ResolvedPolicy` for the compiler.

policy = load_policy_file("policy.yaml")      # raises PolicyError listing every problem
resolved = resolve(policy)                    # groups -> prefixes, rules -> ids and terms
(templates and instances: `Template`, `Instance`; live changes: `controlplane.inventory`)
warnings = analyze(policy, resolved)          # shadowed rules, empty groups
"""

from __future__ import annotations

from importlib import resources

from controlplane.policy.analysis import analyze
from controlplane.policy.errors import PolicyError, Problem
from controlplane.policy.loader import load_policy, load_policy_file
from controlplane.policy.model import (
    Criteria,
    Group,
    Instance,
    Policy,
    Rule,
    Section,
    Service,
    ServiceTerm,
    Template,
    TemplateMatch,
    Workload,
)
from controlplane.policy.references import check
from controlplane.policy.resolve import Resolver, resolve


def validate(policy: Policy) -> None:
    """Raise `PolicyError` when a policy built in code has reference problems."""
    problems = check(policy)
    if problems:
        raise PolicyError(problems, policy.filename)


def demo_policy_text() -> str:
    """The demo policy shipped with the package (controlplane/demo/policy.yaml)."""
    return resources.files("controlplane").joinpath("demo/policy.yaml").read_text("utf-8")


def load_demo_policy() -> Policy:
    """The demo policy, loaded."""
    return load_policy(demo_policy_text(), "controlplane/demo/policy.yaml")


__all__ = [
    "Criteria",
    "Group",
    "Instance",
    "Policy",
    "PolicyError",
    "Problem",
    "Resolver",
    "Rule",
    "Section",
    "Service",
    "ServiceTerm",
    "Template",
    "TemplateMatch",
    "Workload",
    "analyze",
    "check",
    "demo_policy_text",
    "load_demo_policy",
    "load_policy",
    "load_policy_file",
    "resolve",
    "validate",
]
