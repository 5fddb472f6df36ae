"""Packed residues (bitlen(q) bits each) on the wire and in the summing kernel; the
native sum split over threads.

Laws: packing round-trips; packed and unpacked sources sum bit-identically on every
backend; a residue >= q inside a packed body is refused with the sum untouched; packed
bodies of any other size than the formula are refused; threaded and single-threaded sums
are bit-identical and roll back exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he_agg import enrolled as en
from he_agg.ciphertext import CiphertextBatch, residue_view, view_digest
from he_agg.errors import FormatError, ParameterError, ResidueRangeError, TicketError
from he_agg.hazmat import kernels
from he_agg.hazmat.wire import packed
from he_agg.hazmat.wire.envelope import Kind, body_hash, open_envelope, seal_envelope
from he_agg.identity import PartyIdentity
from he_agg.params import AGGREGATION, Params, is_prime

from .test_enrolled_client import CID, setup, small_params_module, ternary_secret  # noqa: F401 (fixtures)

BACKENDS = kernels.available_backends()


def prime_below(bits: int, skip: int = 0) -> int:
    """The (skip+1)-th largest prime below 2^bits (bitlen exactly `bits`)."""
    q, found = (1 << bits) - 1, -1
    while True:
        if is_prime(q):
            found += 1
            if found == skip:
                return q
        q -= 2


def residues(rng: np.random.Generator, shape: tuple[int, ...], moduli: Sequence[int]) -> np.ndarray:
    """Uniform residues, a third of them q - 1 (every bit of a row in use)."""
    planes = []
    for q in moduli:
        x = rng.integers(0, q, size=shape[:-2] + shape[-1:], dtype=np.uint64)
        x[rng.random(x.shape) < 0.3] = np.uint64(q - 1)
        planes.append(x)
    return np.stack(planes, axis=-2)


def words_of(cts: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Unpacked source: one leading byte (odd alignment), then the ciphertexts."""
    return b"\x55" + cts.tobytes(), 1 + cts[0].nbytes * np.arange(cts.shape[0], dtype=np.uint64)


def packed_of(cts: np.ndarray, moduli: Sequence[int]) -> tuple[bytes, np.ndarray]:
    """Packed source: three leading bytes (odd alignment), then the packed ciphertexts."""
    step = kernels.packed_ct_bytes(cts.shape[1], cts.shape[-1], moduli)
    return b"abc" + packed.pack_residues(cts, moduli), 3 + step * np.arange(cts.shape[0], dtype=np.uint64)


def plant(blob: bytes, start: int, cts_shape: tuple[int, ...], moduli: Sequence[int], where: tuple[int, ...],
          value: int) -> bytes:
    """Write `value` (< 2^b) as residue `where` = (c, p, l, i) of the packed source at byte `start`."""
    c, p, l, i = where
    _, polys, _, n = cts_shape
    words = kernels.packed_row_words(n, moduli)
    b = moduli[l].bit_length()
    bit = 8 * (start + kernels.packed_ct_bytes(polys, n, moduli) * c + 8 * (p * sum(words) + sum(words[:l]))) + i * b
    whole = int.from_bytes(blob, "little")
    whole &= ~(((1 << b) - 1) << bit)
    return (whole | (value << bit)).to_bytes(len(blob), "little")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


# -- format ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.lists(st.integers(30, 60), min_size=1, max_size=3), logn=st.integers(1, 9),
       rows=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_pack_round_trip_and_size(bits: list[int], logn: int, rows: int, seed: int) -> None:
    moduli = tuple(prime_below(b, k) for k, b in enumerate(bits))
    n = 1 << logn
    x = residues(np.random.default_rng(seed), (rows, len(moduli), n), moduli)
    blob = packed.pack_residues(x, moduli)
    assert len(blob) == packed.packed_size(x.shape, moduli) == 8 * rows * sum(-(-n * b // 64) for b in bits)
    for name in BACKENDS:
        with kernels.use_backend(name):
            assert np.array_equal(packed.unpack_residues(blob, x.shape, moduli), x), name
    assert packed.hash_unpacked(blob, x.shape, moduli) == body_hash(x.tobytes())


def test_sixty_bit_primes_take_seven_and_a_half_bytes() -> None:
    moduli = AGGREGATION.data_moduli
    assert {q.bit_length() for q in moduli} == {60}
    shape = (3, 2, len(moduli), AGGREGATION.n)
    assert packed.packed_size(shape, moduli) == 7.5 * np.prod(shape)


def test_pack_refuses_out_of_range() -> None:
    q = prime_below(40)
    with pytest.raises(FormatError):
        packed.pack_residues(np.full((1, 1, 64), q, dtype=np.uint64), (q,))
    with pytest.raises(FormatError):
        packed.unpack_residues(bytes(8 * 40 - 1), (1, 1, 64), (q,))
    bad = plant(packed.pack_residues(np.zeros((1, 1, 1, 64), np.uint64), (q,)), 0, (1, 1, 1, 64), (q,),
                (0, 0, 0, 63), q)
    with pytest.raises(ResidueRangeError):
        packed.unpack_residues(bad, (1, 1, 1, 64), (q,))


# -- the summing kernel ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.lists(st.integers(30, 60), min_size=1, max_size=3), logn=st.integers(1, 12),
       count=st.integers(1, 3), polys=st.integers(1, 2), nsrc=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_packed_sum_equals_unpacked_sum(bits: list[int], logn: int, count: int, polys: int, nsrc: int,
                                        seed: int) -> None:
    moduli = tuple(prime_below(b, k) for k, b in enumerate(bits))
    rng = np.random.default_rng(seed)
    shape = (count, polys, len(moduli), 1 << logn)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(nsrc)]
    expected = acc.copy()
    kernels.sum_ciphertexts(expected, [words_of(c) for c in cts], moduli)
    for name in BACKENDS:
        with kernels.use_backend(name):
            got = acc.copy()
            kernels.sum_packed(got, [packed_of(c, moduli) for c in cts], moduli)
            assert np.array_equal(got, expected), name


@pytest.mark.parametrize(("where", "value"), [
    ((0, 0, 0, 0, 0), "q"),            # the very first residue
    ((8, 1, 1, 1, 8191), "max"),       # the very last: every block rolled back
    ((3, 1, 0, 1, 4000), "q"),
    ((5, 1, 1, 0, 2048), "max"),       # first residue of a later block
])
def test_packed_bad_residue_rolls_back(backend: str, where: tuple[int, ...], value: str) -> None:
    moduli = (prime_below(60), prime_below(45))
    rng = np.random.default_rng(5)
    shape = (2, 2, 2, 8192)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(9)]
    sources = [packed_of(c, moduli) for c in cts]
    s, c, p, l, i = where
    bad = moduli[l] if value == "q" else (1 << moduli[l].bit_length()) - 1
    sources[s] = (plant(sources[s][0], 3, shape, moduli, (c, p, l, i), bad), sources[s][1])
    before = acc.copy()
    with pytest.raises(ResidueRangeError) as info:
        kernels.sum_packed(acc, sources, moduli)
    for part in (f"source {s}", f"ciphertext {c}", f"polynomial {p}", f"prime {l}", f"coefficient {i}", str(bad)):
        assert part in str(info.value)
    assert np.array_equal(acc, before)


def test_packed_padding_and_bounds_refused(backend: str) -> None:
    q = prime_below(41)
    acc = np.zeros((2, 1, 1, 8), np.uint64)  # 8 * 41 bits = 5.125 words: 6 words, padded
    blob, offs = packed_of(residues(np.random.default_rng(1), acc.shape, (q,)), (q,))
    kernels.sum_packed(acc.copy(), [(blob, offs)], (q,))
    dirty = bytearray(blob)
    dirty[3 + 47] |= 0x80  # the top padding bit of ciphertext 0
    with pytest.raises(FormatError, match="padding"):
        kernels.sum_packed(acc, [(bytes(dirty), offs)], (q,))
    with pytest.raises(FormatError):
        kernels.sum_packed(acc, [(blob[:-1], offs)], (q,))
    assert not acc.any()


# -- threads ------------------------------------------------------------------------------------


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every sum, however small, split over 3 threads (native backend)."""
    if "native" not in BACKENDS:
        pytest.skip("threads split the native sum only")
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WORDS", 0)
    with kernels.use_backend("native"), kernels.use_threads(3):
        yield


def _segmented(cts: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Each ciphertext cut into three segments, at odd places."""
    blob = b"\x01" + cts.tobytes()
    ct_bytes = cts[0].nbytes
    segs = np.array([[[1 + c * ct_bytes, 13], [14 + c * ct_bytes, 1000],
                      [1014 + c * ct_bytes, ct_bytes - 1013]] for c in range(cts.shape[0])], dtype=np.uint64)
    return blob, segs


@pytest.mark.parametrize("kind", ["contiguous", "segmented", "packed"])
def test_threaded_sum_is_bit_identical(threaded: None, kind: str) -> None:
    moduli = (prime_below(60), prime_below(52))
    rng = np.random.default_rng(7)
    shape = (7, 2, 2, 1024)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(6)]
    make = {"contiguous": words_of, "segmented": _segmented, "packed": lambda c: packed_of(c, moduli)}[kind]
    run = kernels.sum_packed if kind == "packed" else kernels.sum_ciphertexts
    single = acc.copy()
    with kernels.use_threads(1):
        run(single, [make(c) for c in cts], moduli)
    many = acc.copy()
    run(many, [make(c) for c in cts], moduli)
    assert np.array_equal(many, single)


@pytest.mark.parametrize("kind", ["contiguous", "segmented", "packed"])
@pytest.mark.parametrize("bad", [[(4, 6)], [(1, 0)], [(5, 1), (2, 6), (2, 4)], [(2, 1), (5, 6)], [(3, 5), (3, 1)],
                                 [("acc", 3), (0, 0)], [("acc", 0), (1, 5)]])
def test_threaded_rollback_is_exact(threaded: None, kind: str, bad: list[tuple[object, int]]) -> None:
    """Bad residues in some slices: every slice (finished or not) is rolled back, and the
    error is the single-threaded one."""
    moduli = (prime_below(60), prime_below(52))
    rng = np.random.default_rng(8)
    shape = (7, 2, 2, 256)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(6)]
    for source, c in bad:
        if source == "acc":
            acc[c, 1, 0, 200] = np.uint64(moduli[0])
        elif kind != "packed":
            cts[int(source)][c, 0, 1, 100 + c] = np.uint64(moduli[1])  # type: ignore[call-overload]
    make = {"contiguous": words_of, "segmented": _segmented, "packed": lambda c: packed_of(c, moduli)}[kind]
    sources = [make(c) for c in cts]
    if kind == "packed":
        for source, c in bad:
            if source != "acc":
                blob, offs = sources[int(source)]  # type: ignore[call-overload]
                sources[int(source)] = (plant(blob, 3, shape, moduli, (c, 0, 1, 100 + c), moduli[1]), offs)  # type: ignore[call-overload]
    run = kernels.sum_packed if kind == "packed" else kernels.sum_ciphertexts
    errors = []
    for threads in (1, 3):
        got = acc.copy()
        with kernels.use_threads(threads), pytest.raises(ResidueRangeError) as info:
            run(got, sources, moduli)
        assert np.array_equal(got, acc), threads
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_thread_count_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.THREADS_ENV, raising=False)
    assert kernels.thread_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(kernels.THREADS_ENV, "3")
    assert kernels.thread_count() == 3
    with kernels.use_threads(1):
        assert kernels.thread_count() == 1
    for junk in ("0", "-2", "two", "1e3"):
        monkeypatch.setenv(kernels.THREADS_ENV, junk)
        with pytest.raises(ParameterError):
            kernels.thread_count()
    with pytest.raises(ParameterError):
        kernels.use_threads(0).__enter__()


# -- envelopes ------------------------------------------------------------------------------------


def random_batch(rng: np.random.Generator, length: int, params: Params = AGGREGATION) -> CiphertextBatch:
    batch = CiphertextBatch.zeros(params, length)
    batch.data[...] = residues(rng, batch.data.shape, params.data_moduli)
    return batch


def test_packed_envelopes_sum_like_unpacked() -> None:
    rng = np.random.default_rng(3)
    params = AGGREGATION
    batches = [random_batch(rng, 9000) for _ in range(5)]
    plain = CiphertextBatch.sum([b.to_bytes() for b in batches], params)
    assert CiphertextBatch.sum([b.to_bytes(packed=True) for b in batches], params) == plain
    assert CiphertextBatch.sum([b.to_bytes(packed=k % 2 == 1) for k, b in enumerate(batches)], params) == plain
    blob = batches[0].to_bytes(packed=True)
    body = open_envelope(blob, Kind.CIPHERTEXT_BATCH, "t").body
    assert len(body) == packed.packed_size(batches[0].data.shape, params.data_moduli)
    assert len(body) == 7.5 * batches[0].data.size
    assert CiphertextBatch.from_bytes(blob, params) == batches[0]
    assert view_digest(residue_view(blob, params), params) == batches[0].digest


def reseal(blob: bytes, kind: Kind, *, meta: dict | None = None, body: bytes | None = None) -> bytes:  # type: ignore[type-arg]
    env = open_envelope(blob, kind, "test")
    new_meta = env.meta.as_dict() | (meta or {})
    return seal_envelope(kind, new_meta, bytes(env.body) if body is None else body)


def test_packed_envelope_refusals() -> None:
    rng = np.random.default_rng(4)
    params = AGGREGATION
    batch = random_batch(rng, 5000)
    blob = batch.to_bytes(packed=True)
    body = bytes(open_envelope(blob, Kind.CIPHERTEXT_BATCH, "t").body)
    kind = Kind.CIPHERTEXT_BATCH
    for wrong in (body[:-1], body[:-8], body + bytes(8), body + b"\0", batch.data.tobytes()):
        with pytest.raises(FormatError):
            CiphertextBatch.sum([reseal(blob, kind, body=wrong)], params)
    for flag in (False, 1, "true", None):
        with pytest.raises(FormatError):
            CiphertextBatch.from_bytes(reseal(blob, kind, meta={"packed": flag}), params)
    with pytest.raises(FormatError):  # a 64-bit-word body claiming to be packed
        CiphertextBatch.from_bytes(reseal(batch.to_bytes(), kind, meta={"packed": True}), params)
    acc = CiphertextBatch.sum([random_batch(rng, 5000).to_bytes()], params)
    before = acc.data.copy()
    shape = batch.data.shape
    bad = plant(body, 0, shape, params.data_moduli, (1, 1, 1, 4095), params.data_moduli[1])
    good_words = batch.to_bytes()
    with pytest.raises(ResidueRangeError):  # the words are added first, then the bad packed body
        acc.accumulate([residue_view(good_words, params), residue_view(reseal(blob, kind, body=bad), params)])
    assert np.array_equal(acc.data, before)
    with pytest.raises(ResidueRangeError):
        CiphertextBatch.from_bytes(reseal(blob, kind, body=bad), params)


# -- enrolled uploads -------------------------------------------------------------------------------


def test_packed_enrolled_uploads(setup: dict) -> None:  # type: ignore[type-arg]  # noqa: F811
    params, keys, uploads = setup["params"], setup["keys"], setup["uploads"]
    moduli = params.data_moduli
    plain = en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=7, verify_key=keys)
    tight = en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=7, verify_key=keys)
    for up in uploads:
        plain.add(up.to_bytes())
        blob = up.to_bytes(packed=True)
        body = open_envelope(blob, Kind.ENROLLED_UPLOAD, "t").body
        assert len(body) == packed.packed_size(up.c0.shape, moduli) < up.c0.nbytes
        back = en.EnrolledUpload.from_bytes(blob, params, CID, verify_key=keys)
        assert np.array_equal(back.c0, up.c0) and back.ticket == up.ticket
        tight.add(blob)
    assert np.array_equal(tight.sum, plain.sum)


def test_packed_enrolled_refusals(setup: dict) -> None:  # type: ignore[type-arg]  # noqa: F811
    params, keys, uploads, ids = setup["params"], setup["keys"], setup["uploads"], setup["ids"]
    moduli = params.data_moduli
    kind = Kind.ENROLLED_UPLOAD
    acc = en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=7, verify_key=keys)
    acc.add(uploads[0].to_bytes(packed=True))
    before = acc.sum.copy()
    # a client-signed upload whose packed body holds a residue >= q (a ticket cannot vouch for range)
    up = uploads[2]
    c0 = up.c0.copy()
    shape = (c0.shape[0], 1) + c0.shape[1:]
    blob = plant(packed.pack_residues(c0, moduli), 0, shape, moduli, (1, 0, 1, 17), moduli[1])
    c0[1, 1, 17] = moduli[1]
    digest = en.c0_digest(params, up.layout.length, body_hash(c0.tobytes()))
    ticket = en.Ticket.sign(ids[2], committee_id=CID, epoch=3, round_id=7, client_id="c2",
                            layout_digest=up.layout.digest, c0_digest=digest)
    forged = reseal(en.EnrolledUpload(params, ticket, up.layout, up.c0).to_bytes(packed=True), kind, body=blob)
    with pytest.raises(ResidueRangeError):
        acc.add(forged)
    with pytest.raises(ResidueRangeError):
        en.EnrolledUpload.from_bytes(forged, params, CID, verify_key=keys)
    assert np.array_equal(acc.sum, before) and acc.contributors == ("c0",)
    good = uploads[1].to_bytes(packed=True)
    body = bytes(open_envelope(good, kind, "t").body)
    for wrong in (body[:-1], body[:-8], body + bytes(8)):
        with pytest.raises(FormatError):
            acc.add(reseal(good, kind, body=wrong))
    with pytest.raises(FormatError):
        acc.add(reseal(good, kind, meta={"packed": 1}))
    with pytest.raises(TicketError):  # another client's packed residues under this ticket
        acc.add(reseal(good, kind, body=bytes(open_envelope(uploads[2].to_bytes(packed=True), kind, "t").body)))
    assert np.array_equal(acc.sum, before)
    acc.add(good)
    assert acc.contributors == ("c0", "c1")


# -- row-wise kernels over threads -----------------------------------------------------------------


@pytest.fixture
def rows_threaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every row-wise kernel (NTT, pointwise, CRT), however small, split over threads."""
    if "native" not in BACKENDS:
        pytest.skip("threads split the native kernels only")
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ROW_WORDS", 0)
    with kernels.use_backend("native"):
        yield


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 9), threads=st.integers(2, 5), broadcast=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_threaded_row_kernels_are_bit_identical(rows_threaded: None, rows: int, threads: int, broadcast: bool,
                                                seed: int) -> None:
    """Split by rows over any thread count, NTT / INTT / mul / muladd / add / CRT give the
    single-threaded bits, with same-shape or broadcast (nmod, n) operands."""
    moduli = (1152921504606683137, 1152921504606748673)  # NTT-friendly for n = 256 (1 mod 2^17)
    rng = np.random.default_rng(seed)
    a = residues(rng, (rows, 2, 256), moduli)
    b = residues(rng, (2, 256) if broadcast else (rows, 2, 256), moduli)
    c = residues(rng, (rows, 2, 256), moduli)

    def run_all() -> list[np.ndarray]:
        fwd, inv = a.copy(), a.copy()
        kernels.ntt_forward(fwd, moduli)
        kernels.ntt_inverse(inv, moduli)
        outs = [np.empty_like(a) for _ in range(3)]
        kernels.mul(outs[0], a, b, moduli)
        kernels.muladd(outs[1], a, b, c, moduli)
        kernels.add(outs[2], a, b, moduli)
        return [fwd, inv, *outs, kernels.crt_to_double(a, moduli, 2.0**70)]

    with kernels.use_threads(1):
        single = run_all()
    with kernels.use_threads(threads):
        many = run_all()
    for x, y in zip(single, many):
        assert np.array_equal(x, y)
