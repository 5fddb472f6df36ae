"""Byte-mutation fuzzing: every parser, thousands of damaged inputs, only he_agg errors.

A parser may accept a mutated input (a flipped residue bit that stays below its prime is
still a valid ciphertext) but must never raise anything except a HeAggError, crash, or
hang. HE_AGG_FUZZ_EXAMPLES raises the number of inputs per parser (default 1500).
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he_agg.ciphertext import CiphertextBatch
from he_agg.errors import HeAggError
from he_agg.hazmat.wire import tenseal as tw
from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from he_agg.params import Params

EXAMPLES = int(os.environ.get("HE_AGG_FUZZ_EXAMPLES", "1500"))
fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, bytes]]:
    """1–4 edits, half of them in the first 300 bytes where the headers are."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "flip", "truncate", "insert", "delete"]))
        near_head = draw(st.booleans())
        pos = draw(st.integers(0, min(size, 300) - 1 if near_head else size - 1))
        blob = draw(st.binary(min_size=1, max_size=9))
        edits.append((kind, pos, blob))
    return edits


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, pos, blob in edits:
        pos = min(pos, max(len(out) - 1, 0))
        if kind == "set":
            out[pos : pos + len(blob)] = blob
        elif kind == "flip" and out:
            out[pos] ^= 1 << (blob[0] % 8)
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = blob
        elif kind == "delete":
            del out[pos : pos + len(blob)]
    return bytes(out)


def only_he_agg_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    try:
        parse(data)
    except HeAggError:
        pass


@pytest.fixture(scope="module")
def uncompressed_vector(small_ctx, small_params: Params) -> bytes:  # type: ignore[no-untyped-def]
    vec = ts.ckks_vector(small_ctx, np.linspace(-1, 1, 2100).tolist())
    return CiphertextBatch.from_tenseal(vec, small_params).to_tenseal_bytes(compress=False)


@pytest.fixture(scope="module")
def raw_zstd_vector(ctx) -> bytes:  # type: ignore[no-untyped-def]
    """TenSEAL's own zstd bytes at 60-bit primes: raw blocks, parsed in place."""
    return ts.ckks_vector(ctx, np.linspace(-1, 1, 300).tolist()).serialize()


@pytest.fixture(scope="module")
def envelope_bytes(small_ctx, small_params: Params) -> bytes:  # type: ignore[no-untyped-def]
    vec = ts.ckks_vector(small_ctx, np.linspace(-1, 1, 2100).tolist())
    return CiphertextBatch.from_tenseal(vec, small_params).to_bytes()


@fuzz_settings
@given(data=st.data())
def test_fuzz_tenseal_vector_zstd(data: st.DataObject, kat: dict, small_params: Params) -> None:
    blob = kat["vector"]
    edited = mutate(blob, data.draw(mutations(len(blob))))
    only_he_agg_errors(lambda b: CiphertextBatch.from_tenseal(b, small_params), edited)


@fuzz_settings
@given(data=st.data())
def test_fuzz_tenseal_vector_raw(data: st.DataObject, uncompressed_vector: bytes, small_params: Params) -> None:
    edited = mutate(uncompressed_vector, data.draw(mutations(len(uncompressed_vector))))
    only_he_agg_errors(lambda b: CiphertextBatch.from_tenseal(b, small_params), edited)


@fuzz_settings
@given(data=st.data())
def test_fuzz_tenseal_vector_raw_zstd(data: st.DataObject, raw_zstd_vector: bytes, params: Params) -> None:
    edited = mutate(raw_zstd_vector, data.draw(mutations(len(raw_zstd_vector))))
    only_he_agg_errors(lambda b: CiphertextBatch.sum([b], params), edited)  # through the kernel too


@fuzz_settings
@given(data=st.data())
def test_fuzz_tenseal_context(data: st.DataObject, kat: dict) -> None:
    blob = kat["context"]
    only_he_agg_errors(tw.read_context, mutate(blob, data.draw(mutations(len(blob)))))


@fuzz_settings
@given(data=st.data())
def test_fuzz_envelope_bytes(data: st.DataObject, envelope_bytes: bytes, small_params: Params) -> None:
    edited = mutate(envelope_bytes, data.draw(mutations(len(envelope_bytes))))
    only_he_agg_errors(lambda b: CiphertextBatch.from_bytes(b, small_params), edited)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@fuzz_settings
@given(key=st.sampled_from(["params", "n", "nmod", "length", "extra"]), value=json_values, drop=st.booleans(),
       body_cut=st.integers(0, 64))
def test_fuzz_resealed_meta(key: str, value: object, drop: bool, body_cut: int, envelope_bytes: bytes,
                            small_params: Params) -> None:
    """Mutations behind a valid checksum reach the meta and body validation itself."""
    env = open_envelope(envelope_bytes, Kind.CIPHERTEXT_BATCH, "t")
    meta = env.meta.as_dict()
    if drop:
        meta.pop(key, None)
    else:
        meta[key] = value
    body = bytes(env.body)[: len(env.body) - 8 * body_cut]
    try:
        resealed = seal_envelope(Kind.CIPHERTEXT_BATCH, meta, body)
    except ValueError:  # JSON could not encode the value: nothing to parse
        return
    only_he_agg_errors(lambda b: CiphertextBatch.from_bytes(b, small_params), resealed)
