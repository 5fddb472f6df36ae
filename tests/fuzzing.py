"""A reusable fuzzing harness for every parser of bytes from other parties.

:func:`assert_only_heagg_errors` feeds a parser random bytes, byte-level mutations of a
valid input and, when the valid input is a he_agg envelope, edits of its META JSON
re-sealed with a valid checksum (anyone can recompute BLAKE3, so these reach the
semantic checks). The parser may accept an input or raise a
:class:`~he_agg.errors.HeAggError`; anything else — TypeError, RecursionError,
OverflowError, MemoryError, a parse slower than ``max_seconds`` — fails the test, and
hypothesis shrinks it to a minimal input.

Examples per entry point: :data:`EXAMPLES` (a few hundred, for CI), raised with the
environment variable ``HE_AGG_FUZZ_EXAMPLES`` for long runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, Union

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he_agg.errors import HeAggError
from he_agg.hazmat.wire import envelope

__all__ = [
    "EXAMPLES",
    "assert_only_heagg_errors",
    "byte_mutations",
    "enrolled_round",
    "enrollment_messages",
    "fuzz_inputs",
    "meta_mutations",
    "random_bytes",
    "reseal",
]

EXAMPLES = int(os.environ.get("HE_AGG_FUZZ_EXAMPLES", "200"))


# -- valid protocol messages to mutate (shared with the atheris targets in fuzz/) ----------------


def enrolled_round() -> dict[str, Any]:
    """A 2-of-3 enrolled committee, two clients' uploads (bytes), the round's request,
    its quorum certificate and member 0's share."""
    import numpy as np

    from he_agg.aggregator import Aggregator
    from he_agg.member import EnrolledCommittee, EnrolledPolicy

    committee = EnrolledCommittee.generate(3, 2, policy=EnrolledPolicy(min_clients=2))
    clients = [committee.client(f"site-{i}") for i in range(2)]
    agg = Aggregator(committee.public_context, 1, min_clients=2)
    uploads = [c.encrypt(np.linspace(-1, 1, 40), round_id=1) for c in clients]
    for upload in uploads:
        agg.add(upload)
    request = agg.decryption_request()
    certificate = committee.certify(request)
    share = committee[0].decryption_share(request, certificate)
    return dict(committee=committee, clients=clients, uploads=uploads, request=request, certificate=certificate,
                share=share)


def enrollment_messages() -> tuple[Any, bytes, list[bytes]]:
    """A 2-of-3 enrolled committee that admitted client "site-x", its dealing and the members' acks."""
    from he_agg.enrolled import EnrolledClient
    from he_agg.member import EnrolledCommittee

    committee = EnrolledCommittee.generate(3, 2)
    client = EnrolledClient.create(committee.context, "site-x")
    for member in committee:
        member.enrollment.admit(client.client_id, client.public_key)
    dealing = client.dealing()
    return committee, dealing, [m.enrollment.receive(dealing) for m in committee]


# -- sealing arbitrary meta text -------------------------------------------------------------


def reseal(kind: int, meta: bytes, body: bytes) -> bytes:
    """An envelope of ``kind`` around raw ``meta`` bytes (any text: NaN, 5,000-digit
    integers, deep nesting) and ``body``, with a valid checksum."""
    head = envelope._FIXED.pack(envelope.MAGIC, envelope.VERSION, kind, len(meta), 0, len(body))
    pad = b"\0" * (envelope._body_offset(len(meta)) - envelope._FIXED.size - len(meta))
    checksum = envelope.blake3.blake3(head + meta + pad + envelope.body_hash(body)).digest()
    return head + meta + pad + body + checksum


def _split(valid: bytes) -> tuple[int, Any, bytes] | None:
    """(kind, parsed meta, body) of a he_agg envelope, or None for other bytes."""
    if valid[:4] != envelope.MAGIC or len(valid) < envelope._FIXED.size:
        return None
    _, version, kind, meta_len, _, body_len = envelope._FIXED.unpack_from(valid)
    start = envelope._body_offset(meta_len)
    if version != envelope.VERSION or start + body_len + 32 != len(valid):
        return None  # another format that happens to start with the magic (e.g. a ticket)
    meta = json.loads(valid[envelope._FIXED.size : envelope._FIXED.size + meta_len])
    return kind, meta, valid[start : start + body_len]


# -- JSON trees with raw leaves ----------------------------------------------------------------

# A tree: ("raw", text) | ("arr", [tree, ...]) | ("obj", [(key, tree), ...]); objects are
# pair lists so that a key can be duplicated.
Tree = tuple[str, Any]
Path = tuple[Union[int, str], ...]


def _tree(value: Any) -> Tree:
    if isinstance(value, dict):
        return ("obj", [(k, _tree(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("arr", [_tree(v) for v in value])
    return ("raw", json.dumps(value))


def _text(tree: Tree) -> str:
    tag, value = tree
    if tag == "raw":
        return value
    if tag == "arr":
        return "[" + ",".join(_text(v) for v in value) + "]"
    return "{" + ",".join(json.dumps(k) + ":" + _text(v) for k, v in value) + "}"


def _paths(tree: Tree, prefix: Path = (), limit: int = 200) -> list[Path]:
    """Paths of the tree's nodes (the root included), breadth-first, at most ``limit``."""
    out, queue = [], [(prefix, tree)]
    while queue and len(out) < limit:
        path, (tag, value) = queue.pop(0)
        out.append(path)
        if tag == "arr":
            queue.extend((path + (i,), v) for i, v in enumerate(value))
        elif tag == "obj":
            queue.extend((path + (i,), v) for i, (_, v) in enumerate(value))
    return out


def _edit(tree: Tree, path: Path, change: Callable[[Tree], Tree | None]) -> Tree:
    """A copy of ``tree`` with the node at ``path`` changed (None: removed from its parent)."""
    if not path:
        new = change(tree)
        return new if new is not None else ("obj", [])
    tag, value = tree
    index, rest = path[0], path[1:]
    items = list(value)
    child = items[index][1] if tag == "obj" else items[index]
    new = _edit(child, rest, change) if rest else change(child)
    if new is None:
        del items[index]
    elif tag == "obj":
        items[index] = (items[index][0], new)
    else:
        items[index] = new
    return (tag, items)


_NASTY = [
    "1" + "0" * 5000,  # past Python's 4,300-digit int conversion limit
    "-" + "9" * 60,
    str(10**400),
    str(2**40), str(2**63), str(2**64), str(2**64 - 1), "-1", "0", "1",
    "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "1.5", "-0.0", "0." + "1" * 200,
    "[" * 1000 + "]" * 1000,
    '{"a":' * 1000 + "1" + "}" * 1000,
    "[" * 40 + "]" * 40,
    '"' + "x" * 100_000 + '"', '""', '"zz"', '"' + "ab" * 32 + '"', '"' + "AB" * 32 + '"', '"\\ud800"',
    "null", "true", "false", "[]", "{}", "[1,2,3]", '[["a","b"]]',
    "[" + ",".join(["0"] * 200_000) + "]",
]


@st.composite
def _json_text(draw: st.DrawFn) -> str:
    """A replacement value: a nasty literal, or a random (wrong-typed) JSON value."""
    if draw(st.booleans()):
        return draw(st.sampled_from(_NASTY))
    value = draw(st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=80),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=8,
    ))
    return json.dumps(value)


@st.composite
def _meta_edit(draw: st.DrawFn, tree: Tree) -> Tree:
    """One edit: replace a value, delete it, add a key, duplicate a list item or a key."""
    paths = _paths(tree)
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "duplicate"]))
    if op == "replace":
        text = draw(_json_text())
        return _edit(tree, path, lambda node: ("raw", text))
    if op == "delete" and path:
        return _edit(tree, path, lambda node: None)
    key = draw(st.sampled_from(["extra", "length", "round", "params", ""]) | st.text(max_size=8))
    text = draw(_json_text())

    def grow(node: Tree) -> Tree:
        tag, value = node
        if tag == "obj":
            if op == "duplicate" and value:  # the same key twice
                return ("obj", value + [value[draw(st.integers(0, len(value) - 1))]])
            return ("obj", value + [(key, ("raw", text))])
        if tag == "arr" and value:
            return ("arr", value + [value[draw(st.integers(0, len(value) - 1))]])
        if tag == "arr":
            return ("arr", [("raw", text)])
        return ("raw", text)

    return _edit(tree, path, grow)


@st.composite
def meta_mutations(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` (a he_agg envelope) with 1-3 edits of its meta JSON and optionally its body
    shortened or lengthened, re-sealed with a valid checksum."""
    split = _split(valid)
    assert split is not None, "meta_mutations needs a he_agg envelope"
    kind, meta, body = split
    tree = _tree(meta)
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(_meta_edit(tree))
    cut = draw(st.sampled_from([0, 0, 0, 8, 64, -8, len(body)]))
    body = body[: len(body) - cut] if cut >= 0 else body + bytes(-cut)
    return reseal(kind, _text(tree).encode("utf-8", "surrogatepass"), body)


# -- byte-level mutations ----------------------------------------------------------------------


def random_bytes(max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Random bytes, sometimes behind a valid-looking magic (he_agg, SEAL, protobuf)."""
    prefixes = st.sampled_from([b"", b"HEAG", b"HEAG\x02\x00", b"\x5e\xa1\x10\x04", b"\x0a", b"\x12"])
    return st.tuples(prefixes, st.binary(max_size=max_size)).map(lambda pair: pair[0] + pair[1])


@st.composite
def byte_mutations(draw: st.DrawFn, valid: bytes) -> bytes:
    """1-4 edits of ``valid`` — flip, set, truncate, extend, insert, delete, splice — half of
    them in the first 300 bytes, where the headers are."""
    out = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete", "splice"]))
        size = max(len(out), 1)
        near_head = draw(st.booleans())
        pos = draw(st.integers(0, min(size, 300) - 1 if near_head else size - 1))
        blob = draw(st.binary(min_size=1, max_size=9))
        if op == "flip" and out:
            out[min(pos, len(out) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos : pos + len(blob)] = blob
        elif op == "truncate":
            del out[pos:]
        elif op == "extend":
            out += blob * draw(st.integers(1, 64))
        elif op == "insert":
            out[pos:pos] = blob
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 4096))]
        else:  # splice: a slice of the valid bytes copied over another place
            start = draw(st.integers(0, len(valid) - 1))
            piece = valid[start : start + draw(st.integers(1, 4096))]
            if draw(st.booleans()):
                out[pos : pos + len(piece)] = piece
            else:
                out[pos:pos] = piece
    return bytes(out)


def fuzz_inputs(valid: bytes) -> st.SearchStrategy[bytes]:
    """Every kind of input this harness makes from ``valid``."""
    kinds = [random_bytes(), byte_mutations(valid)]
    if _split(valid) is not None:
        kinds += [meta_mutations(valid), meta_mutations(valid)]  # the richest source: weighted up
    return st.one_of(*kinds)


# -- the harness -------------------------------------------------------------------------------


def assert_only_heagg_errors(parse: Callable[[bytes], object], valid: bytes, *, examples: int = EXAMPLES,
                             max_seconds: float = 10.0) -> None:
    """Run ``parse`` on ``examples`` inputs derived from ``valid``; fail on any exception that
    is not a HeAggError, and on any single parse slower than ``max_seconds`` (a generous
    sanity cap against hangs, not a benchmark)."""
    parse(valid)  # the valid input parses: the harness is pointed at the right parser

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(data=fuzz_inputs(valid))
    def run(data: bytes) -> None:
        start = time.perf_counter()
        try:
            parse(data)
        except HeAggError:
            pass
        elapsed = time.perf_counter() - start
        assert elapsed < max_seconds, f"one parse took {elapsed:.1f} s (> {max_seconds} s) on {len(data)} bytes"

    run()
