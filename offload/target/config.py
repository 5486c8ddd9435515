"""Which forwarding pipeline configs the software target accepts.

The target executes firewall.p4 and nothing else, so a pushed P4Info must describe that
program: the same tables, keys (name, width, match kind), actions and parameters, direct
counters, idle-timeout support, controller headers and digests (by name, with their struct's
fields) as p4/firewall.p4info.txtpb. Ids may
differ (a P4Info that p4c built is fine): the target looks everything up by name and talks to
clients in the ids of the P4Info they pushed. The device config is opaque and kept as given.
"""

from __future__ import annotations

from dataclasses import dataclass

from offload.digests import DigestError, digest_infos
from offload.p4schema import P4Schema, TableInfo
from offload.proto import p4i


class ConfigError(ValueError):
    """A forwarding pipeline config this target cannot realise."""


@dataclass(frozen=True)
class PipelineConfig:
    """A verified ForwardingPipelineConfig: the P4Info as a schema, the blob, the cookie."""

    schema: P4Schema
    device_config: bytes
    cookie: int | None

    @property
    def p4info(self) -> p4i.P4Info:
        """The P4Info message as the client pushed it."""
        return self.schema.p4info


# P4Info objects the firewall pipeline does not have; a P4Info declaring any is foreign.
_FOREIGN = (
    "counters",
    "meters",
    "direct_meters",
    "registers",
    "action_profiles",
    "value_sets",
    "externs",
)


def _table_shape(schema: P4Schema, table: TableInfo) -> dict[str, object]:
    actions = {}
    for aid in table.action_ids:
        action = schema.action(aid)
        actions[action.name] = tuple((p.name, p.bitwidth) for p in action.params)
    return {
        "keys": tuple((f.name, f.bitwidth, f.kind.name) for f in table.match_fields),
        "actions": actions,
        "idle timeout": table.supports_idle_timeout,
        "direct counter": bool(table.direct_counter_id),
    }


def check_p4info(reference: P4Schema, pushed: P4Schema) -> None:
    """Raise ConfigError unless `pushed` describes the same pipeline as `reference`."""
    info = pushed.p4info
    for name in _FOREIGN:
        if len(getattr(info, name)):
            raise ConfigError(f"P4Info declares {name}, which firewall.p4 does not have")
    want = {t.name: t for t in reference.iter_tables()}
    have = {t.name: t for t in pushed.iter_tables()}
    if unknown := sorted(set(have) - set(want)):
        raise ConfigError(
            f"P4Info has table(s) {', '.join(unknown)} that firewall.p4 does not: "
            "this target executes the firewall pipeline only"
        )
    if missing := sorted(set(want) - set(have)):
        raise ConfigError(f"P4Info lacks table(s) {', '.join(missing)} of firewall.p4")
    for name, table in want.items():
        expected = _table_shape(reference, table)
        actual = _table_shape(pushed, have[name])
        for aspect, value in expected.items():
            if actual[aspect] != value:
                raise ConfigError(
                    f"table {name}: {aspect} {actual[aspect]!r} differ from firewall.p4's {value!r}"
                )
        if have[name].size <= 0:
            raise ConfigError(f"table {name}: size must be positive")
    try:
        want_digests = {d.name: d.fields for d in digest_infos(reference.p4info).values()}
        have_digests = {d.name: d.fields for d in digest_infos(info).values()}
    except DigestError as exc:
        raise ConfigError(str(exc)) from None
    if have_digests != want_digests:
        raise ConfigError(
            f"P4Info digests {have_digests!r} differ from firewall.p4's {want_digests!r}"
        )
    for header in ("packet_in", "packet_out"):
        if header not in pushed.headers:
            raise ConfigError(f"P4Info lacks the {header} controller header")
        expected_fields = [(f.name, f.bitwidth) for f in reference.header(header).fields]
        actual_fields = [(f.name, f.bitwidth) for f in pushed.header(header).fields]
        if expected_fields != actual_fields:
            raise ConfigError(
                f"controller header {header}: fields {actual_fields} differ from "
                f"firewall.p4's {expected_fields}"
            )
