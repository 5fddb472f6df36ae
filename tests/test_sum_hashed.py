"""The server's one-read pass: sum an upload and compute its body digest together.

Laws: kernels.sum_hashed gives the big-integer sum and the body digest of the words, bit
for bit the same on every backend and thread count, wherever segment and ciphertext
boundaries fall; a bad residue is reported exactly as by sum_ciphertexts and leaves the
sum untouched. At the server, deferring the hash to the summing pass changes no error:
bytes that fail their checksum are reported as such, a body that does not match its
ticket is refused, and the sum is exactly as before every refusal.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import he_agg
from he_agg.errors import ChecksumError, DuplicateContributionError, ResidueRangeError, TicketError
from he_agg.hazmat import kernels
from he_agg.hazmat.wire import envelope
from he_agg.hazmat.wire.envelope import body_hash

from .fuzzing import reseal

MODULI = [(12289, 786433), (1099510890497, 1099511480321, 1152921504606748673), (2305843009213554689,)]


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """``count`` summing threads, engaged even for small inputs."""
    with kernels.use_threads(count), pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "PARALLEL_MIN_WORDS", 1)
        yield


def _words(rng: np.random.Generator, count: int, moduli: tuple[int, ...], n: int) -> np.ndarray:
    return np.stack([rng.integers(0, q, (count, 1, n), dtype=np.uint64) for q in moduli], axis=2).reshape(
        count, 1, len(moduli), n).copy()


def _exact_sum(a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    out = np.empty_like(a)
    for l, q in enumerate(moduli):
        out[:, :, l] = ((a[:, :, l].astype(object) + b[:, :, l].astype(object)) % q).astype(np.uint64)
    return out


@settings(max_examples=20, deadline=None)
@given(moduli=st.sampled_from(MODULI), n=st.sampled_from([256, 1024]), count=st.integers(0, 90),
       threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_sum_and_digest_on_every_backend_and_thread_count(moduli: tuple[int, ...], n: int, count: int, threads: int,
                                                          seed: int) -> None:
    rng = np.random.default_rng(seed)
    acc0, words = _words(rng, count, moduli, n), _words(rng, count, moduli, n)
    expected = _exact_sum(acc0, words, moduli)
    for backend in kernels.available_backends():
        acc = acc0.copy()
        with kernels.use_backend(backend), _threads(threads):
            digest = kernels.sum_hashed(acc, words, moduli)
        assert digest == body_hash(words.tobytes()), backend
        assert np.array_equal(acc, expected), backend
        kernels.undo_hashed(acc, words, moduli)
        assert np.array_equal(acc, acc0), backend


@settings(max_examples=20, deadline=None)
@given(moduli=st.sampled_from(MODULI), count=st.integers(1, 90), where=st.integers(0, 2**40),
       threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), second=st.booleans())
def test_a_bad_residue_is_named_as_by_sum_ciphertexts(moduli: tuple[int, ...], count: int, where: int, threads: int,
                                                      seed: int, second: bool) -> None:
    n = 1024
    rng = np.random.default_rng(seed)
    acc, words = _words(rng, count, moduli, n), _words(rng, count, moduli, n)
    flat = words.reshape(-1)
    bad = where % flat.size
    flat[bad] = moduli[(bad // n) % len(moduli)]  # equal to its prime
    if second:  # a second fault later: the first is the one named
        flat[-1] = np.uint64(2**64 - 1)
    before = acc.copy()
    offsets = np.arange(count, dtype=np.uint64) * np.uint64(words[0].nbytes)
    with pytest.raises(ResidueRangeError) as reference:
        kernels.sum_ciphertexts(acc, [(words, offsets)], moduli)
    with _threads(threads), pytest.raises(ResidueRangeError) as fused:
        kernels.sum_hashed(acc, words, moduli)
    assert str(fused.value) == str(reference.value)
    assert np.array_equal(acc, before)


# -- at the server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round_inputs() -> tuple[he_agg.EnrolledCommittee, list[bytes], list[np.ndarray]]:
    committee = he_agg.EnrolledCommittee.generate(5, 3)
    rng = np.random.default_rng(7)
    values = [rng.uniform(-1, 1, 200_000) for _ in range(4)]  # bodies of several 1 MiB segments
    blobs = [committee.client(f"site-{k}").encrypt(v, round_id=3, packing="dense") for k, v in enumerate(values)]
    return committee, blobs, values


def _body_span(blob: bytes) -> tuple[int, int]:
    _, _, _, meta_len, _, body_len = envelope._FIXED.unpack_from(blob)
    start = envelope._body_offset(meta_len)
    return start, start + body_len


def _resealed_body(blob: bytes, edit: int) -> bytes:
    """The upload with one residue word replaced by a smaller in-range value, re-sealed
    with a valid checksum (anyone can): only the ticket's c0 digest can catch it."""
    start, end = _body_span(blob)
    body = bytearray(blob[start:end])
    word = struct.unpack_from("<Q", body, edit)[0]
    struct.pack_into("<Q", body, edit, word // 2)
    _, _, kind, meta_len, _, _ = envelope._FIXED.unpack_from(blob)
    meta = blob[envelope._FIXED.size : envelope._FIXED.size + meta_len]
    return reseal(kind, meta, bytes(body))


def test_server_refusals_leave_the_sum_and_lose_nothing(round_inputs) -> None:  # type: ignore[no-untyped-def]
    committee, blobs, values = round_inputs
    agg = he_agg.Aggregator(committee.public_context, round_id=3)
    agg.add(blobs[0])
    agg.add(blobs[1])
    before = agg._accumulator.sum.copy()
    start, end = _body_span(blobs[2])
    late = end - 8 - (end - start) // 3 // 8 * 8  # a word in a later segment than the first
    flipped = bytearray(blobs[2])
    flipped[late] ^= 0x01
    huge = bytearray(blobs[2])
    huge[late : late + 8] = b"\xff" * 8  # out of range AND corrupted: the checksum is the error
    meta_hit = bytearray(blobs[2])
    meta_hit[envelope._FIXED.size + 5] ^= 0x20
    dup = bytearray(blobs[1])
    dup[late] ^= 0x01  # a corrupted copy of an accepted client's upload: corruption, not a duplicate
    for bad, error in [(bytes(flipped), ChecksumError), (bytes(huge), ChecksumError),
                       (bytes(meta_hit), ChecksumError), (bytes(dup), ChecksumError),
                       (_resealed_body(blobs[2], late - start), TicketError),
                       (_resealed_body(blobs[2], 8), TicketError), (blobs[1], DuplicateContributionError)]:
        with pytest.raises(error):
            agg.add(bad)
        assert np.array_equal(agg._accumulator.sum, before) and len(agg) == 2
    agg.add(blobs[2])
    agg.add(blobs[3])
    request = agg.decryption_request()
    approvals = [committee[m].approve(request) for m in range(he_agg.quorum_size(5, committee.public_context.colluders))]
    certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
    total = agg.finalize([committee[m].decryption_share(request, certificate) for m in request.active_sets[0]])
    assert np.abs(total - sum(values)).max() < 1e-6


def test_a_corrupted_first_upload_is_reported_as_corrupted(round_inputs) -> None:  # type: ignore[no-untyped-def]
    """The first upload sizes the round; opened with its hash deferred, it still fails on its checksum."""
    committee, blobs, _ = round_inputs
    start, end = _body_span(blobs[0])
    for position in (start + 3, end - 5, envelope._FIXED.size + 2):
        bad = bytearray(blobs[0])
        bad[position] ^= 0x10
        agg = he_agg.Aggregator(committee.public_context, round_id=3)
        with pytest.raises(ChecksumError):
            agg.add(bytes(bad))
        assert len(agg) == 0 and agg._accumulator is None and agg.layout is None  # no trace, not even a layout
        agg.add(blobs[0])
        assert len(agg) == 1


def test_an_accumulator_that_sums_elsewhere_checks_a_deferred_upload_first(round_inputs) -> None:  # type: ignore[no-untyped-def]
    """he_agg.dask's accumulator sums on shards (``_hashes_in_sum = False``): an upload opened
    with its hash deferred is checked in full before its ``_sum`` runs, never summed locally."""
    from he_agg.enrolled import C0Accumulator, open_upload

    committee, blobs, _ = round_inputs
    ctx = committee.public_context
    summed: list[int] = []

    class Elsewhere(C0Accumulator):
        _hashes_in_sum = False

        def _sum(self, c0) -> None:  # type: ignore[no-untyped-def]
            summed.append(1)

    def opened(blob: bytes):  # type: ignore[no-untyped-def]
        return open_upload(blob, ctx.params, ctx.committee_id, verify_key=None, epoch=0, round_id=3, check=False,
                           defer_body=True)

    first = opened(blobs[0])
    assert first.check_body is not None and first.residues_hash is None
    acc = Elsewhere(ctx.params, first.layout.length, committee_id=ctx.committee_id, epoch=0, round_id=3,
                    layout=first.layout)
    start, _ = _body_span(blobs[1])
    bad = bytearray(blobs[1])
    bad[start + 40] ^= 0x04
    with pytest.raises(ChecksumError):
        acc.add(opened(bytes(bad)))
    assert summed == [] and len(acc) == 0
    acc.add(first)
    assert summed == [1] and not acc._acc.any()  # summed by _sum, not by the local one-read pass
