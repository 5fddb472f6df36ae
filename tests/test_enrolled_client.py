"""Enrolled-client mode, client and server side: encode, round polynomials, c0 uploads, tickets, the c0 sum.

Members are emulated in the tests only: C0 + a·(Σ_k s_k), no flooding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from he_agg import enrolled as en
from he_agg.errors import (
    DuplicateContributionError,
    FormatError,
    NotEnrolledError,
    PackingError,
    ParameterError,
    ParameterMismatchError,
    ResidueRangeError,
    RoundMismatchError,
    ShareBindingError,
    SlotRangeError,
    TicketError,
)
from he_agg.hazmat import ckks, kernels, rounds
from he_agg.hazmat.sampling import KeyedStream, ternary
from he_agg.hazmat.wire.envelope import Kind, body_hash, open_envelope, seal_envelope
from he_agg.identity import PartyIdentity
from he_agg.packing import flatten, weighted_mean
from he_agg.params import AGGREGATION, Params

CID = bytes(range(32))
OTHER_CID = bytes(range(1, 33))


def stream(tag: int) -> KeyedStream:
    return KeyedStream(tag.to_bytes(32, "little"), b"test")


def ternary_secret(tag: int, n: int) -> np.ndarray:
    return ternary(stream(10_000 + tag), n).astype(np.int8)


def exact_lift(residues: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """Centred CRT lift of coefficient-form residues (..., L, N) as Python ints (..., N)."""
    q = math.prod(moduli)
    total = np.zeros(residues.shape[:-2] + residues.shape[-1:], dtype=object)
    for l, ql in enumerate(moduli):
        basis = (q // ql) * pow(q // ql, -1, ql)
        total = total + residues[..., l, :].astype(object) * basis
    total = total % q
    return np.where(total > q // 2, total - q, total)


def members_open(c0_sum: np.ndarray, secret_sum: np.ndarray, params: Params, round_id: int, epoch: int = 1,
                 committee_id: bytes = CID) -> np.ndarray:
    """C0 + a·Σs in coefficient form (count, L, N): what members and the combiner reconstruct."""
    moduli = params.data_moduli
    a = rounds.round_polynomials(committee_id, epoch, round_id, c0_sum.shape[0], params)
    out = np.empty_like(a)
    kernels.muladd(out, a, en.secret_ntt(secret_sum, params), np.ascontiguousarray(c0_sum), moduli)
    kernels.ntt_inverse(out, moduli)
    return out


def members_decode(c0_sum: np.ndarray, secret_sum: np.ndarray, params: Params, round_id: int, length: int,
                   **kw: object) -> np.ndarray:
    m = members_open(c0_sum, secret_sum, params, round_id, **kw)  # type: ignore[arg-type]
    return ckks.decode(kernels.crt_to_double(m, params.data_moduli, params.scale)).reshape(-1)[:length]


# -- encode ---------------------------------------------------------------------------------------


@given(log_half=st.integers(1, 10), log_scale=st.sampled_from([10, 30, 50]), seed=st.integers(0, 2**32 - 1),
       magnitude=st.sampled_from([1e-3, 1.0, 1e3]))
def test_encode_inverts_decode(log_half: int, log_scale: int, seed: int, magnitude: float) -> None:
    half, scale = 1 << log_half, 2.0**log_scale
    x = np.random.default_rng(seed).uniform(-magnitude, magnitude, (2, half))
    coefficients = ckks.encode(x, scale, stream(seed)).astype(np.float64)
    back = ckks.decode(coefficients / scale)
    # rounding moves each of the N coefficients by < 1: at most N/scale per slot; plus float error
    bound = 2 * half / scale + 2.0**-45 * magnitude * (log_half + 1)
    assert np.abs(back - x).max() <= bound


def test_unit_coefficients_is_the_inverse_of_decode() -> None:
    """decode keeps real parts only, so encode∘decode is a projection: exact on encodings."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 32))
    m = ckks.unit_coefficients(z)
    assert np.allclose(ckks.decode(m), z, atol=1e-13)
    assert np.allclose(ckks.unit_coefficients(ckks.decode(m)), m, atol=1e-13)
    projected = ckks.decode(rng.normal(size=(3, 64)))
    assert np.allclose(ckks.decode(ckks.unit_coefficients(projected)), projected, atol=1e-13)


def test_randomized_rounding_is_unbiased() -> None:
    """ρ = rounded − y, y the float coefficient the rounding sees (scale 2^10, M = 2^17 of them).
    E[ρ | y] = 0 for randomized rounding, so the mean of ρ over the coefficients whose
    fractional part lies in [0.1, 0.4] (≥ 2^15 of them here), and over those in [0.6, 0.9],
    must be near 0; round-to-nearest would give about −0.25 and +0.25. Hoeffding (ρ in an
    interval of length 1 given y): P(|mean| ≥ 0.04) ≤ 2·exp(−2·2^15·0.04²) < 2^-150 per bin."""
    rng = np.random.default_rng(7)
    slots = rng.uniform(-1, 1, (128, 512))
    y = ckks.unit_coefficients(slots) * 2.0**10
    rounded = ckks.encode(slots, 2.0**10, stream(3)).astype(np.float64)
    rho = rounded - y
    assert np.abs(rho).max() < 1
    frac = y - np.floor(y)
    assert set(np.unique(rounded - np.floor(y))) == {0.0, 1.0}
    for lo, hi in ((0.1, 0.4), (0.6, 0.9)):
        chosen = (frac >= lo) & (frac <= hi)
        assert chosen.sum() >= 2**15
        assert abs(rho[chosen].mean()) < 0.04
    assert abs(rho.mean()) < 0.01


def test_encode_at_scale_2_90_is_an_exact_split() -> None:
    x = np.random.default_rng(2).uniform(-1, 1, (2, AGGREGATION.slots))
    encoded = ckks.encode_split(x, AGGREGATION.scale, stream(4))
    assert encoded.shift > 0 and np.abs(encoded.high).max() < 2**61 and np.abs(encoded.low).max() <= 2**encoded.shift
    y = ckks.unit_coefficients(x) * AGGREGATION.scale
    floor = np.array([int(v) for v in np.floor(y).reshape(-1)], dtype=object).reshape(y.shape)
    delta = encoded.to_int() - floor
    assert set(np.unique(delta.astype(np.int64))) <= {0, 1}
    residues = ckks.encode_rns(x, AGGREGATION.scale, stream(4), AGGREGATION.data_moduli)
    assert (exact_lift(residues, AGGREGATION.data_moduli) == encoded.to_int()).all()


def test_thousand_client_sum_stays_exact_below_half_q() -> None:
    """1,000 clients with |x| ≤ 1 at scale 2^90: Σ of the residues lifts to exactly Σ of the integers."""
    params, moduli = AGGREGATION, AGGREGATION.data_moduli
    rng = np.random.default_rng(5)
    acc = np.zeros((len(moduli), params.n), dtype=np.uint64)
    exact = np.zeros(params.n, dtype=object)
    for block in range(10):
        x = rng.choice([-1.0, 1.0], (100, params.slots)) * rng.uniform(0.5, 1.0, (100, params.slots))
        encoded = ckks.encode_split(x, params.scale, stream(100 + block))
        top, bottom = encoded.high >> 31, encoded.high & ((1 << 31) - 1)  # column sums fit int64
        high = top.sum(axis=0).astype(object) * (1 << 31) + bottom.sum(axis=0).astype(object)
        exact = exact + high * (1 << encoded.shift) + encoded.low.sum(axis=0).astype(object)
        residues = encoded.to_rns(moduli)
        kernels.sum_ciphertexts(acc[None, None], [(r, np.zeros(1, dtype=np.uint64)) for r in residues], moduli)
    assert max(abs(int(v)) for v in exact) < params.data_modulus // 2
    assert (exact_lift(acc, moduli) == exact).all()


def test_encode_refusals() -> None:
    with pytest.raises(PackingError):
        ckks.encode(np.array([[1.0, np.nan]]), 2.0**20, stream(0))
    with pytest.raises(PackingError):
        ckks.encode(np.ones((1, 3)), 2.0**20, stream(0))
    with pytest.raises(PackingError):
        ckks.encode(np.ones((1, 4)), float("inf"), stream(0))
    with pytest.raises(SlotRangeError):
        ckks.encode(np.ones((1, 4)), 2.0**90, stream(0))  # beyond int64: use encode_rns
    with pytest.raises(SlotRangeError):
        ckks.encode_rns(np.full((1, 8), 2.0**40), 2.0**90, stream(0), AGGREGATION.data_moduli[:2] + ())


# -- round polynomials ---------------------------------------------------------------------------


def test_round_polynomials_are_injective_and_deterministic(small_params: Params) -> None:
    p = small_params
    a_1_12 = rounds.round_polynomial(CID, 1, 1, 12, p)
    a_11_2 = rounds.round_polynomial(CID, 1, 11, 2, p)
    assert not np.array_equal(a_1_12, a_11_2)
    assert np.array_equal(a_1_12, rounds.round_polynomial(CID, 1, 1, 12, p))
    assert a_1_12.shape == (len(p.data_moduli), p.n)
    assert (a_1_12 < np.array(p.data_moduli, dtype=np.uint64)[:, None]).all()
    batch = rounds.round_polynomials(CID, 1, 1, 14, p)
    assert np.array_equal(batch[12], a_1_12)
    assert np.array_equal(rounds.round_polynomials(CID, 1, 1, 3, p, start=11)[1], a_1_12)
    for other in [(OTHER_CID, 1, 1, 12), (CID, 2, 1, 12), (CID, 1, 2, 12), (CID, 1, 1, 13)]:
        assert not np.array_equal(rounds.round_polynomial(*other, p), a_1_12)
    assert not np.array_equal(rounds.round_polynomial(CID, 1, 1, 12, AGGREGATION)[:, : p.n], a_1_12)


def test_round_labels_are_injective(small_params: Params) -> None:
    tricky = [(b"ab", 1, 12, 0), (b"ab", 11, 2, 0), (b"ab\x01", 1, 2, 0), (b"a", 1, 12, 0), (b"ab", 1, 1, 2),
              (b"ab", 0, 112, 0), (b"ab", 1, 12, 1 << 32), (b"ab", 1 << 32, 12, 0)]
    labels = {rounds.round_label(c, e, r, j, small_params) for c, e, r, j in tricky}
    assert len(labels) == len(tricky)


@pytest.mark.parametrize("args", [(b"", 1, 1, 0), (CID, -1, 1, 0), (CID, 1, 2**64, 0), (CID, True, 1, 0),
                                  ("cid", 1, 1, 0), (CID, 1, 1, 1.0)])
def test_round_polynomial_refuses_bad_labels(args: tuple, small_params: Params) -> None:  # type: ignore[type-arg]
    with pytest.raises(ParameterError):
        rounds.round_polynomial(*args, small_params)


# -- client encryption, end to end ---------------------------------------------------------------


def test_fifty_clients_sum_within_the_derived_bound() -> None:
    """Σ_k c0_k + a·Σ s_k = Σ Encode(x_k) + Σ e_k. Per coefficient, Σ e has variance 10.5·K
    and |Σe| ≤ 21·K; randomized rounding adds variance ≤ K/4 (|ρ| < 1 each). Checked exactly on
    the integers (against the float coefficients y_k that are rounded), then on the slots:
    the real part of a sum of N such terms times unit roots has variance ≤ N/2·K·(10.5 + 1/4),
    divided by the scale; 7σ over every slot fails with probability < 2^-20."""
    params, moduli, K, V = AGGREGATION, AGGREGATION.data_moduli, 50, 6000
    rng = np.random.default_rng(11)
    xs = rng.uniform(-1, 1, (K, V))
    secrets = [ternary_secret(k, params.n) for k in range(K)]
    acc = en.C0Accumulator(params, V, committee_id=CID, epoch=1, round_id=4)
    for k in range(K):
        c0, layout = en.encrypt_enrolled(secrets[k], xs[k], committee_id=CID, epoch=1, round_id=4, params=params)
        acc.add(en.EnrolledUpload.create(PartyIdentity.generate(), c0, layout, client_id=f"c{k}", committee_id=CID,
                                         epoch=1, round_id=4, params=params).to_bytes())
    secret_sum = np.sum(secrets, axis=0, dtype=np.int64)
    opened = members_open(acc.sum, secret_sum, params, 4)
    padded = np.zeros((K, 2 * params.slots))
    padded[:, :V] = xs
    y = ckks.unit_coefficients(padded.reshape(K, 2, params.slots)) * params.scale
    floor_sum = sum(np.array([int(v) for v in np.floor(y[k]).reshape(-1)], dtype=object) for k in range(K))
    residual = (exact_lift(opened, moduli).reshape(-1) - floor_sum).astype(np.float64)
    # residual = Σ e + Σ (rounded − floor(y)) with the second term in [0, K]
    centred = residual - K / 2
    assert np.abs(centred).max() <= 21 * K + K / 2
    assert np.abs(centred).max() <= 7 * math.sqrt(10.5 * K + K / 4) + K / 2
    assert 0.9 * 10.5 * K <= centred.var() <= 1.1 * (10.5 * K + K / 4) + K**2 / 4 * 0.01
    sigma_slot = math.sqrt(params.n / 2 * K * (10.5 + 0.25)) / params.scale
    total = members_decode(acc.sum, secret_sum, params, 4, V)
    float_slack = 2.0**-45 * K  # float64 transforms: encode per client, decode of the sum
    assert np.abs(total - xs.sum(axis=0)).max() <= 7 * sigma_slot + float_slack


def test_rounding_noise_bound_at_a_small_scale(small_params: Params) -> None:
    """At scale 2^25 the randomized rounding and e are visible in the slots: the error must
    sit within 7σ of the derived per-slot standard deviation √(N/2·K·(10.5 + 1/4))/scale."""
    params, K, V = small_params, 50, 3000
    xs = np.random.default_rng(12).uniform(-1, 1, (K, V))
    secrets = [ternary_secret(100 + k, params.n) for k in range(K)]
    acc = en.C0Accumulator(params, V, committee_id=CID, epoch=2, round_id=0)
    for k in range(K):
        c0, layout = en.encrypt_enrolled(secrets[k], xs[k], committee_id=CID, epoch=2, round_id=0, params=params)
        acc.add(en.EnrolledUpload.create(PartyIdentity.generate(), c0, layout, client_id=f"c{k}", committee_id=CID,
                                         epoch=2, round_id=0, params=params))
    total = members_decode(acc.sum, np.sum(secrets, axis=0, dtype=np.int64), params, 0, V, epoch=2)
    error = np.abs(total - xs.sum(axis=0))
    sigma_slot = math.sqrt(params.n / 2 * K * (10.5 + 0.25)) / params.scale
    assert error.max() <= 7 * sigma_slot
    assert error.max() >= sigma_slot  # the noise is really there (6000 slots, all within 1σ: p < 2^-1000)


def test_weighted_update_and_secret_forms(small_params: Params) -> None:
    params = small_params
    x = {"w": np.arange(10, dtype=np.float32).reshape(2, 5) / 10, "b": np.ones(3)}
    s = ternary_secret(1, params.n)
    c0, layout = en.encrypt_enrolled(s, x, committee_id=CID, epoch=0, round_id=9, params=params, weight=3.0,
                                     stream=stream(9))
    assert layout.weighted and c0.shape == (1, len(params.data_moduli), params.n)
    slots = members_decode(c0, s, params, 9, layout.length, epoch=0)
    mean, weight = weighted_mean(slots, layout)
    assert abs(weight - 3.0) < 1e-4
    assert np.allclose(mean, flatten(x)[0], atol=1e-4)
    from_ntt, _ = en.encrypt_enrolled(en.secret_ntt(s, params), x, committee_id=CID, epoch=0, round_id=9,
                                      params=params, weight=3.0, stream=stream(9))
    assert np.array_equal(from_ntt, c0)
    with pytest.raises(SlotRangeError):
        en.encrypt_enrolled(s, np.full(4, 1e9), committee_id=CID, epoch=0, round_id=9, params=params)
    with pytest.raises(ValueError):
        en.encrypt_enrolled(np.zeros(params.n, dtype=np.float64), x, committee_id=CID, epoch=0, round_id=9,
                            params=params)


def test_rounds_use_different_polynomials(small_params: Params) -> None:
    params = small_params
    s = ternary_secret(2, params.n)
    x = np.linspace(-1, 1, 100)
    c0_1, _ = en.encrypt_enrolled(s, x, committee_id=CID, epoch=1, round_id=1, params=params)
    c0_2, _ = en.encrypt_enrolled(s, x, committee_id=CID, epoch=1, round_id=2, params=params)
    assert not np.array_equal(rounds.round_polynomial(CID, 1, 1, 0, params),
                              rounds.round_polynomial(CID, 1, 2, 0, params))
    assert np.abs(members_decode(c0_1, s, params, 1, 100) - x).max() < 1e-3
    assert np.abs(members_decode(c0_2, s, params, 2, 100) - x).max() < 1e-3
    assert np.abs(members_decode(c0_1, s, params, 2, 100) - x).max() > 1e3  # a round-2 key opens nothing of round 1


def test_backends_agree_bit_for_bit(small_params: Params) -> None:
    params = small_params
    s = ternary_secret(3, params.n)
    x = np.random.default_rng(3).uniform(-1, 1, 3 * params.slots - 5)
    results = {}
    for name in kernels.available_backends():
        with kernels.use_backend(name):
            results[name], _ = en.encrypt_enrolled(s, x, committee_id=CID, epoch=5, round_id=6, params=params,
                                                   stream=stream(6))
    first = next(iter(results.values()))
    assert len(results) >= 2
    assert all(np.array_equal(first, r) for r in results.values())


# -- wire: uploads and tickets -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(small_params_module: Params) -> dict:  # type: ignore[type-arg]
    params = small_params_module
    ids = [PartyIdentity.generate() for _ in range(3)]
    uploads = [en.enrolled_upload(ids[k], ternary_secret(200 + k, params.n), np.linspace(-1, 1, 2500) * k,
                                  client_id=f"c{k}", committee_id=CID, epoch=3, round_id=7, params=params)
               for k in range(3)]
    keys = en.key_lookup({f"c{k}": ids[k].public_key for k in range(3)})
    return {"params": params, "ids": ids, "uploads": uploads, "keys": keys}


@pytest.fixture(scope="module")
def small_params_module() -> Params:
    return Params.from_bit_sizes(4096, [40, 20, 40], 2.0**25)


def reseal(blob: bytes, *, meta: dict | None = None, body: bytes | None = None) -> bytes:  # type: ignore[type-arg]
    """What a relay can do: edit the meta or the body and recompute the (unkeyed) checksum."""
    env = open_envelope(blob, Kind.ENROLLED_UPLOAD, "test")
    new_meta = env.meta.as_dict()
    new_meta.update(meta or {})
    return seal_envelope(Kind.ENROLLED_UPLOAD, new_meta, bytes(env.body) if body is None else body)


def test_upload_round_trip(setup: dict) -> None:  # type: ignore[type-arg]
    params, up = setup["params"], setup["uploads"][1]
    blob = up.to_bytes()
    back = en.EnrolledUpload.from_bytes(blob, params, CID, verify_key=setup["keys"], epoch=3, round_id=7)
    assert np.array_equal(back.c0, up.c0) and back.ticket == up.ticket and back.layout == up.layout
    body_offset = blob.index(up.c0.tobytes()[:64])
    assert body_offset % 64 == 0
    ticket = en.Ticket.from_bytes(up.ticket.to_bytes())
    assert ticket == up.ticket
    ticket.verify(setup["ids"][1].public_key, committee_id=CID, epoch=3, round_id=7, client_id="c1",
                  layout_digest=up.layout.digest)
    assert "signature" not in repr(ticket) and up.ticket.signature.hex() not in repr(ticket)


def test_ticket_refusals(setup: dict) -> None:  # type: ignore[type-arg]
    up, ids = setup["uploads"][0], setup["ids"]
    raw = bytearray(up.ticket.to_bytes())
    key = ids[0].public_key
    for position in (8, 30, len(raw) - 70, len(raw) - 1):  # epoch, layout digest, client id, signature
        tampered = bytearray(raw)
        tampered[position] ^= 1
        with pytest.raises((TicketError, FormatError)):
            en.Ticket.from_bytes(bytes(tampered)).verify(key)
    with pytest.raises(TicketError):
        up.ticket.verify(ids[1].public_key)  # another client's key
    for field in ({"round_id": 8}, {"epoch": 4}, {"committee_id": OTHER_CID}, {"client_id": "c1"},
                  {"c0_digest": bytes(32)}):
        with pytest.raises(TicketError):
            up.ticket.verify(key, **field)  # type: ignore[arg-type]
    with pytest.raises(NotEnrolledError):
        up.ticket.verify(en.key_lookup({}))
    for junk in (b"", b"HEAGTKT\x01" + bytes(200), raw[:-1], bytes(raw) + b"\0", b"x" * 5000):
        with pytest.raises(FormatError):
            en.Ticket.from_bytes(junk)


def test_upload_refusals(setup: dict) -> None:  # type: ignore[type-arg]
    params, keys = setup["params"], setup["keys"]
    blob = setup["uploads"][0].to_bytes()
    other = setup["uploads"][1].to_bytes()

    def open_(data: bytes, **kw: object) -> None:
        args = {"verify_key": keys, "epoch": 3, "round_id": 7} | kw
        en.EnrolledUpload.from_bytes(data, params, kw.pop("cid", CID), **{k: v for k, v in args.items()
                                                                        if k != "cid"})  # type: ignore[arg-type]

    with pytest.raises(ShareBindingError):
        open_(blob, cid=OTHER_CID)
    with pytest.raises(RoundMismatchError):
        open_(blob, round_id=8)
    with pytest.raises(RoundMismatchError):
        open_(blob, epoch=4)
    with pytest.raises(FormatError):
        open_(blob[:-1])
    with pytest.raises(FormatError):  # a body one ciphertext short (re-sealed by a relay)
        open_(reseal(blob, body=bytes(open_envelope(blob, Kind.ENROLLED_UPLOAD, "t").body)[:-8 * 2 * params.n]))
    with pytest.raises(FormatError):  # meta length disagrees with the layout
        open_(reseal(blob, meta={"length": 2499}))
    with pytest.raises(TicketError):  # another client's residues under this ticket
        open_(reseal(blob, body=bytes(open_envelope(other, Kind.ENROLLED_UPLOAD, "t").body)))
    with pytest.raises(TicketError):  # another client's ticket on these residues
        open_(reseal(blob, meta={"ticket": open_envelope(other, Kind.ENROLLED_UPLOAD, "t").meta.text("ticket",
                                                                                                       4096)}))
    with pytest.raises(ParameterMismatchError):
        open_(reseal(blob, meta={"params": bytes(32).hex()}))


def signed_bad_residue_upload(setup: dict) -> bytes:  # type: ignore[type-arg]
    """A client-signed upload holding a residue equal to its prime (a ticket cannot vouch for range)."""
    params, up = setup["params"], setup["uploads"][2]
    c0 = up.c0.copy()
    c0[1, 1, 17] = params.data_moduli[1]
    digest = en.c0_digest(params, up.layout.length, body_hash(c0.tobytes()))
    ticket = en.Ticket.sign(setup["ids"][2], committee_id=CID, epoch=3, round_id=7, client_id="c2",
                            layout_digest=up.layout.digest, c0_digest=digest)
    return en.EnrolledUpload(params, ticket, up.layout, c0).to_bytes()


def test_accumulator(setup: dict) -> None:  # type: ignore[type-arg]
    params, keys, uploads = setup["params"], setup["keys"], setup["uploads"]
    acc = en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=7, verify_key=keys)
    assert acc.add(uploads[0].to_bytes()) == uploads[0].ticket
    assert acc.add(uploads[1]) == uploads[1].ticket
    before = acc.sum.copy()
    bad = signed_bad_residue_upload(setup)
    with pytest.raises(ResidueRangeError):
        en.EnrolledUpload.from_bytes(bad, params, CID, verify_key=keys)
    with pytest.raises(ResidueRangeError):
        acc.add(bad)
    assert np.array_equal(acc.sum, before) and acc.contributors == ("c0", "c1")
    with pytest.raises(DuplicateContributionError):
        acc.add(uploads[1].to_bytes())
    other_round = en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=8)
    with pytest.raises(RoundMismatchError):
        other_round.add(uploads[0])
    with pytest.raises(RoundMismatchError):
        other_round.add(uploads[0].to_bytes())
    with pytest.raises(ShareBindingError):
        en.C0Accumulator(params, 2500, committee_id=OTHER_CID, epoch=3, round_id=7).add(uploads[0].to_bytes())
    with pytest.raises(NotEnrolledError):
        en.C0Accumulator(params, 2500, committee_id=CID, epoch=3, round_id=7,
                         verify_key=en.key_lookup({})).add(uploads[0].to_bytes())
    with pytest.raises(ValueError):
        en.C0Accumulator(params, 2501, committee_id=CID, epoch=3, round_id=7).add(uploads[0])
    acc.add(uploads[2].to_bytes())
    expected = np.zeros_like(uploads[0].c0)
    for up in uploads:
        kernels.add(expected, expected, up.c0, params.data_moduli)
    assert np.array_equal(acc.sum, expected)
    assert [t.client_id for t in acc.tickets] == ["c0", "c1", "c2"]
    with pytest.raises(ValueError):
        acc.sum[0, 0, 0] = 1  # a read-only view
