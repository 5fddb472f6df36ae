"""Summing K clients' encrypted vectors: TenSEAL's loop vs he_agg native / numba vs the numpy floor.

Run:  pytest benchmarks/bench_aggregate.py --benchmark-enable -p no:cacheprovider
      (pyproject's addopts disable benchmarks by default; they then run once as tests)

The same serialized inputs for every method (8 clients x 32,768 values, N=8192: 8
ciphertexts, 2 MiB of residues per client). No assertions on time; the full-size, side
by side comparison is ``he-agg bench aggregate --clients 64 --values 262144``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from he_agg.bench import aggregate, common
from he_agg.ciphertext import CiphertextBatch, residue_view
from he_agg.hazmat import kernels
from he_agg.params import AGGREGATION

CLIENTS, VALUES = 8, 32768
FAST = [b for b in ("native", "numba") if b in kernels.available_backends()]


@pytest.fixture(scope="module")
def ctx() -> Any:
    return common.tenseal_context(AGGREGATION)


@pytest.fixture(scope="module")
def workload(ctx: Any) -> aggregate.Workload:
    return aggregate.encrypt_clients(ctx, CLIENTS, VALUES, np.random.default_rng(0))


@pytest.fixture(scope="module")
def inputs(workload: aggregate.Workload) -> dict[str, list[bytes]]:
    """The workload in every wire format (converted once, outside timing)."""
    return {fmt: [aggregate.convert(b, fmt, AGGREGATION) for b in workload.blobs] for fmt in aggregate.FORMATS}


@pytest.fixture(scope="module")
def stacked(inputs: dict[str, list[bytes]]) -> np.ndarray:
    return aggregate.floor_arrays(inputs["tenseal-raw"], AGGREGATION)


@pytest.fixture(params=FAST)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def _info(benchmark: Any, stacked: np.ndarray) -> None:
    benchmark.extra_info.update(clients=CLIENTS, values=VALUES, residue_bytes=int(stacked.nbytes))


def test_tenseal_loop(benchmark: Any, ctx: Any, workload: aggregate.Workload, stacked: np.ndarray) -> None:
    """TenSEAL users' aggregation: deserialize (zstd) and ``+=``."""
    _info(benchmark, stacked)
    benchmark(aggregate.tenseal_sum, ctx, workload.blobs)


@pytest.mark.parametrize("fmt", aggregate.FORMATS)
def test_he_agg_sum(benchmark: Any, backend: str, fmt: str, inputs: dict[str, list[bytes]],
                    stacked: np.ndarray) -> None:
    """``CiphertextBatch.sum``: parse and validate every input, then one native pass."""
    items = inputs[fmt]
    CiphertextBatch.sum(items[:1], AGGREGATION)  # warm-up (numba compiles)
    benchmark.extra_info["format"] = fmt
    _info(benchmark, stacked)
    benchmark(CiphertextBatch.sum, items, AGGREGATION)


@pytest.mark.parametrize("fmt", aggregate.FORMATS)
def test_parse(benchmark: Any, fmt: str, inputs: dict[str, list[bytes]], stacked: np.ndarray) -> None:
    """Locating and validating the inputs alone (``residue_view``), no summing."""
    items = inputs[fmt]
    benchmark.extra_info["format"] = fmt
    _info(benchmark, stacked)
    benchmark(lambda: [residue_view(x, AGGREGATION) for x in items])


def test_kernel(benchmark: Any, backend: str, inputs: dict[str, list[bytes]], stacked: np.ndarray) -> None:
    """The summing kernel alone, on inputs already located (uncompressed TenSEAL blobs)."""
    views = [residue_view(x, AGGREGATION) for x in inputs["tenseal-raw"]]
    sources = [(v.buffer, v.offsets) for v in views]
    acc = np.zeros(stacked.shape[1:], dtype=np.uint64)
    kernels.sum_ciphertexts(acc, sources[:1], AGGREGATION.data_moduli)  # warm-up
    _info(benchmark, stacked)
    benchmark.pedantic(kernels.sum_ciphertexts, args=(acc, sources, AGGREGATION.data_moduli),
                       setup=lambda: acc.fill(0), rounds=20)


@pytest.mark.parametrize("method", ["add-loop", "add-reduce", "add-blocked"])
def test_numpy_floor(benchmark: Any, method: str, stacked: np.ndarray) -> None:
    """The memory floor: numpy adding the same uint64 words, no validation, no reduction."""
    _info(benchmark, stacked)
    benchmark(aggregate.floor_methods(stacked)[method])
