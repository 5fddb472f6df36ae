"""The body digest (he_agg.hazmat.wire.digest): one definition, however it is computed.

The law: for any body, the parallel digest, the streaming digest over any split into
pieces, and root(segment digests) are one value, which equals the formula written out
here with blake3 alone; any change to the bytes or the length changes it.
"""

from __future__ import annotations

import os
import struct

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.hazmat import kernels
from he_agg.hazmat.wire import digest
from he_agg.hazmat.wire.envelope import body_hash

S = digest.SEGMENT


def _formula(body: bytes) -> bytes:
    children = b"".join(blake3.blake3(body[k : k + S]).digest() for k in range(0, len(body), S))
    return blake3.blake3(b"he_agg.body-digest.v2\0" + struct.pack("<Q", len(body)) + children).digest()


@pytest.mark.parametrize("size", [0, 1, 64, S - 1, S, S + 1, 2 * S, 3 * S + 17])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_way_gives_the_formula(size: int, threads: int) -> None:
    body = os.urandom(size)
    expected = _formula(body)
    with kernels.use_threads(threads):
        assert body_hash(body) == expected
        assert digest.body_digest(memoryview(body)) == expected
    count = digest.segment_count(size)
    assert digest.root(size, digest.segment_digests(memoryview(body), 0, count)) == expected
    stream = digest.StreamDigest()
    stream.update(body)
    assert stream.digest() == expected


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 2 * S + 100), cuts=st.lists(st.integers(0, 2 * S + 100), max_size=6), seed=st.binary(
    min_size=8, max_size=8))
def test_stream_over_any_split(size: int, cuts: list[int], seed: bytes) -> None:
    body = blake3.blake3(seed).digest(length=size)
    points = sorted({0, size, *(c for c in cuts if c <= size)})
    stream = digest.StreamDigest()
    for a, b in zip(points, points[1:]):
        stream.update(body[a:b])
    assert stream.digest() == _formula(body) == body_hash(body)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 2 * S + 100), where=st.integers(0, 2**62), bit=st.integers(0, 7))
def test_a_flipped_bit_or_a_new_length_changes_it(size: int, where: int, bit: int) -> None:
    body = bytearray(blake3.blake3(b"x").digest(length=size))
    before = body_hash(bytes(body))
    body[where % size] ^= 1 << bit
    assert body_hash(bytes(body)) != before
    assert body_hash(bytes(body) + b"\0") != body_hash(bytes(body))  # a zero appended is another body


def test_root_refuses_a_wrong_segment_list() -> None:
    with pytest.raises(ValueError):
        digest.root(S + 1, [b"\0" * 32])


@pytest.mark.parametrize(("moduli", "n", "rows"), [((12289, 786433), 1024, 300),
                                                    ((1099510890497, 1099511480321, 1152921504606748673), 512, 260),
                                                    ((2305843009213554689,), 256, 1300)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_packed_bodies_digest_as_their_unpacked_words(moduli: tuple[int, ...], n: int, rows: int, threads: int) -> None:
    """Segments of the unpacked words need not align with rows of every prime (3 primes):
    the per-thread, per-segment unpacking still hashes exactly the unpacked bytes."""
    from he_agg.hazmat.wire import packed

    rng = np.random.default_rng(rows)
    words = np.stack([rng.integers(0, q, (rows, n), dtype=np.uint64) for q in moduli], axis=1).reshape(
        rows, 1, len(moduli), n).copy()
    assert words.nbytes > 2 * S  # several segments
    blob = packed.pack_residues(words, moduli)
    with kernels.use_threads(threads):
        assert packed.hash_unpacked(blob, words.shape, moduli) == _formula(words.tobytes())


def test_an_envelope_from_before_the_tree_digest_names_its_version() -> None:
    """Version 1 envelopes checksummed BLAKE3(body): a reader says which version it got, not "corrupted"."""
    from he_agg.errors import FormatError
    from he_agg.hazmat.wire import envelope

    blob = bytearray(envelope.seal_envelope(envelope.Kind.APPROVAL, {"x": 1}, os.urandom(64)))
    assert envelope.open_envelope(bytes(blob), envelope.Kind.APPROVAL, "approval").meta.integer("x") == 1
    struct.pack_into("<H", blob, 4, 1)
    with pytest.raises(FormatError, match="wire version 1, this release reads 2"):
        envelope.open_envelope(bytes(blob), envelope.Kind.APPROVAL, "approval")
