"""Test-only helpers: TenSEAL secret keys and single-key decryption with he_agg's arithmetic.

These use a *TenSEAL* secret key (one the test itself generated) as an oracle. The
library never holds a full secret key; nothing here is imported by he_agg.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from he_agg.ciphertext import CiphertextBatch
from he_agg.hazmat import ckks, kernels
from he_agg.hazmat.wire import tenseal as tw
from he_agg.params import Params


def tenseal_secret_key(ctx, params: Params) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The context's secret key, NTT form at the key level, shape (L_all, N)."""
    data = ctx.serialize(save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    return tw.read_secret_key(data, params)


def phase(batch: CiphertextBatch, secret: np.ndarray) -> np.ndarray:
    """c0 + c1·s in NTT form on the data primes, shape (count, L, N)."""
    moduli = batch.params.data_moduli
    s = np.ascontiguousarray(secret[: len(moduli)])
    out = np.empty_like(batch.data[:, 0])
    kernels.muladd(out, np.ascontiguousarray(batch.data[:, 1]), s, np.ascontiguousarray(batch.data[:, 0]), moduli)
    return out


def decrypt(batch: CiphertextBatch, secret: np.ndarray) -> np.ndarray:
    """Single-key CKKS decryption with he_agg's kernels: the first ``length`` slot values."""
    m = phase(batch, secret)
    kernels.ntt_inverse(m, batch.params.data_moduli)
    coefficients = kernels.crt_to_double(m, batch.params.data_moduli, batch.params.scale)
    return ckks.decode(coefficients).reshape(-1)[: batch.length]


def decrypted_coefficients(batch: CiphertextBatch, secret: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The centred decrypted polynomial coefficients divided by ``scale``, shape (count, N)."""
    m = phase(batch, secret)
    kernels.ntt_inverse(m, batch.params.data_moduli)
    return kernels.crt_to_double(m, batch.params.data_moduli, scale)


def native_lib():  # type: ignore[no-untyped-def]
    """The compiled core's cffi ``lib`` (for tests that call it directly)."""
    from he_agg.hazmat.kernels import _native

    return _native.lib


@contextlib.contextmanager
def forced_native_path(selector: str, path: str) -> Iterator[None]:
    """Run the native backend with one code path forced (``heagg_ntt_select`` or
    ``heagg_simd_select``, path scalar / avx2 / avx512); skip where the CPU or build lacks it."""
    if "native" not in kernels.available_backends():
        pytest.skip("native core not built")
    lib = native_lib()
    select = getattr(lib, selector)
    code = getattr(lib, f"HEAGG_NTT_{path.upper()}")
    if select(code) != code:
        pytest.skip(f"no {path} code path ({selector}) on this CPU or build")
    try:
        with kernels.use_backend("native"):
            yield
    finally:
        select(lib.HEAGG_NTT_AUTO)
