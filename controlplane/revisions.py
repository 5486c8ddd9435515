"""Staged policy changes: drafts, atomic publish, history, revert to any published revision.

The store is a directory (default `$NICFW_STATE_DIR`, else /var/lib/nicfw/policy):

    drafts/NAME.yaml          a saved draft (checked when saved: a bad policy is never kept)
    revisions/NNNNNN.yaml     every published policy, numbered, never rewritten
    revisions/log.jsonl       one line per publish: revision, time, source, sha256

Publishing writes the enforced policy file with a rename, so the daemon that watches it sees
either the old policy or the new one, never half a file; it then applies the new policy as a
diff. A revert publishes an earlier revision's text again as a new revision, so nothing that
was published is ever lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from controlplane.dryrun import PolicyDryRun, policy_dry_run
from controlplane.policy import Resolver, load_policy, resolve
from offload.compiler import CompiledPolicy, CompileOptions, Compiler
from offload.compiler.delta import diff as compiled_diff
from offload.sync import Diff

DEFAULT_STATE_DIR = Path(os.environ.get("NICFW_STATE_DIR", "/var/lib/nicfw")) / "policy"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RevisionError(ValueError):
    """A draft or revision that does not exist, or a name that cannot be one."""


@dataclass(frozen=True)
class Revision:
    """One published policy."""

    number: int
    published_at: float
    source: str  # the draft name, or "revert of N"
    sha256: str


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dry_run_texts(
    enforced: str,
    enforced_where: str,
    candidate: str,
    candidate_where: str,
    limit: int = 100,
    options: CompileOptions | None = None,
) -> PolicyDryRun:
    """The dry run of replacing one policy text by another (`controlplane.dryrun`), compiled
    with `options` (the hosts' daemons' compile options)."""
    old = load_policy(enforced, enforced_where)
    new = load_policy(candidate, candidate_where)
    resolver = Resolver()  # one resolver: the candidate reuses what did not change
    before = resolver.resolve(old)
    return policy_dry_run(before, resolver.resolve(new), options, limit=limit)


def _compile(text: str, where: str) -> CompiledPolicy:
    return Compiler(CompileOptions()).compile(resolve(load_policy(text, where)))


class RevisionStore:
    """Drafts and published revisions of the policy of one deployment."""

    def __init__(self, root: str | Path = DEFAULT_STATE_DIR) -> None:
        self.root = Path(root)
        self.drafts_dir = self.root / "drafts"
        self.revisions_dir = self.root / "revisions"
        self.log_path = self.revisions_dir / "log.jsonl"

    # -- drafts ---------------------------------------------------------------------------

    def _draft_path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RevisionError(f"{name!r} is not a draft name (letters, digits, . _ -)")
        return self.drafts_dir / f"{name}.yaml"

    def save_draft(self, name: str, text: str) -> Path:
        """Check a policy and keep it as draft `name` (PolicyError if it is not valid)."""
        path = self._draft_path(name)
        load_policy(text, f"draft {name}")  # a bad policy is refused, the old draft stays
        _atomic_write(path, text)
        return path

    def draft(self, name: str) -> str:
        """The text of a draft."""
        path = self._draft_path(name)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RevisionError(f"no draft named {name!r}") from None

    def drafts(self) -> list[str]:
        """Draft names, sorted."""
        return sorted(p.stem for p in self.drafts_dir.glob("*.yaml"))

    def diff(self, name: str, enforced: str | Path) -> Diff:
        """The table writes that publishing draft `name` over the enforced policy would cause."""
        enforced_path = Path(enforced)
        old = _compile(enforced_path.read_text(encoding="utf-8"), str(enforced_path))
        return compiled_diff(old, _compile(self.draft(name), f"draft {name}"))

    def dry_run(
        self,
        name: str,
        enforced: str | Path,
        limit: int = 100,
        options: CompileOptions | None = None,
    ) -> PolicyDryRun:
        """Per-host writes and reachability flips of publishing draft `name` (nothing changes),
        compiled with the hosts' `options`."""
        enforced_path = Path(enforced)
        return dry_run_texts(
            enforced_path.read_text(encoding="utf-8"),
            str(enforced_path),
            self.draft(name),
            f"draft {name}",
            limit,
            options,
        )

    # -- revisions ------------------------------------------------------------------------

    def history(self) -> list[Revision]:
        """Every published revision, oldest first."""
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [Revision(**json.loads(line)) for line in lines if line.strip()]

    def revision(self, number: int) -> str:
        """The text of published revision `number`."""
        try:
            return (self.revisions_dir / f"{number:06d}.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RevisionError(f"no published revision {number}") from None

    def _publish_text(self, text: str, source: str, enforced: Path) -> Revision:
        load_policy(text, source)  # never publish what the daemon would refuse
        history = self.history()
        number = history[-1].number + 1 if history else 1
        rev = Revision(number, time.time(), source, hashlib.sha256(text.encode()).hexdigest())
        _atomic_write(self.revisions_dir / f"{number:06d}.yaml", text)
        _atomic_write(enforced, text)  # the switch: one rename
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(rev.__dict__) + "\n")
        return rev

    def publish(self, name: str, enforced: str | Path) -> Revision:
        """Make draft `name` the enforced policy (written to `enforced` atomically)."""
        return self._publish_text(self.draft(name), name, Path(enforced))

    def revert(self, number: int, enforced: str | Path) -> Revision:
        """Enforce published revision `number` again, as a new revision."""
        return self._publish_text(self.revision(number), f"revert of {number}", Path(enforced))
