"""Dense packing for public-key clients: the native encryptor (he_agg.hazmat.pkenc), the round
through approvals, certificate and shares, 1,000 clients within 1e-6, the wire size, mixed rounds.

Every test can fail: decryptions are compared with the exact sums against the documented bounds
(NoiseModel, dense=True); the fresh noise is measured exactly (dyadic values, the committee's key
summed from its sub-secrets inside the test only) against B_dense; sizes equal the formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.aggregator import Aggregator
from he_agg.ciphertext import CiphertextBatch
from he_agg.client import EncryptedUpdate, encrypt, encrypt_dense
from he_agg.committee import Committee
from he_agg.errors import PackingError, ParameterMismatchError, SlotRangeError
from he_agg.hazmat import kernels, pkenc
from he_agg.hazmat.ckks import scaled_to_rns
from he_agg.hazmat.noise import NoiseModel
from he_agg.hazmat.sampling import KeyedStream
from he_agg.hazmat.wire import packed as packed_wire
from he_agg.hazmat.wire.envelope import open_envelope
from he_agg.keyshare import Policy
from he_agg.packing import PackingMismatchError
from he_agg.params import AGGREGATION, PK_COMPACT, Params
from he_agg.requests import DecryptionRequest

N = AGGREGATION.n


def committee_secret(committee: Committee, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """TEST ONLY: the committee's secret s = Σ sub-secrets (each once), as (coefficients, NTT residues)."""
    subs: dict[int, np.ndarray] = {}
    for share in committee:
        subs.update(share._subsecrets)
    assert len(subs) == committee.context.secret_terms  # a trusted dealer: one ternary per (t−1)-subset
    s = np.sum([v.astype(np.int64) for v in subs.values()], axis=0)
    s_ntt = kernels.signed_to_rns(s, params.data_moduli)
    kernels.ntt_forward(s_ntt, params.data_moduli)
    return s, s_ntt


def exact_noise(data: np.ndarray, s_ntt: np.ndarray, scaled: np.ndarray, params: Params) -> np.ndarray:
    """c0 + c1·s − m for (count, 2, L, N) ciphertexts of integer plaintexts ``scaled`` = x·Δ·2^-shift."""
    moduli = params.data_moduli
    phase = np.empty_like(data[:, 0])
    kernels.muladd(phase, np.ascontiguousarray(data[:, 1]), s_ntt, np.ascontiguousarray(data[:, 0]), moduli)
    kernels.ntt_inverse(phase, moduli)
    m = scaled_to_rns(scaled, int(math.log2(params.scale)) - 30, np.zeros_like(scaled), moduli)
    kernels.sub(phase, phase, m, moduli)
    return kernels.crt_to_double(phase, moduli, 1.0)


# -- the encryptor's fresh noise ----------------------------------------------------------------


def test_fresh_noise_within_the_derived_bound_and_of_the_predicted_size() -> None:
    """Fresh dense encryptions of dyadic values (x·Δ an integer: no rounding) under a trusted-dealer
    key: |noise| ≤ B_dense(1) per ciphertext and ≤ B_dense(K) for a sum of K; the standard
    deviation is the derivation's √((||s||² + 1)/12) (rounding of C/p uniform on [−½, ½])."""
    params = AGGREGATION
    committee = Committee.generate(3, 2, params)
    s, s_ntt = committee_secret(committee, params)
    rng = np.random.default_rng(5)
    clients, count = 8, 2
    scaled = rng.integers(-(1 << 30), 1 << 30, (clients, count, N))  # x = k / 2^30, |x| ≤ 1
    key = committee.context.public_key
    model = NoiseModel(params, committee.context.secret_terms)
    cts = [pkenc.encrypt_dense(key, row.reshape(-1) / 2.0**30, params) for row in scaled]
    for ct, row in zip(cts, scaled):
        noise = exact_noise(ct, s_ntt, row, params)
        assert np.abs(noise).max() <= model.bound(1, count * N, dense=True)
    total = np.zeros_like(cts[0])
    for ct in cts:
        kernels.add(total, total, ct, params.data_moduli)
    noise = exact_noise(total, s_ntt, scaled.sum(axis=0), params)
    assert np.abs(noise).max() <= model.bound(clients, count * N, dense=True)
    predicted = math.sqrt(clients * (float(s.astype(np.float64) @ s) + 1.0) / 12.0)
    assert 0.9 * predicted <= float(noise.std()) <= 1.1 * predicted
    assert abs(float(noise.mean())) < 5 * predicted / math.sqrt(noise.size)


def test_the_encryptor_is_deterministic_in_its_stream_and_fresh_otherwise() -> None:
    committee = Committee.generate(3, 2)
    key, x = committee.context.public_key, np.linspace(-1, 1, 100)
    one = pkenc.encrypt_dense(key, x, AGGREGATION, stream=KeyedStream(bytes(32), b"t"))
    two = pkenc.encrypt_dense(key, x, AGGREGATION, stream=KeyedStream(bytes(32), b"t"))
    assert np.array_equal(one, two)
    assert not np.array_equal(one, pkenc.encrypt_dense(key, x, AGGREGATION))
    assert all((one[:, :, l] < q).all() for l, q in enumerate(AGGREGATION.data_moduli))


@settings(max_examples=25, deadline=None)
@given(terms=st.sampled_from([1, 3, 9, 10, 50, 245, 1000]), summed=st.integers(1, 100_000), log_m=st.integers(10, 34))
def test_dense_bound_never_exceeds_the_slot_bound_members_flood_with(terms: int, summed: int, log_m: int) -> None:
    """Members size their flood with the slot B (they do not look at the packing): it covers dense."""
    model = NoiseModel(AGGREGATION, terms)
    assert model.bound(summed, 1 << log_m, dense=True) <= model.bound(summed, 1 << log_m)


# -- a whole round ------------------------------------------------------------------------------


def test_dense_public_key_round_end_to_end() -> None:
    """A dealer-free (3, 2) committee, three weighted dense uploads (one with packed residues), the
    request through bytes, approvals, a certificate, every 2-subset's shares (cross-checked): the
    weighted mean within the dense bound; the same updates in a slot round within the slot bound."""
    committee = Committee.dealer_free(3, 2)
    context = committee.public_context
    rng = np.random.default_rng(11)
    updates = [{"w": rng.uniform(-1, 1, (3, N // 2 + 7)), "b": rng.uniform(-1, 1, 5)} for _ in range(3)]
    weights = [1.0, 2.0, 3.0]
    expected = {k: sum(w * u[k] for w, u in zip(weights, updates)) / sum(weights) for k in ("w", "b")}
    results = {}
    for packing, round_id in (("dense", 1), ("slots", 2)):
        agg = Aggregator(context, round_id)
        for i, (update, weight) in enumerate(zip(updates, weights)):
            upload = encrypt(context, update, client_id=f"site-{i}", round_id=round_id, weight=weight,
                             packing=packing)
            agg.add(upload.to_bytes(packed=packing == "dense" and i == 1))
        request = DecryptionRequest.from_bytes(agg.decryption_request([(0, 1), (0, 2), (1, 2)]).to_bytes(), context)
        assert request.aggregate.packing == packing
        certificate = committee.certify(request, contributions=agg.contributions)
        shares = [s.to_bytes() for s in committee.shares(request, certificate, contributions=agg.contributions)]
        value = agg.finalize(shares)
        sigma = committee[0].context.noise_model().flooding_sigma(3, request.aggregate.count * N)
        bound = context.noise_model().error_bound(3, request.aggregate.count * N, 2, agg.layout.length,
                                                  dense=packing == "dense", sigma=sigma)
        error = max(float(np.abs(value[k] - expected[k]).max()) for k in expected)
        assert error <= bound / sum(weights) * 2, (packing, error, bound)  # Σw·x within the bound, /Σw
        assert agg.result is not None and abs(agg.result.total_weight - 6.0) <= bound
        results[packing] = (error, bound, request.aggregate.count)
    assert results["dense"][2] == 2 and results["slots"][2] == 4  # 3·(N/2+7)+5+1 values: ⌈/N⌉ vs ⌈/(N/2)⌉
    assert results["dense"][1] < results["slots"][1] / 32  # no √(N/2) = 64 in dense decoding


def test_1000_clients_within_1e6_at_the_public_key_flooding() -> None:
    """1,000 clients, each encrypted with the native encryptor (|x| ≤ 1, N values, PK_COMPACT),
    through the aggregator and a (5, 3) committee's certified shares: max error ≤ bound ≤ 1e-6."""
    clients = 1000
    committee = Committee.generate(5, 3, PK_COMPACT, policy=Policy(verify=False, max_clients=clients))
    context = committee.public_context
    agg = Aggregator(context, 1, retain=False)
    total = np.zeros(N)
    rng = np.random.default_rng(1000)
    for k in range(clients):
        x = rng.uniform(-1, 1, N)
        total += x
        agg.add(EncryptedUpdate(f"c{k}", 1, context.committee_id, _dense_layout(N), encrypt_dense(context, x)))
    request = agg.decryption_request()
    shares = committee.shares(request)
    out = agg.finalize(shares)
    model = context.noise_model()
    bound = model.error_bound(clients, N, 3, N, dense=True, sigma=shares[0].sigma)
    error = float(np.abs(out - total).max())
    assert error <= bound <= 1e-6, (error, bound)
    # the preset's documented figure: ≤ 1e-6 over 2^20 values for a dealer-free (5, 3) committee
    assert NoiseModel(PK_COMPACT, 50).error_bound(clients, 1 << 20, 3, 1 << 20, dense=True) <= 1e-6


def _dense_layout(values: int):  # type: ignore[no-untyped-def]
    from he_agg.packing import flatten

    return flatten(np.zeros(values), packing="dense")[1]


# -- bytes on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize("params, packed, limit", [(AGGREGATION, False, 32.0), (PK_COMPACT, True, 24.0)])
def test_wire_size_per_value_is_the_formula(params: Params, packed: bool, limit: float) -> None:
    committee = Committee.generate(3, 2, params)
    values = 4 * N
    upload = encrypt(committee.public_context, np.linspace(-1, 1, values), client_id="a", round_id=1,
                     packing="dense", max_clients=1000)
    blob = upload.to_bytes(packed=packed)
    shape = (4, 2, len(params.data_moduli), N)
    formula = packed_wire.packed_size(shape, params.data_moduli) if packed else 8 * math.prod(shape)
    body = len(blob) - _envelope_overhead(blob)
    assert body == formula
    bits = sum(q.bit_length() for q in params.data_moduli) if packed else 64 * len(params.data_moduli)
    assert formula / values == 2 * bits / 8
    assert len(blob) / values <= limit + 0.02  # the envelope (meta with the layout) adds < 0.02 B/value
    assert formula / values <= limit
    again = Aggregator(committee.public_context, 1)
    again.add(blob)  # the aggregator reads the packed form and sums it in place
    assert np.array_equal(again.decryption_request().aggregate.data, upload.ciphertext.data)


def _envelope_overhead(blob: bytes) -> int:
    from he_agg.hazmat.wire.envelope import Kind

    env = open_envelope(blob, Kind.ENCRYPTED_UPDATE, "update")
    return len(blob) - len(env.body)


def test_packed_and_unpacked_dense_uploads_sum_bit_identically() -> None:
    committee = Committee.generate(3, 2, PK_COMPACT)
    context = committee.public_context
    uploads = [encrypt(context, np.full(N + 3, 0.25 * i), client_id=f"c{i}", round_id=1, packing="dense",
                       max_clients=1000) for i in range(3)]
    sums = []
    for packed in (False, True):
        agg = Aggregator(context, 1)
        for u in uploads:
            agg.add(u.to_bytes(packed=packed))
        sums.append(agg.decryption_request())
    assert np.array_equal(sums[0].aggregate.data, sums[1].aggregate.data)
    assert sums[0].digest == sums[1].digest  # digests are of residues, not of their packing


# -- refusals -------------------------------------------------------------------------------------


def test_mixed_public_key_rounds_are_refused() -> None:
    committee = Committee.generate(3, 2)
    context = committee.public_context
    x = np.linspace(-1, 1, N + 10)
    slots = encrypt(context, x, client_id="s", round_id=1)
    dense = encrypt(context, x, client_id="d", round_id=1, packing="dense")
    first = Aggregator(context, 1)
    first.add(slots)
    with pytest.raises(PackingMismatchError):
        first.add(dense.to_bytes())
    second = Aggregator(context, 1)
    second.add(dense)
    with pytest.raises(PackingMismatchError):
        second.add(slots.to_bytes())
    with pytest.raises(PackingMismatchError):  # a raw ciphertext packed the other way
        second.add(slots.ciphertext.to_bytes(), client_id="raw")
    assert second.contributors == ("d",)  # the refused ones left the sum untouched
    assert np.array_equal(second.decryption_request().aggregate.data, dense.ciphertext.data)


def test_bad_inputs_raise_specific_errors() -> None:
    committee = Committee.generate(3, 2)
    context = committee.public_context
    with pytest.raises(PackingError):
        encrypt(context, np.ones(4), client_id="a", round_id=1, packing="coefficients")
    with pytest.raises(SlotRangeError):
        encrypt(context, np.full(4, 1e12), client_id="a", round_id=1, packing="dense")
    with pytest.raises(SlotRangeError):  # the encryptor's own check (Q/2), without check_range
        pkenc.encrypt_dense(context.public_key, np.full(4, 2.0**40), AGGREGATION)
    with pytest.raises(ParameterMismatchError):
        pkenc.encrypt_dense(context.public_key[:1], np.ones(4), AGGREGATION)
    with pytest.raises(ParameterMismatchError):
        pkenc.encrypt_dense(context.public_key, np.ones(0), AGGREGATION)
    dense = encrypt_dense(context, np.ones(N + 1))
    assert dense.packing == "dense" and dense.count == 2
    with pytest.raises(ParameterMismatchError):
        dense.to_tenseal_bytes()  # TenSEAL vectors are slot-packed
    again = CiphertextBatch.from_bytes(dense.to_bytes(), AGGREGATION)
    assert again == dense and again.packing == "dense"
    with pytest.raises(ParameterMismatchError):  # a count that is neither packing's
        CiphertextBatch(AGGREGATION, np.zeros((5, 2, 2, N), dtype=np.uint64), N + 1)
    with pytest.raises(PackingMismatchError):  # an update whose layout disagrees with its ciphertext
        EncryptedUpdate("a", 1, context.committee_id, _dense_layout(N + 1),
                        CiphertextBatch.zeros(AGGREGATION, N + 1))
