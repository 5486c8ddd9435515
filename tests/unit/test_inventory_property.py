"""Property: after any sequence of inventory events, incremental state equals a fresh start.

Random policies with templates, instances and criteria trees (tags, names, templates,
instances, template match, address blocks, nested groups, all/any/not), random events; after
each one the incrementally resolved policy equals `resolve` from scratch, the diff takes the
old entries exactly to the new ones, and the tables agree with the reference evaluator.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from controlplane.inventory import (
    Event,
    InstanceCreated,
    InstanceDeleted,
    Inventory,
    InventoryError,
    TagAttached,
    TagDetached,
    WorkloadDown,
    WorkloadMoved,
    WorkloadUp,
)
from controlplane.policy import (
    Criteria,
    Group,
    Instance,
    Policy,
    PolicyError,
    Rule,
    Section,
    Template,
    TemplateMatch,
    Workload,
    resolve,
    validate,
)
from offload.compiler import CompileError, CompileOptions, EncodingError, Packet, Tables, evaluate

TAGS = ("web", "app", "db", "quarantine")
HOSTS = ("h1", "h2")
TEMPLATES = ("t0", "t1")
INSTANCES = {"i0": "t0", "i1": "t0", "i2": "t1"}
BLOCK = ipaddress.ip_network("10.0.0.0/29")
# Blocks of groups: some hold workload addresses, whose entries then inherit memberships.
BLOCKS = tuple(
    ipaddress.ip_network(b) for b in ("192.0.2.0/30", "10.0.0.0/30", "2001:db8::/126", "::/0")
)


def address(n: int, v6: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(f"2001:db8::{n:x}" if v6 else f"10.0.0.{n}")


@st.composite
def workloads(draw: st.DrawFn, index: int) -> Workload:
    addrs = (address(index, False),) + ((address(index, True),) if draw(st.booleans()) else ())
    return Workload(
        f"w{index}",
        addrs,
        frozenset(draw(st.lists(st.sampled_from(TAGS[:3]), max_size=2))),
        draw(st.sampled_from(HOSTS)),
        instance=draw(st.sampled_from((None, *INSTANCES))),
    )


def criteria(depth: int, earlier: list[str]) -> st.SearchStrategy[Criteria]:
    leaves = st.one_of(
        st.builds(lambda t: Criteria(frozenset({t})), st.sampled_from(TAGS)),
        st.builds(lambda t: Criteria(template=t), st.sampled_from(TEMPLATES)),
        st.builds(lambda i: Criteria(instance=i), st.sampled_from(sorted(INSTANCES))),
        st.builds(lambda n: Criteria(name=n), st.sampled_from(("w1*", "w?", "*"))),
        st.builds(lambda h: Criteria(host=h), st.sampled_from(HOSTS)),
        st.just(Criteria(template_match=TemplateMatch(owner="ops"))),
        st.just(Criteria(addresses=(BLOCK,))),
        *([st.builds(lambda g: Criteria(group=g), st.sampled_from(earlier))] if earlier else []),
    )
    if depth == 0:
        return leaves
    sub = st.lists(criteria(depth - 1, earlier), min_size=1, max_size=2).map(tuple)
    return st.one_of(
        leaves,
        sub.map(lambda c: Criteria(all_of=c)),
        sub.map(lambda c: Criteria(any_of=c)),
        st.tuples(leaves, sub).map(lambda x: Criteria(x[0].tags, none_of=x[1])),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    ws = [draw(workloads(i)) for i in range(1, draw(st.integers(2, 7)))]
    groups: list[Group] = []
    for i in range(draw(st.integers(1, 5))):
        earlier = [g.name for g in groups]
        groups.append(
            Group(
                f"g{i}",
                members=tuple(draw(st.lists(st.sampled_from([w.name for w in ws]), max_size=1))),
                addresses=tuple(draw(st.lists(st.sampled_from(BLOCKS), max_size=1))),
                match=(draw(criteria(2, earlier)),),
            )
        )
    names = [g.name for g in groups]
    side = st.one_of(st.none(), st.lists(st.sampled_from(names), min_size=1, max_size=2))

    def rule(i: int, template: str | None = None) -> Rule:
        src, dst = draw(side), draw(side)
        scope = "same_instance" if template else draw(st.sampled_from(("any", "same_instance")))
        bound = template or draw(st.sampled_from((None, *TEMPLATES)))
        return Rule(
            f"r{i}",
            None if src is None else tuple(dict.fromkeys(src)),
            None if dst is None else tuple(dict.fromkeys(dst)),
            draw(st.sampled_from(("allow", "drop", "reject"))),
            scope=scope,  # type: ignore[arg-type]
            template=bound,
        )

    rules = tuple(rule(i) for i in range(draw(st.integers(1, 5))))
    templates = (
        Template(
            "t0",
            "shop",
            "1",
            "ops",
            frozenset({"app"}) if draw(st.booleans()) else frozenset(),
            (rule(90, "t0"),),
        ),
        Template("t1", "blog", "1", "dev"),
    )
    policy = Policy(
        tuple(ws),
        tuple(groups),
        (),
        (Section("s", rules),),
        draw(st.sampled_from(("allow", "drop"))),
        templates=templates,
        instances=tuple(Instance(i, t) for i, t in INSTANCES.items() if i != "i1"),
    )
    validate(policy)
    return policy


@st.composite
def events(draw: st.DrawFn, n_workloads: int) -> Event:
    name = f"w{draw(st.integers(1, n_workloads + 2))}"
    kind = draw(st.sampled_from(("attach", "attach", "detach", "up", "down", "move", "new", "del")))
    if kind == "attach":
        return TagAttached(name, draw(st.sampled_from(TAGS)))
    if kind == "detach":
        return TagDetached(name, draw(st.sampled_from(TAGS)))
    if kind == "up":
        return WorkloadUp(draw(workloads(int(name[1:]))))
    if kind == "down":
        return WorkloadDown(name)
    if kind == "move":
        return WorkloadMoved(name, draw(st.sampled_from(HOSTS)))
    if kind == "new":
        first = 20 + draw(st.integers(0, 3)) * 4
        members = tuple(
            Workload(f"w{k}", (address(k, False),), frozenset({draw(st.sampled_from(TAGS))}))
            for k in range(first, first + draw(st.integers(0, 3)))
        )
        iid = draw(st.sampled_from(("i1", "i3", "i4")))
        return InstanceCreated(Instance(iid, draw(st.sampled_from(TEMPLATES))), members)
    return InstanceDeleted(draw(st.sampled_from((*INSTANCES, "i3"))))


packets = st.builds(
    Packet,
    st.builds(address, st.integers(0, 32), st.booleans()),
    st.builds(address, st.integers(0, 32), st.booleans()),
    st.sampled_from((6, 17)),
    st.just(1000),
    st.just(80),
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=st.data(),
    policy=policies(),
    opts=st.builds(
        CompileOptions,
        host=st.sampled_from((None, "h1")),
        class_bits=st.sampled_from((64, 64, 4)),
    ),
    pkts=st.lists(packets, min_size=4, max_size=12),
)
def test_incremental_inventory_equals_a_fresh_resolution_and_the_reference(
    data: st.DataObject, policy: Policy, opts: CompileOptions, pkts: list[Packet]
) -> None:
    try:
        inv = Inventory(policy, opts)
    except (EncodingError, CompileError):
        assume(False)
        return
    for _ in range(data.draw(st.integers(1, 6))):
        event_ = data.draw(events(len(policy.workloads)))
        before = inv.compiled
        try:
            writes = inv.apply(event_)
        except InventoryError as exc:
            assert inv.compiled is before  # refused: nothing changed
            # Refused for the event's fault, or because the ids do not fit the bits: never
            # because incremental state went wrong (a group the compiler cannot find).
            assert exc.__cause__ is None or isinstance(
                exc.__cause__, (PolicyError, EncodingError)
            ), exc
            event("refused")
            continue
        event(f"applied {type(event_).__name__}")
        fresh = resolve(inv.current)
        assert inv.resolved == fresh, event_
        assert set(writes.apply_to(before.entries())) == set(inv.compiled.entries())
        tables = Tables(inv.compiled.entries())
        for pkt in pkts:
            want = evaluate(fresh, pkt, host=opts.host)
            assert tables.verdict(*pkt) == want, (event_, pkt)


def test_policy_error_type_is_what_validate_raises() -> None:
    try:
        validate(Policy(groups=(Group("g", groups=("g",)),)))
    except PolicyError as exc:
        assert "cycle" in str(exc)
    else:
        raise AssertionError("a self-nested group must be refused")
