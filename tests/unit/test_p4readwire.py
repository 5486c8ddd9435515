"""Read-back decoded from the wire bytes must give exactly what the message path gives.

`P4Client.read_table_entries` hands each ReadResponse's bytes to `offload.p4readwire`, whose
numba kernel decodes ordinary table entries; everything else is decoded from the parsed message.
The reference is today's message path, `P4Client._read_entries` (EntryDecoder.decode per entity),
run on the same responses: the same entries in the same order, or the same error, on valid
entries of every table, entries broken by test_p4decode's mutations, and hostile bytes (fields
reordered, duplicated or unknown, varints and tags padded, bytes flipped, responses cut short,
entities of other kinds). Over gRPC, a fake Read server compares the two paths' errors as a
client sees them, and the software target checks the round trip with NICFW_WIRE_DECODE on and off.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names, p4readwire
from offload.entries import Entry, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4client import INSERT, P4Client
from offload.p4entity import encode_table_entry
from offload.p4errors import P4ClientError
from offload.p4schema import P4Schema
from offload.p4wire import varint
from offload.proto import p4r
from offload.target import SoftwareTarget

try:
    from .entrygen import entries, flow_entry
    from .test_p4decode import mutate
    from .test_target_wire import body, delimited, padded, split
except ImportError:  # tests/unit on sys.path (pytest's default import mode)
    from entrygen import entries, flow_entry
    from test_p4decode import mutate
    from test_target_wire import body, delimited, padded, split

SCHEMA = P4Schema.load()


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    # numba is a dependency: a kernel that does not compile is a failure, not a skip.
    assert p4readwire.kernel(wait=True) is not None, "the read kernel did not compile"


# ---------------------------------------------------------------------- the two paths
class MessageStub:
    """Stands in for the P4Runtime stub: Read yields the responses parsed, as gRPC would."""

    def __init__(self, responses: Sequence[bytes]) -> None:
        self.responses = responses

    def Read(self, request: p4r.ReadRequest, timeout: float) -> Iterator[p4r.ReadResponse]:
        for data in self.responses:
            yield p4r.ReadResponse.FromString(data)


def failure(exc: P4ClientError) -> object:
    """Everything a caller sees of a failed read."""
    return ("error", type(exc).__name__, exc.code, exc.message, str(exc))


def reference(responses: Sequence[bytes]) -> object:
    """Today's path: `_read_entries` over the parsed responses (without a channel)."""
    client = P4Client("fake:1")
    client._stub = MessageStub(responses)  # type: ignore[assignment]
    try:
        return [e for e, _c in client._read_entries(SCHEMA, None, False)]
    except DecodeError:  # gRPC fails the call instead (checked over gRPC below)
        return "unparsable"
    except P4ClientError as exc:
        return failure(exc)


class Counting:
    """EntryDecoder with a count of the entries it decodes (the ones the kernel left)."""

    def __init__(self, decoder: p4readwire.ReadDecoder) -> None:
        self.inner = decoder.fallback
        self.calls = 0

    def decode(self, msg: p4r.TableEntry) -> Entry:
        self.calls += 1
        return self.inner.decode(msg)


def wire_path(responses: Sequence[bytes]) -> tuple[object, int]:
    """The bytes path: its result, and how many entries it left to the message decoder."""
    kernel = p4readwire.kernel(wait=True)
    assert kernel is not None
    decoder = p4readwire.ReadDecoder(SCHEMA)
    counting = Counting(decoder)
    decoder.fallback = counting  # type: ignore[assignment]
    out: list[Entry] = []
    try:
        for data in responses:
            out.extend(decoder.decode(data, kernel))
    except P4ClientError as exc:
        if exc.message == p4readwire.UNPARSABLE:
            return "unparsable", counting.calls
        return failure(exc), counting.calls
    return out, counting.calls


def check(responses: Sequence[bytes]) -> int:
    """Both paths agree; how many entries the bytes path left to the message decoder."""
    got, fallbacks = wire_path(responses)
    assert got == reference(responses)
    return fallbacks


# ---------------------------------------------------------------------- wire surgery
def entity_bytes(entry: Entry, data: st.DataObject | None = None, mutations: int = 0) -> bytes:
    """A serialized Entity holding the entry's TableEntry (changed `mutations` times)."""
    entity = p4r.Entity()
    msg = entity.table_entry
    msg.CopyFrom(encode_table_entry(SCHEMA, entry))
    if data is not None:
        for _ in range(mutations):
            mutate(data, msg)
    return entity.SerializeToString()


def response(entities: Sequence[bytes]) -> bytes:
    """A serialized ReadResponse of these serialized entities."""
    return b"".join(delimited(1, e) for e in entities)


def padded_tag(field: bytes, extra: int) -> bytes:
    """A field whose tag has `extra` redundant continuation bytes (upb takes up to 5 bytes)."""
    tag = bytearray([field[0]])  # every tag of these messages fits one byte
    for _ in range(extra):
        tag[-1] |= 0x80
        tag.append(0)
    return bytes(tag) + field[1:]


OTHER_ENTITIES = [
    p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=1)).SerializeToString(),
    p4r.Entity(
        packet_replication_engine_entry=p4r.PacketReplicationEngineEntry()
    ).SerializeToString(),
    b"",  # an empty Entity: no entity at all
]

SURGERY = ["none"] * 4 + [
    "shuffle",
    "dup_entry_field",
    "dup_match_field",
    "unknown",
    "pad_varint",
    "pad_tag",
    "pad_inner_tag",
    "pad_entity_tag",
    "flip",
    "entity_twice",
    "entity_unknown",
    "other_entity",
]


def operate(rng: random.Random, how: str, entity: bytes) -> bytes:
    """One serialized Entity, changed at the wire level."""
    if how == "none":
        return entity
    if how == "flip":
        buf = bytearray(entity)
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if how == "entity_twice":
        return entity + entity
    if how == "entity_unknown":
        return entity + varint(99 << 3) + b"\x01"
    if how == "other_entity":
        return rng.choice(OTHER_ENTITIES)
    if how == "pad_entity_tag":
        return padded_tag(entity, rng.randint(1, 6))
    te = split(body(entity))
    if how == "shuffle":
        rng.shuffle(te)
    elif how == "dup_entry_field":
        te.append(rng.choice(te))
    elif how == "unknown":
        te.insert(rng.randrange(len(te) + 1), (99, 0, varint(99 << 3) + b"\x01"))
    elif how == "pad_varint":
        spots = [i for i, (_n, wt, _f) in enumerate(te) if wt == 0]
        if spots:
            i = rng.choice(spots)
            n, _wt, f = te[i]
            te[i] = (n, 0, padded(n, _value(f), rng.randint(1, 2)))
    elif how == "pad_tag":
        i = rng.randrange(len(te))
        n, wt, f = te[i]
        te[i] = (n, wt, padded_tag(f, rng.randint(1, 9)))
    elif how in ("dup_match_field", "pad_inner_tag"):
        spots = [i for i, (n, _wt, _f) in enumerate(te) if n == 2]
        if spots:
            i = rng.choice(spots)
            inner = split(body(te[i][2]))
            j = rng.randrange(len(inner))
            if how == "dup_match_field":
                inner.insert(rng.randrange(len(inner) + 1), inner[j])
            else:
                n, wt, f = inner[j]
                inner[j] = (n, wt, padded_tag(f, rng.randint(3, 6)))
            te[i] = (2, 2, delimited(2, b"".join(f for _n, _wt, f in inner)))
    return delimited(2, b"".join(f for _n, _wt, f in te))


def _value(field: bytes) -> int:
    """The value of a one-byte-tag varint field."""
    value = shift = 0
    for b in field[1:]:
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value
        shift += 7
    raise ValueError("truncated varint")


# ---------------------------------------------------------------------- the tests
@settings(max_examples=150, deadline=None)
@given(st.lists(entries(), min_size=0, max_size=12), st.integers(1, 3))
def test_valid_responses_all_take_the_wire_path(batch: list[Entry], parts: int) -> None:
    ents = [entity_bytes(e) for e in batch]
    cut = len(ents) // parts
    responses = [response(ents[:cut]), response(ents[cut:])] if parts > 1 else [response(ents)]
    # The kernel's guard against tags spelled in six bytes or more also sends the rare entry
    # whose values hold four 0x80 bytes in a row (an idle timeout of 2**28 ns) the usual way.
    assert check(responses) == sum(b"\x80" * 4 in e for e in ents)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(entries(), st.integers(0, 2), st.sampled_from(SURGERY)), min_size=1, max_size=8
    ),
    st.data(),
    st.randoms(use_true_random=False),
)
def test_mutated_and_hostile_entities_agree(
    batch: list[tuple[Entry, int, str]], data: st.DataObject, rng: random.Random
) -> None:
    ents = [operate(rng, how, entity_bytes(e, data, m)) for e, m, how in batch]
    check([response(ents)])


@settings(max_examples=200, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_cut_flipped_and_padded_responses_agree(batch: list[Entry], rng: random.Random) -> None:
    data = bytearray(response([entity_bytes(e) for e in batch]))
    how = rng.choice(["cut", "flip", "top_unknown", "top_padded_tag"])
    if how == "cut":
        del data[rng.randrange(len(data)) :]
    elif how == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "top_unknown":
        at = rng.choice([0, len(data)])
        data[at:at] = padded(rng.choice([2, 5, 15]), 7, 0)
    else:
        data[0:1] = padded_tag(bytes(data[0:1]), rng.randint(1, 6))
    check([bytes(data)])


def test_a_bad_entry_fails_the_read_where_the_message_path_fails_it() -> None:
    good = entity_bytes(flow_entry(1))
    bad = p4r.Entity()
    bad.table_entry.CopyFrom(encode_table_entry(SCHEMA, flow_entry(2)))
    bad.table_entry.match[0].exact.value = b"\x01" * 17  # wider than the key
    # The error comes at the bad entity, after the good ones, before the next response.
    responses = [response([good, good]), response([good, bad.SerializeToString()]), b"\xff"]
    assert check(responses) == 1
    got, _ = wire_path(responses)
    assert isinstance(got, tuple) and "undecodable entry" in got[3]


def test_a_decoder_for_another_schema_leaves_every_entry_to_messages() -> None:
    ents = [entity_bytes(flow_entry(i)) for i in range(5)]
    assert check([response(ents)]) == 0
    decoder = p4readwire.ReadDecoder(SCHEMA)
    decoder.spec[0][:, 0] = -1  # no table id matches: every row declined
    kernel = p4readwire.kernel(wait=True)
    assert kernel is not None
    assert decoder.decode(response(ents), kernel) == [flow_entry(i) for i in range(5)]


def test_no_kernel_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NICFW_WIRE_DECODE", "0")
    assert p4readwire.kernel(wait=True) is None


# ---------------------------------------------------------------------- over gRPC
class FakeRead:
    """A P4Runtime server that answers Read with the bytes it is given, then an error if set."""

    def __init__(self) -> None:
        self.responses: list[bytes] = []
        self.abort: tuple[grpc.StatusCode, str] | None = None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "p4.v1.P4Runtime",
            {
                "Read": grpc.unary_stream_rpc_method_handler(
                    self.read,
                    request_deserializer=p4r.ReadRequest.FromString,
                    response_serializer=None,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def read(self, request: p4r.ReadRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from self.responses
        if self.abort is not None:
            context.abort(*self.abort)


@pytest.fixture(scope="module")
def fake_read() -> Iterator[FakeRead]:
    fake = FakeRead()
    try:
        yield fake
    finally:
        fake.server.stop(None)


@contextmanager
def wire_decode(on: bool) -> Iterator[None]:
    """NICFW_WIRE_DECODE set for the block (hypothesis tests cannot take monkeypatch)."""
    before = os.environ.get("NICFW_WIRE_DECODE")
    os.environ["NICFW_WIRE_DECODE"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NICFW_WIRE_DECODE"]
        else:
            os.environ["NICFW_WIRE_DECODE"] = before


def read_both(monkeypatch: pytest.MonkeyPatch, address: str, **kwargs: object) -> list[object]:
    """read_table_entries through a fresh read-only client, bytes path then message path."""
    made: list[p4readwire.ReadDecoder] = []

    class Made(p4readwire.ReadDecoder):
        def __init__(self, schema: P4Schema) -> None:
            super().__init__(schema)
            made.append(self)

    monkeypatch.setattr(p4readwire, "ReadDecoder", Made)
    results: list[object] = []
    for on in (True, False):
        with wire_decode(on), P4Client.connect(address, election_id=None, schema=SCHEMA) as c:
            try:
                results.append(c.read_table_entries(SCHEMA, **kwargs))  # type: ignore[call-overload]
            except P4ClientError as exc:
                results.append(failure(exc))
        assert len(made) == 1, "the bytes path with the kernel on, the message path with it off"
    return results


def broken_entity() -> bytes:
    bad = p4r.Entity()
    bad.table_entry.CopyFrom(encode_table_entry(SCHEMA, acl_entry(3)))
    bad.table_entry.priority = 0
    return bad.SerializeToString()


# Each case: the responses (entities by number, "bad" or "other"; "junk" for bytes that do
# not parse), then the error the server ends the call with.
GRPC_CASES: dict[str, tuple[list[list[int | str] | str], tuple[grpc.StatusCode, str] | None]] = {
    "valid": ([[1, 2], [3]], None),
    "undecodable entry": ([[1], [2, "bad", 3]], None),
    "unparsable response": ([[1], "junk", [2]], None),
    "other entities": ([["other", 1, "other"]], None),
    "server error after a response": ([[1, 2]], (grpc.StatusCode.UNAVAILABLE, "going away")),
    "not found": ([], (grpc.StatusCode.NOT_FOUND, "no such table")),
    "permission": ([], (grpc.StatusCode.PERMISSION_DENIED, "not yours")),
}


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_grpc_errors_and_results_are_the_same_either_way(
    case: str, fake_read: FakeRead, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, abort = GRPC_CASES[case]
    other = OTHER_ENTITIES[0]

    def one(item: int | str) -> bytes:
        if item == "bad":
            return broken_entity()
        if item == "other":
            return other
        assert isinstance(item, int)
        return entity_bytes(flow_entry(item)) if item % 2 else entity_bytes(acl_entry(item))

    fake_read.responses = [
        b"\x0a\x05\x12" if isinstance(part, str) else response([one(i) for i in part])
        for part in parts
    ]
    fake_read.abort = abort
    wired, messages = read_both(monkeypatch, f"127.0.0.1:{fake_read.port}")
    assert wired == messages
    if case == "valid":
        assert wired == [flow_entry(1), acl_entry(2), flow_entry(3)]
    elif case != "other entities":
        assert isinstance(wired, tuple) and wired[0] == "error"


def acl_entry(i: int) -> Entry:
    """ACL entries, some keys left out (don't-care) in turn."""
    match: dict[str, FieldMatch] = {
        "src_class": Ternary(1 << (i % 64), 1 << (i % 64)),
        "ip_proto": Optional(6),
        "l4_dst": Range(80, 80 + i),
        "id_class": Ternary(i, 0xFFFF_FFFF),
    }
    for k, name in enumerate(sorted(match)):
        if i >> k & 1:
            del match[name]
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": i}, priority=i + 1)


def lpm_entry(i: int) -> Entry:
    return Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm((0xFFFF0A00 | i) << 32, 96 + i % 4 * 8)},
        names.SET_SRC_CLASS,
        {"class_id": 1 << (i % 64), "workload_id": i},
    )


def test_software_target_read_back_is_the_same_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    written = [flow_entry(i) for i in range(300)] + [acl_entry(i) for i in range(64)]
    written += [lpm_entry(i) for i in range(40)]
    with SoftwareTarget("127.0.0.1:0") as target:
        client = P4Client.connect(target.address, target.device_id, 1, schema=SCHEMA)
        try:
            client.set_pipeline(SCHEMA)
            client.write_entries(SCHEMA, INSERT, written)
            whole = read_both(monkeypatch, target.address)
            acl = read_both(monkeypatch, target.address, table=names.ACL)
        finally:
            client.close()
    assert whole[0] == whole[1] and acl[0] == acl[1]
    assert sorted(map(repr, whole[0])) == sorted(map(repr, written))  # type: ignore[call-overload]
    assert sorted(map(repr, acl[0])) == sorted(map(repr, written[300:364]))  # type: ignore[call-overload]
