"""Parameters: SEAL's prime selection, parms_id, and the 128-bit security bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from hypothesis import given
from hypothesis import strategies as st

from he_agg.errors import ParameterError
from he_agg.hazmat.wire import tenseal as tw
from he_agg.params import AGGREGATION, MAX_MODULUS_BITS_128, Params, is_prime, parms_id, seal_primes

from .conftest import make_context


def _seal_create(n: int, bits: list[int]) -> tuple[int, ...]:
    return tuple(m.value() for m in sealapi.CoeffModulus.Create(n, bits))


@pytest.mark.parametrize(
    "n, bits",
    [
        (8192, [60, 60, 60]),
        (8192, [60, 40, 40, 60]),
        (4096, [40, 20, 40]),
        (16384, [60, 50, 50, 50, 60]),
        (2048, [27, 27]),
        (32768, [60] * 6 + [40] * 4),
    ],
)
def test_primes_match_seal(n: int, bits: list[int]) -> None:
    assert seal_primes(n, bits) == _seal_create(n, bits)


@given(
    n=st.sampled_from([1024, 2048, 4096, 8192, 16384]),
    bits=st.lists(st.integers(20, 60), min_size=1, max_size=5),
)
def test_primes_match_seal_property(n: int, bits: list[int]) -> None:
    # Skip only the cases SEAL itself cannot satisfy (not enough primes of a small size).
    try:
        expected = _seal_create(n, bits)
    except Exception:
        with pytest.raises(ParameterError):
            seal_primes(n, bits)
        return
    assert seal_primes(n, bits) == expected


def test_miller_rabin_against_trial_division() -> None:
    small = [k for k in range(2000) if k > 1 and all(k % d for d in range(2, int(math.isqrt(k)) + 1))]
    assert [k for k in range(2000) if is_prime(k)] == small
    assert is_prime(1152921504606748673)
    assert not is_prime(1152921504606748673 * 3)
    assert not is_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7


def test_parms_id_matches_tenseal_ciphertexts(ctx) -> None:  # type: ignore[no-untyped-def]
    blob = ts.ckks_vector(ctx, [1.0]).serialize()
    view = tw.read_vector(blob, AGGREGATION)  # read_vector checks the parms_id itself
    assert view.length == 1
    # and the key-level id is what the public key carries
    parts = tw.read_context(ctx.serialize(save_public_key=True, save_secret_key=False))
    assert parts.params.key_parms_id == parms_id(8192, AGGREGATION.moduli)
    assert AGGREGATION.level_parms_ids()[0] == AGGREGATION.key_parms_id
    assert AGGREGATION.level_parms_ids()[1] == AGGREGATION.data_parms_id


def test_default_preset() -> None:
    p = AGGREGATION
    assert p.n == 8192 and [q.bit_length() for q in p.moduli] == [60, 60, 60]
    assert p.scale == 2.0**90
    assert 28 < p.headroom_bits < 29.5
    assert p.data_moduli == p.moduli[:2] and p.special_modulus == p.moduli[2]
    assert Params.from_tenseal(make_context(p)) == p


@given(
    n=st.sampled_from(sorted(MAX_MODULUS_BITS_128)),
    bits=st.lists(st.integers(20, 60), min_size=2, max_size=16),
)
def test_security_bound_enforced(n: int, bits: list[int]) -> None:
    bound = MAX_MODULUS_BITS_128[n]
    if sum(bits) > bound:
        with pytest.raises(ParameterError, match=f"{bound} bits"):
            Params.from_bit_sizes(n, bits, 2.0**10)
    else:
        try:
            p = Params.from_bit_sizes(n, bits, 2.0**10)
        except ParameterError as exc:  # allowed only for reasons other than security
            assert "security" not in str(exc)
        else:
            assert p.total_bits <= bound


def test_seal_refuses_what_we_refuse() -> None:
    with pytest.raises(ParameterError, match="218"):
        Params.from_bit_sizes(8192, [60, 60, 60, 60], 2.0**90)
    with pytest.raises(ValueError):  # TenSEAL/SEAL agree: 240 bits at N=8192 is insecure
        ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 60, 60, 60])


def _below_2_60(accept) -> int:  # type: ignore[no-untyped-def]
    value = (1 << 60) - 1
    while not accept(value):
        value -= 2
    return value


COMPOSITE_1_MOD_2N = _below_2_60(lambda v: v % 16384 == 1 and not is_prime(v))
PRIME_NOT_1_MOD_2N = _below_2_60(lambda v: v % 16384 != 1 and is_prime(v))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=8192, moduli=(AGGREGATION.moduli[0],), scale=2.0**40), "at least two primes"),
        (dict(n=8192, moduli=(AGGREGATION.moduli[0],) * 2, scale=2.0**40), "distinct"),
        (dict(n=8192, moduli=(COMPOSITE_1_MOD_2N, AGGREGATION.moduli[1]), scale=2.0**40), "not prime"),
        (dict(n=8192, moduli=(PRIME_NOT_1_MOD_2N, AGGREGATION.moduli[1]), scale=2.0**40), "≡ 1 mod"),
        (dict(n=8192, moduli=AGGREGATION.moduli, scale=2.0**120), "headroom"),
        (dict(n=8192, moduli=AGGREGATION.moduli, scale=float("nan")), "scale"),
        (dict(n=3000, moduli=AGGREGATION.moduli, scale=2.0**40), "not supported"),
        (dict(n=8192, moduli=((1 << 62) - 57, AGGREGATION.moduli[1]), scale=2.0**40), "bits"),
    ],
)
def test_invalid_parameters_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Params(**kwargs)


def test_fingerprint_distinguishes_scale_and_primes() -> None:
    a = AGGREGATION
    b = Params(n=a.n, moduli=a.moduli, scale=2.0**80)
    c = Params.from_bit_sizes(8192, [60, 40, 40, 60], 2.0**40)
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    assert a.fingerprint == Params(n=a.n, moduli=a.moduli, scale=a.scale).fingerprint
    assert np.uint64(a.moduli[0]) == a.moduli[0]  # fits a machine word
