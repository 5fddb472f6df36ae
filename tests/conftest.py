"""Shared fixtures: parameter sets and TenSEAL contexts (TenSEAL is the oracle)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from he_agg.params import AGGREGATION, Params

DATA = Path(__file__).parent / "data"

# CI gets a fixed, moderate profile; run with HYPOTHESIS_PROFILE=thorough for more examples.
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def params() -> Params:
    """The default preset: N=8192, [60, 60, 60], scale 2^90."""
    return AGGREGATION


@pytest.fixture(scope="session")
def small_params() -> Params:
    """N=4096, [40, 20, 40], scale 2^25: the parameters of the known-answer files."""
    return Params.from_bit_sizes(4096, [40, 20, 40], 2.0**25)


def make_context(p: Params):  # type: ignore[no-untyped-def]
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, p.n, coeff_mod_bit_sizes=p.to_tenseal_bit_sizes())
    ctx.global_scale = p.scale
    return ctx


@pytest.fixture(scope="session")
def ctx(params: Params):  # type: ignore[no-untyped-def]
    """A TenSEAL context (with secret key) for the default preset."""
    return make_context(params)


@pytest.fixture(scope="session")
def small_ctx(small_params: Params):  # type: ignore[no-untyped-def]
    return make_context(small_params)


@pytest.fixture(scope="session")
def kat() -> dict:
    meta = json.loads((DATA / "kat.json").read_text())
    meta["vector"] = (DATA / "kat_vector.bin").read_bytes()
    meta["context"] = (DATA / "kat_context.bin").read_bytes()
    meta["plain"] = np.linspace(-1.0, 1.0, meta["length"]) ** 3
    return meta
