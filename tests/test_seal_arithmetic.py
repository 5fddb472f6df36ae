"""he_agg's arithmetic is SEAL's: NTT bit-exact on real keys, decryption equal to TenSEAL's,
homomorphic sums that decrypt to plain sums on every backend, noise within the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal as ts

from he_agg.ciphertext import CiphertextBatch
from he_agg.hazmat import kernels
from he_agg.hazmat.ckks import signed_to_rns
from he_agg.hazmat.noise import NoiseModel
from he_agg.params import Params

from .support import decrypt, decrypted_coefficients, tenseal_secret_key


def _centred(residues: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    out = residues.astype(object)
    for l, q in enumerate(moduli):
        row = out[l]
        out[l] = np.where(row > q // 2, row - q, row)
    return out


@pytest.mark.parametrize("which", ["default", "small"])
def test_secret_key_ntt_is_seal_bit_exact(which: str, ctx, small_ctx, params: Params, small_params: Params) -> None:  # type: ignore[no-untyped-def]
    context, p = (ctx, params) if which == "default" else (small_ctx, small_params)
    key = tenseal_secret_key(context, p)
    coefficients = key.copy()
    kernels.ntt_inverse(coefficients, p.moduli)
    centred = _centred(coefficients, p.moduli)
    assert set(np.unique(centred[0]).tolist()) <= {-1, 0, 1}
    for l in range(1, len(p.moduli)):  # the same ternary polynomial on every prime
        assert np.array_equal(centred[l], centred[0])
    again = signed_to_rns(centred[0].astype(np.int64), p.moduli)
    kernels.ntt_forward(again, p.moduli)
    assert np.array_equal(again, key)  # NTT of the ternary polynomial reproduces SEAL's key


def test_own_decryption_matches_tenseal(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    values = np.random.default_rng(7).uniform(-100, 100, 4096 + 500)
    vec = ts.ckks_vector(ctx, values.tolist())
    ours = decrypt(CiphertextBatch.from_tenseal(vec, params), tenseal_secret_key(ctx, params))
    theirs = np.array(vec.decrypt())
    assert np.abs(ours - theirs).max() < 1e-12
    assert np.abs(ours - values).max() < 1e-9


def test_own_decryption_of_known_answer_bytes(kat: dict, small_params: Params) -> None:
    context = ts.context_from(kat["context"])
    batch = CiphertextBatch.from_tenseal(kat["vector"], small_params)
    ours = decrypt(batch, tenseal_secret_key(context, small_params))
    assert np.abs(ours - kat["plain"]).max() < 1e-3  # scale 2^25
    assert np.abs(ours - np.array(ts.ckks_vector_from(context, kat["vector"]).decrypt())).max() < 1e-9


FORMS = ["tenseal-object", "tenseal-zstd", "tenseal-raw", "he_agg-bytes", "batch"]


def _as_form(vec, form: str, params: Params):  # type: ignore[no-untyped-def]
    if form == "tenseal-object":
        return vec
    if form == "tenseal-zstd":
        return vec.serialize()
    batch = CiphertextBatch.from_tenseal(vec, params)
    return {"tenseal-raw": batch.to_tenseal_bytes(compress=False), "he_agg-bytes": batch.to_bytes(), "batch": batch}[form]


def test_sum_decrypts_to_plain_sum_on_every_backend(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    plain = rng.uniform(-1, 1, (6, 5000))
    vectors = [ts.ckks_vector(ctx, row.tolist()) for row in plain]
    inputs = [_as_form(v, FORMS[i % len(FORMS)], params) for i, v in enumerate(vectors)]
    results = {}
    for backend in kernels.available_backends():
        with kernels.use_backend(backend):
            results[backend] = CiphertextBatch.sum(inputs, params)
    reference = results["numpy"]
    for backend, batch in results.items():
        assert np.array_equal(batch.data, reference.data), backend  # bit for bit
    total = np.array(reference.to_tenseal(ctx).decrypt())
    assert np.abs(total - plain.sum(axis=0)).max() < 1e-8


@pytest.mark.parametrize("form", FORMS)
def test_each_input_form_sums_identically(form: str, ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    vectors = [ts.ckks_vector(ctx, [float(i)] * 300) for i in range(3)]
    expected = CiphertextBatch.sum([CiphertextBatch.from_tenseal(v, params) for v in vectors], params)
    assert CiphertextBatch.sum([_as_form(v, form, params) for v in vectors], params) == expected


def test_fresh_noise_within_model(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    """Real TenSEAL encryption noise stays below the bound the flooding is sized from."""
    key = tenseal_secret_key(ctx, params)
    model = NoiseModel(params, secret_terms=1)
    zeros = [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, [0.0] * 8), params) for _ in range(20)]
    one = decrypted_coefficients(zeros[0], key)  # encodes to the zero polynomial: pure noise
    assert np.array_equal(one, np.rint(one))  # integers
    assert np.abs(one).max() <= model.bound(1, params.n)
    assert one.std() <= math.sqrt(model.fresh_variance_proxy())
    total = decrypted_coefficients(CiphertextBatch.sum(zeros, params), key)
    assert np.abs(total).max() <= model.bound(20, params.n)
    assert total.std() <= math.sqrt(20 * model.fresh_variance_proxy())


@pytest.mark.parametrize("n", [8, 16, 64])
def test_decode_matches_the_slot_definition(n: int) -> None:
    """Slot i = m(ζ^(3^i mod 2N)), ζ = e^{iπ/N}, real part — evaluated directly."""
    from he_agg.hazmat.ckks import decode

    m = np.random.default_rng(n).standard_normal((3, n))
    zeta = np.exp(1j * np.pi / n)
    expected = np.empty((3, n // 2))
    for i in range(n // 2):
        point = zeta ** pow(3, i, 2 * n)
        expected[:, i] = (m @ point ** np.arange(n)).real
    assert np.allclose(decode(m), expected, atol=1e-12)


@pytest.mark.parametrize("magnitude", [10, 2**58, 2**62])
def test_signed_to_rns_both_paths(magnitude: int, params: Params) -> None:
    values = np.random.default_rng(magnitude % 97).integers(-magnitude, magnitude, (2, 64), dtype=np.int64)
    values[0, :3] = [0, -1, magnitude - 1]
    out = signed_to_rns(values, params.data_moduli)
    for l, q in enumerate(params.data_moduli):
        assert [int(x) for x in out[:, l].reshape(-1)] == [int(v) % q for v in values.reshape(-1)]
