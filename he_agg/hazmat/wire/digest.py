"""The body digest every wire checksum and content digest is built on: a two-level BLAKE3 tree.

::

    body_digest(B) = BLAKE3(DOMAIN ‖ u64le len(B) ‖ BLAKE3(B[0:S]) ‖ BLAKE3(B[S:2S]) ‖ …),   S = 1 MiB

The last segment may be shorter; an empty body has no segments. Segments are independent,
so a large body is hashed on every core (:func:`body_digest`), and the server's summing
pass can hash each segment of an upload just before it adds the ciphertexts that start in
it, while the bytes are still in cache (:func:`segment_digests` + :func:`root`): an upload
is read from memory once. :class:`StreamDigest` gives the same digest for bytes that
arrive in pieces (unpacked scratch buffers, zstd blocks).

A collision of two bodies' digests is a BLAKE3 collision: the root input is
length-prefixed and its children are fixed-size digests of fixed segments.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import blake3

__all__ = ["SEGMENT", "StreamDigest", "body_digest", "over_segments", "root", "segment_count", "segment_digests"]

#: Segment size in bytes (a multiple of every row of residues: 8·N ≤ 1 MiB for N ≤ 2^17).
SEGMENT = 1 << 20
_DOMAIN = b"he_agg.body-digest.v2\0"
_PARALLEL_MIN_SEGMENTS = 2


def segment_count(size: int) -> int:
    """Segments of a ``size``-byte body."""
    return -(-size // SEGMENT)


def segment_digests(view: memoryview, first: int, last: int) -> list[bytes]:
    """BLAKE3 of segments ``first`` .. ``last`` − 1 of ``view`` (a flat byte view); the GIL
    is released while each segment is hashed."""
    return [blake3.blake3(view[k * SEGMENT : (k + 1) * SEGMENT]).digest() for k in range(first, last)]


def root(size: int, digests: Sequence[bytes]) -> bytes:
    """The body digest from the body's size and its segments' digests, in order."""
    if len(digests) != segment_count(size):
        raise ValueError(f"a {size}-byte body has {segment_count(size)} segments, not {len(digests)}")
    return blake3.blake3(_DOMAIN + struct.pack("<Q", size) + b"".join(digests)).digest()


def over_segments(run: Callable[[int, int], list[bytes]], count: int) -> list[bytes]:
    """``run(first, last)`` (the digests of segments first .. last − 1) over ``count``
    segments, split into contiguous ranges over the summing threads; digests in order."""
    from ..kernels import _slices, raise_first, run_everywhere, thread_count

    parts = min(thread_count(), count)
    if parts < 2 or count < _PARALLEL_MIN_SEGMENTS:
        return run(0, count)
    outcomes = run_everywhere([lambda lo=lo, hi=hi: run(lo, hi) for lo, hi in _slices(count, parts)])
    raise_first(outcomes)
    return [digest for part in outcomes for digest in part]


def body_digest(view: memoryview) -> bytes:
    """The body digest of a flat byte view, its segments hashed on the summing threads."""
    return root(len(view), over_segments(lambda first, last: segment_digests(view, first, last),
                                         segment_count(len(view))))


class StreamDigest:
    """:func:`body_digest` of bytes given in order, in pieces of any size."""

    __slots__ = ("_digests", "_hasher", "_filled", "_size")

    def __init__(self) -> None:
        self._digests: list[bytes] = []
        self._hasher = blake3.blake3()
        self._filled = 0
        self._size = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        while len(view):
            take = min(len(view), SEGMENT - self._filled)
            self._hasher.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == SEGMENT:
                self._digests.append(self._hasher.digest())
                self._hasher, self._filled = blake3.blake3(), 0

    def digest(self) -> bytes:
        tail = [self._hasher.digest()] if self._filled else []
        return root(self._size, self._digests + tail)
