"""Dense (coefficient) packing: N values per ciphertext, exact encoding, no FFT at decryption.

Each test can fail: dense and slot rounds decrypt the same aggregates within their documented
bounds; the dense encoding is exact (Python integers); a round mixing the packings is refused by
the aggregator and by every member; 1,000 clients stay within 1e-6 at the members' flooding; the
upload size is the formula (16 bytes per value at two data primes, 32 for slots).
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg import stats
from he_agg.aggregator import Aggregator
from he_agg.committee import _decode_dense
from he_agg.enrolled import C0Accumulator, EnrolledUpload, encrypt_enrolled, encrypt_enrolled_slots
from he_agg.errors import FormatError, PackingError, ParameterMismatchError
from he_agg.hazmat import kernels
from he_agg.hazmat.ckks import encode_dense_split, encode_split
from he_agg.hazmat.decryption import flooding_noise
from he_agg.hazmat.noise import EnrolledNoiseModel
from he_agg.hazmat.rounds import round_polynomials
from he_agg.hazmat.sampling import KeyedStream, cbd
from he_agg.identity import PartyIdentity
from he_agg.member import EnrolledCommittee, EnrolledPolicy
from he_agg.packing import Layout, PackingMismatchError, ciphertext_count, flatten, values_per_ciphertext
from he_agg.params import ENROLLED, Params
from he_agg.requests import EnrolledRequest

N = ENROLLED.n
KEY = bytes(range(32))


def committee_with_clients(n: int = 3, t: int = 2, clients: int = 3):  # type: ignore[no-untyped-def]
    committee = EnrolledCommittee.generate(n, t, policy=EnrolledPolicy(min_clients=2))
    return committee, [committee.client(f"site-{i}") for i in range(clients)]


def run_round(committee, clients, round_id, updates, packing, active_sets=None, weights=None):  # type: ignore[no-untyped-def]
    agg = Aggregator(committee.public_context, round_id, min_clients=2)
    for i, (client, update) in enumerate(zip(clients, updates)):
        weight = None if weights is None else weights[i]
        agg.add(client.encrypt(update, round_id=round_id, packing=packing, weight=weight))
    request = agg.decryption_request(active_sets)
    agg.finalize(committee.shares(request))
    return agg, request


def exact_centred(residues: np.ndarray, moduli: tuple[int, ...]) -> list[int]:
    """Coefficient-form residues (L, N) → the centred integers, by exact CRT in Python ints."""
    q = math.prod(moduli)
    out = []
    for column in residues.T:
        value = 0
        for r, p in zip(column, moduli):
            part = q // p
            value += int(r) * part * pow(part, -1, p)
        value %= q
        out.append(value - q if value > q // 2 else value)
    return out


# -- the encoding is exact ------------------------------------------------------------------


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=64), log_scale=st.integers(0, 100))
def test_dense_encoding_is_exactly_floor_or_ceil_of_x_times_scale(values: list[float], log_scale: int) -> None:
    """Every coefficient is ⌊x·Δ⌋ or ⌈x·Δ⌉ of the exact rational x·Δ (Python integers), and x·Δ
    itself when that is an integer: no transform, no float rounding (power-of-two Δ)."""
    scale = 2.0**log_scale
    x = np.array(values, dtype=np.float64)
    encoded = encode_dense_split(x, scale, KeyedStream(KEY, b"exact")).to_int()
    for value, got in zip(values, encoded):
        exact = Fraction(value) * Fraction(scale)
        floor = math.floor(exact)
        assert got in (floor, floor + 1) and (got == exact or exact.denominator != 1), (value, got, exact)


def test_tiny_negative_values_round_without_bias() -> None:
    """x·Δ = −2^-100: r − ⌊r⌋ would be 1.0 in float64 (and round to −1 half the time); |r| is rounded
    instead, so every coefficient is 0 (−1 has probability 2^-100)."""
    encoded = encode_dense_split(np.full(4096, -(2.0**-100)), 1.0, KeyedStream(KEY, b"tiny")).to_int()
    assert all(int(c) == 0 for c in encoded)
    slots = encode_split(np.full(2048, -(2.0**-100)), 1.0, KeyedStream(KEY, b"tiny")).to_int()
    assert all(int(c) == 0 for c in slots)


def test_dense_rounding_is_unbiased() -> None:
    """x·Δ = k + 1/4 exactly: about a quarter of the coefficients round up (4096·¼ ± 5σ)."""
    scale = 2.0**94
    x = (np.arange(-2048, 2048, dtype=np.float64) + 0.25) / scale  # exact: power-of-two division
    encoded = np.array(encode_dense_split(x, scale, KeyedStream(KEY, b"bias")).to_int(), dtype=object)
    up = sum(int(e) - math.floor(Fraction(float(v)) * Fraction(scale)) for e, v in zip(encoded, x))
    assert abs(up - 1024) < 5 * math.sqrt(4096 * 0.25 * 0.75)


def test_slot_encoding_is_not_exact_but_dense_is() -> None:
    """The contrast the SECURITY.md caveat names: integers encode to exactly k·Δ dense, while the
    slot encoder's float FFT leaves coefficients that are not the exact inverse embedding."""
    scale = 2.0**94
    x = np.arange(1, N + 1, dtype=np.float64)
    dense = encode_dense_split(x, scale, KeyedStream(KEY, b"d")).to_int()
    assert list(dense) == [k * 2**94 for k in range(1, N + 1)]
    slots = encode_split(x[: N // 2], scale, KeyedStream(KEY, b"s")).to_int()
    assert any(int(c) % 2**40 not in (0, 1, 2**40 - 1) for c in slots)  # float FFT noise in the low bits


def test_upload_carries_exactly_the_dense_encoding_plus_the_client_error() -> None:
    """c0 + a·s, read with exact CRT, is bit for bit encode_dense_split(x) + e from the same stream."""
    params = ENROLLED
    rng = np.random.default_rng(5)
    secret = rng.integers(-1, 2, N).astype(np.int8)
    x = rng.uniform(-3, 3, N + 17)  # two ciphertexts, the second mostly padding
    c0 = encrypt_enrolled_slots(secret, x, committee_id=b"c", epoch=0, round_id=4, params=params,
                                stream=KeyedStream(KEY, b"upload"), packing="dense")
    assert c0.shape == (2, 2, N)
    replay = KeyedStream(KEY, b"upload")
    chunk = np.zeros((2, N))
    chunk.reshape(-1)[: x.size] = x
    expected = encode_dense_split(chunk, params.scale, replay).to_int()
    error = cbd(replay, 2 * N).reshape(2, N)
    a = round_polynomials(b"c", 0, 4, 2, params)
    s = kernels.signed_to_rns(secret.astype(np.int64), params.data_moduli)
    kernels.ntt_forward(s, params.data_moduli)
    plain = c0.copy()
    kernels.muladd(plain, a, np.broadcast_to(s, a.shape).copy(), plain, params.data_moduli)  # c0 + a·s
    kernels.ntt_inverse(plain, params.data_moduli)
    for j in range(2):
        got = exact_centred(plain[j], params.data_moduli)
        assert got == [int(m) + int(e) for m, e in zip(expected[j], error[j])]


# -- dense and slots decrypt the same aggregates ------------------------------------------------


shapes = st.lists(st.lists(st.integers(1, 40), min_size=0, max_size=3), min_size=1, max_size=3)


@settings(max_examples=6, deadline=None)
@given(n=st.integers(2, 5), data=st.data())
def test_dense_and_slots_decrypt_the_same_aggregates(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(2, n), label="t")
    clients = data.draw(st.integers(2, 4), label="clients")
    dims = data.draw(shapes, label="shapes")
    extra = data.draw(st.sampled_from([0, N // 2 - 7, N - 3, N + 5]), label="extra values")
    weighted = data.draw(st.booleans(), label="weighted")
    active = tuple(sorted(data.draw(st.permutations(range(n)), label="active")[:t]))
    rng = np.random.default_rng(n * 100 + t * 10 + clients)
    updates = [{f"a{i}": rng.uniform(-1, 1, tuple(d)) for i, d in enumerate(dims)} | {"tail": rng.uniform(-1, 1, extra)}
               for _ in range(clients)]
    weights = [float(w) for w in rng.integers(1, 5, clients)] if weighted else None
    committee, members_clients = committee_with_clients(n, t, clients)
    slots, req_s = run_round(committee, members_clients, 1, updates, "slots", [active], weights)
    dense, req_d = run_round(committee, members_clients, 2, updates, "dense", [active], weights)
    assert Layout.from_json(req_d.layout).packing == "dense" and Layout.from_json(req_s.layout).packing == "slots"
    vectors = [flatten(u)[0] for u in updates]
    exact = sum((w or 1.0) * v for w, v in zip(weights or [None] * clients, vectors))
    if weighted:
        exact = np.append(exact, sum(weights))
    length = exact.size
    assert req_d.count == -(-length // N) and req_s.count == -(-length // (N // 2))
    model = EnrolledNoiseModel(ENROLLED)
    sigma = committee[0].sigma
    bound_d = model.error_bound(sigma, t, clients, length, dense=True)
    bound_s = model.error_bound(sigma, t, clients, length)
    assert bound_d * 30 < bound_s  # no √(N/2) = 64 spread
    assert np.abs(dense.result.slots - exact).max() <= bound_d
    assert np.abs(slots.result.slots - exact).max() <= bound_s
    assert np.abs(dense.result.slots - slots.result.slots).max() <= bound_d + bound_s


def test_every_stats_encoder_aggregates_dense() -> None:
    """Each he_agg.stats encoder, summed over sites under dense packing, decodes like the plain sum."""
    committee, clients = committee_with_clients(3, 2, 3)
    rng = np.random.default_rng(3)
    grid = (1.0, 2.0, 3.0, 4.0)
    encoders = {"count": stats.Count(), "sum": stats.Sum(-2, 2), "moments": stats.Moments(-2, 2),
                "hist": stats.Histogram((-1.0, 0.0, 0.5, 1.0)), "km": stats.KaplanMeier(grid)}
    sites = []
    for _ in clients:
        values = rng.uniform(-2, 2, 50)
        durations, events = rng.choice(grid, 20), rng.integers(0, 2, 20)
        sites.append({name: (enc.encode(durations, events) if name == "km" else enc.encode(values))
                      for name, enc in encoders.items()})
    agg, request = run_round(committee, clients, 1, sites, "dense")
    assert Layout.from_json(request.layout).dense
    plain = {name: sum(site[name] for site in sites) for name in encoders}
    for name, enc in encoders.items():
        got, want = enc.decode(agg.result.value[name]), enc.decode(plain[name])
        if name in ("count",):
            assert got == want
        elif name == "sum":
            assert abs(got - want) < 1e-8
        elif name == "moments":
            assert got.count == want.count and abs(got.mean - want.mean) < 1e-9
        elif name == "hist":
            assert np.array_equal(got.counts, want.counts) and got.underflow == want.underflow
        else:
            assert np.array_equal(got.events, want.events) and np.allclose(got.survival, want.survival)


# -- a mixed round is refused -----------------------------------------------------------------


def test_aggregator_refuses_a_mixed_round() -> None:
    committee, clients = committee_with_clients(3, 2, 3)
    x = np.linspace(-1, 1, 100)
    slot_layout, dense_layout = flatten(x)[1], flatten(x, packing="dense")[1]
    assert slot_layout.digest != dense_layout.digest
    # expected slots, a dense upload arrives (and the other way round)
    for expected, packing in ((slot_layout, "dense"), (dense_layout, "slots")):
        agg = Aggregator(committee.public_context, 1 if packing == "dense" else 2, layout=expected)
        with pytest.raises(PackingMismatchError, match="never mixes"):
            agg.add(clients[0].encrypt(x, round_id=agg.round_id, packing=packing))
    # no expected layout: the first upload fixes the packing
    agg = Aggregator(committee.public_context, 3)
    agg.add(clients[0].encrypt(x, round_id=3, packing="dense"))
    with pytest.raises(PackingMismatchError):
        agg.add(clients[1].encrypt(x, round_id=3, packing="slots"))
    assert len(agg) == 1
    agg.add(clients[2].encrypt(x, round_id=3, packing="dense"))  # the sum was left untouched
    # the accumulator alone, even without a layout
    acc = C0Accumulator(ENROLLED, 100, committee_id=committee.context.committee_id, epoch=0, round_id=4)
    assert acc.packing == "slots"
    with pytest.raises(PackingMismatchError):
        acc.add(clients[0].encrypt(x, round_id=4, packing="dense"))
    with pytest.raises(PackingError):
        C0Accumulator(ENROLLED, 100, committee_id=b"c", epoch=0, round_id=4, packing="sparse")


def test_member_refuses_a_mixed_round() -> None:
    """A server that relabels dense uploads as a slot round (or the reverse) gets a specific refusal
    from every member, before any approval is signed."""
    committee, clients = committee_with_clients(3, 2, 3)
    x = np.linspace(-1, 1, N + 1)
    for packing, other in (("dense", "slots"), ("slots", "dense")):
        round_id = 1 if packing == "dense" else 2
        agg = Aggregator(committee.public_context, round_id, min_clients=2)
        for c in clients:
            agg.add(c.encrypt(x, round_id=round_id, packing=packing))
        honest = agg.decryption_request()
        layout = flatten(x, packing=other)[1]
        forged = EnrolledRequest(committee.context, 0, round_id, honest.tickets, layout.to_json(),
                                 layout.ciphertexts(ENROLLED), honest.aggregate_digest, honest.active_sets)
        for member in committee:
            with pytest.raises(PackingMismatchError, match="never"):
                member.approve(forged)
            assert member._state.approval(round_id) is None
        wrong_count = EnrolledRequest(committee.context, 0, round_id, honest.tickets, honest.layout,
                                      honest.count + 1, honest.aggregate_digest, honest.active_sets)
        with pytest.raises(FormatError, match="ciphertexts"):
            committee[0].approve(wrong_count)
        value = agg.finalize(committee.shares(honest))  # the honest request still goes through
        assert np.abs(value - 3 * x).max() < 1e-6


def test_packing_argument_is_checked() -> None:
    with pytest.raises(PackingError, match="packing"):
        flatten(np.ones(3), packing="coefficients")
    with pytest.raises(PackingError):
        encrypt_enrolled(np.zeros(N, np.int8), np.ones(3), committee_id=b"c", epoch=0, round_id=1, params=ENROLLED,
                         packing="Dense")
    assert values_per_ciphertext(ENROLLED, "dense") == N and values_per_ciphertext(ENROLLED) == N // 2
    assert [ciphertext_count(v, ENROLLED, "dense") for v in (1, N, N + 1)] == [1, 1, 2]
    assert [ciphertext_count(v, ENROLLED) for v in (1, N // 2, N // 2 + 1)] == [1, 1, 2]


# -- precision at 1,000 clients -----------------------------------------------------------------


def _emulated_dense_release(params, clients: int, t: int, sigma: float, *, seed: int):  # type: ignore[no-untyped-def]
    """``clients`` real dense encryptions (|x| ≤ 1) decrypted with t floods of σ (Σ s_k used directly)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, (clients, N))
    total_c0 = np.zeros((1, 2, N), dtype=np.uint64)
    total_s = np.zeros(N, dtype=np.int64)
    for k in range(clients):
        secret = rng.integers(-1, 2, N).astype(np.int64)
        total_s += secret
        c0 = encrypt_enrolled_slots(secret, values[k], committee_id=b"c", epoch=0, round_id=1, params=params,
                                    packing="dense")
        kernels.add(total_c0, total_c0, c0, params.data_moduli)
    s = kernels.signed_to_rns(total_s, params.data_moduli)
    kernels.ntt_forward(s, params.data_moduli)
    a = round_polynomials(b"c", 0, 1, 1, params)
    kernels.muladd(total_c0, a, s[None].copy(), total_c0, params.data_moduli)
    for i in range(t):
        kernels.add(total_c0, total_c0, flooding_noise(KeyedStream(KEY, bytes([i])), 1, sigma, params),
                    params.data_moduli)
    return values, _decode_dense(total_c0, params).reshape(-1)


def test_1000_dense_clients_within_1e6_at_member_flooding() -> None:
    """1,000 distinct client encryptions (|x| ≤ 1, N values dense), decrypted with t = 3 floods at
    EnrolledMember.sigma: max error within the dense bound, itself far below 1e-6. (Decryption uses
    Σ s_k directly here; the full protocol run is the slow test below.)"""
    params, clients, t = ENROLLED, 1000, 3
    committee = EnrolledCommittee.generate(5, t)
    sigma = committee[0].sigma
    assert committee[0].policy.max_clients >= clients
    values, out = _emulated_dense_release(params, clients, t, sigma, seed=1000)
    model = EnrolledNoiseModel(params)
    bound = model.error_bound(sigma, t, clients, N, dense=True)
    error = float(np.abs(out - values.sum(axis=0)).max())
    assert error <= bound <= 1e-8, (error, bound)  # dense: ~64x inside the slot bound (≈1e-7)
    assert bound < model.error_bound(sigma, t, clients, N) / 32


def test_compact_preset_packed_uploads_and_1000_clients() -> None:
    """Issue 9's byte target: dense packing at the COMPACT preset (103 bits of Q) with packed
    residues is at most 13 bytes per value, and a 1,000-client sum (|x| ≤ 1) decrypts within the
    dense bound, itself ≤ 1e-6, at the members' epoch-sized flooding."""
    from he_agg.enrolled import EnrolledUpload
    from he_agg.params import COMPACT

    committee = EnrolledCommittee.generate(3, 2, COMPACT)
    client = committee.client("site-0")
    blob = client.encrypt(np.random.default_rng(3).uniform(-1, 1, 4 * N), round_id=1, packing="dense")
    upload = EnrolledUpload.from_bytes(blob, COMPACT, committee.context.committee_id, verify_key=client.public_key)
    packed = upload.to_bytes(packed=True)
    assert len(packed) / (4 * N) <= 13.0 < len(blob) / (4 * N)
    again = EnrolledUpload.from_bytes(packed, COMPACT, committee.context.committee_id, verify_key=client.public_key)
    assert np.array_equal(again.c0, upload.c0)
    params, clients, t = COMPACT, 1000, 3
    sigma = EnrolledCommittee.generate(5, t, COMPACT)[0].sigma
    values, out = _emulated_dense_release(params, clients, t, sigma, seed=1001)
    bound = EnrolledNoiseModel(params).error_bound(sigma, t, clients, 1 << 20, dense=True)
    assert float(np.abs(out - values.sum(axis=0)).max()) <= bound <= 1e-6


@pytest.mark.slow
def test_1000_enrolled_clients_dense_full_protocol() -> None:
    """The whole protocol, 1,000 enrolled clients, every 3-subset of a (5, 3) committee, dense."""
    committee = EnrolledCommittee.generate(5, 3)
    clients = [committee.client(f"site-{i}") for i in range(1000)]
    values = np.random.default_rng(9).uniform(-1, 1, (1000, N))
    sets = list(itertools.combinations(range(5), 3))
    agg = Aggregator(committee.public_context, 1, min_clients=2)
    for client, row in zip(clients, values):
        agg.add(client.encrypt(row, round_id=1, packing="dense"))
    request = agg.decryption_request(sets)
    assert request.count == 1
    out = agg.finalize(committee.shares(request))
    bound = EnrolledNoiseModel(ENROLLED).error_bound(committee[0].sigma, 3, 1000, N, dense=True)
    error = np.abs(out - values.sum(axis=0)).max()
    assert error <= bound <= 1e-6, (error, bound)


# -- bytes on the wire --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [1, N // 2, N, 3 * N, 3 * N + 1])
def test_upload_size_is_the_formula(values: int) -> None:
    """Envelope = ⌈(24 + meta)/64⌉·64 + count·L·N·8 + 32, count = ⌈V/N⌉ dense, ⌈V/(N/2)⌉ slots:
    8·L = 16 bytes per value dense at two data primes, 32 with slots, for whole ciphertexts."""
    params, identity = ENROLLED, PartyIdentity.generate()
    secret = np.zeros(N, np.int8)
    per_value = {}
    for packing in ("dense", "slots"):
        c0, layout = encrypt_enrolled(secret, np.zeros(values), committee_id=b"c", epoch=0, round_id=1,
                                      params=params, packing=packing)
        upload = EnrolledUpload.create(identity, c0, layout, client_id="x", committee_id=b"c", epoch=0, round_id=1,
                                       params=params)
        data = upload.to_bytes()
        meta = {"params": params.fingerprint.hex(), "length": layout.length, "layout": layout.to_json(),
                "ticket": upload.ticket.to_bytes().hex()}
        meta_bytes = len(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
        count = -(-values // values_per_ciphertext(params, packing))
        body = count * len(params.data_moduli) * N * 8
        assert len(data) == -(-(24 + meta_bytes) // 64) * 64 + body + 32
        assert EnrolledUpload.from_bytes(data, params, b"c", verify_key=identity.public_key).layout == layout
        per_value[packing] = body / (count * values_per_ciphertext(params, packing))
    assert per_value == {"dense": 16.0, "slots": 32.0}


def test_dense_upload_of_wrong_size_is_refused() -> None:
    """The body size follows the layout's packing: a dense layout over a slot-sized body is refused."""
    params, identity = ENROLLED, PartyIdentity.generate()
    c0, layout = encrypt_enrolled(np.zeros(N, np.int8), np.zeros(N), committee_id=b"c", epoch=0, round_id=1,
                                  params=params, packing="slots")
    dense_layout = flatten(np.zeros(N), packing="dense")[1]
    with pytest.raises(ParameterMismatchError):
        EnrolledUpload(params, EnrolledUpload.create(identity, c0, layout, client_id="x", committee_id=b"c",
                                                     epoch=0, round_id=1, params=params).ticket, dense_layout, c0)


def test_dense_layout_and_smaller_params() -> None:
    """Dense packing works under other parameters (N=4096, one data prime) too."""
    params = Params.from_bit_sizes(4096, [60, 40], 2.0**30)
    rng = np.random.default_rng(2)
    secret = rng.integers(-1, 2, 4096).astype(np.int8)
    x = rng.uniform(-1, 1, 5000)
    c0, layout = encrypt_enrolled(secret, x, committee_id=b"c", epoch=0, round_id=1, params=params, packing="dense")
    assert c0.shape == (2, 1, 4096) and layout.dense
    s = kernels.signed_to_rns(secret.astype(np.int64), params.data_moduli)
    kernels.ntt_forward(s, params.data_moduli)
    a = round_polynomials(b"c", 0, 1, 2, params)
    kernels.muladd(c0, a, np.broadcast_to(s, a.shape).copy(), c0, params.data_moduli)
    out = _decode_dense(c0, params).reshape(-1)[: x.size]
    assert np.abs(out - x).max() < 30 / 2**30  # client error |e| ≤ 21 plus rounding, over Δ


def test_min_scale_inverts_the_error_bound() -> None:
    model = EnrolledNoiseModel(ENROLLED)
    sigma = model.flooding_sigma(1000, 1 << 30)
    for dense in (True, False):
        log_scale = model.min_scale_log2(sigma, 3, 1000, 1 << 20, 1e-6, dense=dense)
        at = EnrolledNoiseModel(Params(ENROLLED.n, ENROLLED.moduli, 2.0**log_scale))
        assert math.isclose(at.error_bound(sigma, 3, 1000, 1 << 20, dense=dense), 1e-6, rel_tol=1e-9)
    gap = model.min_scale_log2(sigma, 3, 1000, 1, 1e-6) - model.min_scale_log2(sigma, 3, 1000, 1, 1e-6, dense=True)
    assert math.isclose(gap, 0.5 * math.log2(ENROLLED.n / 2))  # dense saves log2 √(N/2) = 6 bits of Δ


def test_public_key_mode_refuses_a_dense_update_in_a_slot_round() -> None:
    """Public-key clients may pack densely (tests/test_dense_pk.py); a round never mixes packings."""
    from he_agg.client import encrypt
    from he_agg.committee import Committee

    committee = Committee.generate(3, 2)
    dense = encrypt(committee.public_context, np.ones(4), client_id="a", round_id=1, packing="dense")
    assert dense.layout.dense
    agg = Aggregator(committee.public_context, 1)
    agg.add(encrypt(committee.public_context, np.ones(4), client_id="b", round_id=1))
    with pytest.raises(PackingMismatchError, match="dense"):
        agg.add(dense)