"""Fuzzing every parser of bytes from other parties, and regressions for what it found.

Each entry point gets random bytes, byte mutations of a valid object and — for he_agg
envelopes — meta JSON edits re-sealed with a valid checksum (tests/fuzzing.py). A parser
may accept an input but must never raise anything except a HeAggError, nor hang.
HE_AGG_FUZZ_EXAMPLES raises the number of inputs per entry point (default 200).
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tenseal as ts
import zstandard

from he_agg.aggregator import Aggregator
from he_agg.ciphertext import CiphertextBatch
from he_agg.client import EncryptedUpdate, encrypt
from he_agg.context import PublicContext
from he_agg.errors import FormatError, HeAggError, ResourceLimitError
from he_agg.hazmat.wire import seal
from he_agg.hazmat.wire import tenseal as tw
from he_agg.hazmat.wire.envelope import MAX_META_DEPTH, Kind, Meta, open_envelope, parse_meta
from he_agg.identity import PartyIdentity
from he_agg.params import Params
from he_agg.requests import DecryptionRequest, DecryptionShare

from .fuzzing import EXAMPLES, assert_only_heagg_errors, reseal

# -- valid objects ---------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def context(small_ctx, small_params: Params) -> PublicContext:  # type: ignore[no-untyped-def]
    """A 2-of-3 public context around the TenSEAL context's own public key."""
    public_key = tw.read_context(small_ctx.serialize(save_secret_key=False)).public_key
    roster = tuple(PartyIdentity.generate().public_key for _ in range(3))
    return PublicContext(small_params, public_key, parties=3, threshold=2, roster=roster, secret_terms=1)


@pytest.fixture(scope="module")
def update(context: PublicContext) -> EncryptedUpdate:
    return encrypt(context, {"w": np.linspace(-1, 1, 30), "b": np.ones(3)}, client_id="alice", round_id=7)


@pytest.fixture(scope="module")
def request_bytes(context: PublicContext, update: EncryptedUpdate) -> bytes:
    agg = Aggregator(context, 7)
    agg.add(update.to_bytes())
    return agg.decryption_request().to_bytes()


@pytest.fixture(scope="module")
def share_bytes(context: PublicContext, update: EncryptedUpdate) -> bytes:
    params = context.params
    rng = np.random.default_rng(5)
    residues = np.stack([rng.integers(0, q, size=(update.ciphertext.count, params.n), dtype=np.uint64)
                         for q in params.data_moduli], axis=1)
    return DecryptionShare(1, (0, 1), bytes(range(32)), context.committee_id, residues, 2.0**50).to_bytes()


# -- fuzzing, one test per entry point ---------------------------------------------------------


def test_fuzz_tenseal_vector_zstd(kat: dict, small_params: Params) -> None:
    assert_only_heagg_errors(lambda b: CiphertextBatch.from_tenseal(b, small_params), kat["vector"], examples=EXAMPLES)


def test_fuzz_tenseal_vector_raw(uncompressed_vector: bytes, small_params: Params) -> None:
    assert_only_heagg_errors(lambda b: CiphertextBatch.from_tenseal(b, small_params), uncompressed_vector,
                             examples=EXAMPLES)


def test_fuzz_tenseal_vector_raw_zstd_summed(raw_zstd_vector: bytes, params: Params) -> None:
    """Through the summing kernel too (residues are range-checked there)."""
    assert_only_heagg_errors(lambda b: CiphertextBatch.sum([b], params), raw_zstd_vector, examples=EXAMPLES)


def test_fuzz_tenseal_context(kat: dict) -> None:
    assert_only_heagg_errors(tw.read_context, kat["context"], examples=EXAMPLES)


def test_fuzz_batch_from_bytes(envelope_bytes: bytes, small_params: Params) -> None:
    assert_only_heagg_errors(lambda b: CiphertextBatch.from_bytes(b, small_params), envelope_bytes, examples=EXAMPLES)


def test_fuzz_batch_sum(envelope_bytes: bytes, small_params: Params) -> None:
    assert_only_heagg_errors(lambda b: CiphertextBatch.sum([envelope_bytes, b], small_params), envelope_bytes,
                             examples=EXAMPLES)


def test_fuzz_encrypted_update(update: EncryptedUpdate, context: PublicContext) -> None:
    assert_only_heagg_errors(lambda b: EncryptedUpdate.from_bytes(b, context), update.to_bytes(), examples=EXAMPLES)


def test_fuzz_public_context(context: PublicContext, small_params: Params) -> None:
    blob = context.to_bytes()
    assert_only_heagg_errors(PublicContext.from_bytes, blob, examples=EXAMPLES)
    assert_only_heagg_errors(lambda b: PublicContext.from_bytes(b, small_params), blob, examples=EXAMPLES // 4)


def test_fuzz_decryption_request(request_bytes: bytes, context: PublicContext) -> None:
    assert_only_heagg_errors(lambda b: DecryptionRequest.from_bytes(b, context), request_bytes, examples=EXAMPLES)


def test_fuzz_decryption_share(share_bytes: bytes, context: PublicContext) -> None:
    assert_only_heagg_errors(lambda b: DecryptionShare.from_bytes(b, context), share_bytes, examples=EXAMPLES)


def test_fuzz_aggregator_add(update: EncryptedUpdate, context: PublicContext) -> None:
    def add(blob: bytes) -> None:
        Aggregator(context, 7).add(blob)

    assert_only_heagg_errors(add, update.to_bytes(), examples=EXAMPLES)


def test_fuzz_aggregator_add_raw_vector(raw_zstd_vector: bytes, ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    public_key = tw.read_context(ctx.serialize(save_secret_key=False)).public_key
    big = PublicContext(params, public_key, parties=1, threshold=1, roster=(PartyIdentity.generate().public_key,),
                        secret_terms=1)
    _, layout = __import__("he_agg.packing", fromlist=["flatten"]).flatten(np.zeros(300))

    def add(blob: bytes) -> None:
        Aggregator(big, 1, layout=layout).add(blob, client_id="bob")

    assert_only_heagg_errors(add, raw_zstd_vector, examples=EXAMPLES // 2)


# -- regressions: meta JSON (finding 8) ---------------------------------------------------------


def _resealed(valid: bytes, edit: Callable[[str], str]) -> bytes:
    """``valid`` with its meta text edited and the checksum recomputed."""
    env = open_envelope(valid, Kind(int.from_bytes(valid[6:8], "little")), "t")
    text = json.dumps(env.meta.as_dict(), sort_keys=True, separators=(",", ":"))
    return reseal(int(env.kind), edit(text).encode(), bytes(env.body))


def _set(key: str, raw: str) -> Callable[[str], str]:
    """A meta edit: set ``key`` to the raw JSON text ``raw``."""
    return lambda text: text[:-1] + f',"{key}":{raw}}}' if f'"{key}":' not in text else _replace(text, key, raw)


def _replace(text: str, key: str, raw: str) -> str:
    meta = json.loads(text)
    meta[key] = "@@"
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).replace('"@@"', raw)


@pytest.fixture(scope="module")
def parsers(envelope_bytes: bytes, small_params: Params, update: EncryptedUpdate, context: PublicContext,
            request_bytes: bytes, share_bytes: bytes) -> dict[str, tuple[bytes, Callable[[bytes], Any]]]:
    return {
        "batch": (envelope_bytes, lambda b: CiphertextBatch.from_bytes(b, small_params)),
        "update": (update.to_bytes(), lambda b: EncryptedUpdate.from_bytes(b, context)),
        "aggregator": (update.to_bytes(), lambda b: Aggregator(context, 7).add(b)),
        "context": (context.to_bytes(), PublicContext.from_bytes),
        "request": (request_bytes, lambda b: DecryptionRequest.from_bytes(b, context)),
        "share": (share_bytes, lambda b: DecryptionShare.from_bytes(b, context)),
    }


@pytest.mark.parametrize("name", ["batch", "update", "aggregator", "context", "request", "share"])
@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t[:-1] + ',"deep":' + "[" * 1000 + "]" * 1000 + "}", "nesting deeper"),
    (lambda t: t[:-1] + ',"deep":' + '{"a":' * 1000 + "1" + "}" * 1001, "nesting deeper"),
    (lambda t: t[:-1] + ',"big":1' + "0" * 5000 + "}", "5001 digits"),
    (lambda t: t[:-1] + ',"x":NaN}', "NaN"),
    (lambda t: t[:-1] + ',"x":-Infinity}', "Infinity"),
    (lambda t: t[:-1] + ',"x":1e400}', "overflows"),
    (lambda t: t[:-1] + ',"x":[' + ",".join(["0"] * 200_000) + "]}", "more than"),
    (lambda t: t[:-1] + ',"x":1,"x":2}', "duplicated key"),
    (lambda t: t + "]", "closing bracket"),
])
def test_meta_json_is_bounded(parsers: dict, name: str, edit: Callable[[str], str], match: str) -> None:
    valid, parse = parsers[name]
    with pytest.raises(ResourceLimitError, match=match):
        parse(_resealed(valid, edit))


def test_meta_depth_is_checked_without_recursion() -> None:
    """A nesting far beyond the interpreter's recursion limit is refused by counting."""
    for deep in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000):
        with pytest.raises(FormatError):
            parse_meta(deep, "t")
    inner = MAX_META_DEPTH - 1  # the top-level object is one level
    assert parse_meta(b'{"a":' + b"[" * inner + b"]" * inner + b"}", "t") is not None
    with pytest.raises(ResourceLimitError, match="nesting deeper"):
        parse_meta(b'{"a":' + b"[" * (inner + 1) + b"]" * (inner + 1) + b"}", "t")
    assert parse_meta(b'{"a":"[[[[[[","b":"\\"]]"}', "t") == {"a": "[[[[[[", "b": '"]]'}


@pytest.mark.parametrize("name", ["batch", "update", "aggregator", "request"])
def test_length_2_40_costs_nothing(parsers: dict, name: str) -> None:
    """A 2^40-value length is refused against the body before anything is sized by it."""
    valid, parse = parsers[name]
    blob = _resealed(valid, _set("length", str(2**40)))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FormatError, match="body is"):
            parse(blob)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 64 << 20, (elapsed, peak)  # was 10 s and 4 GiB


def test_context_scale_10_400_and_threshold_above_parties(context: PublicContext) -> None:
    valid = context.to_bytes()
    with pytest.raises(FormatError):  # 401 digits: refused by the parser (was OverflowError)
        PublicContext.from_bytes(_resealed(valid, _set("scale", str(10**400))))
    with pytest.raises(FormatError, match="finite number"):  # an integer no double holds
        Meta({"scale": 2**1100}, "t").number("scale")
    with pytest.raises(FormatError):  # was ValueError
        PublicContext.from_bytes(_resealed(_resealed(valid, _set("threshold", "3")), _set("parties", "2")))
    with pytest.raises(FormatError, match="inconsistent committee settings"):
        PublicContext.from_bytes(_resealed(valid, _set("threshold", "4")))
    with pytest.raises(FormatError, match="inconsistent committee settings"):
        PublicContext.from_bytes(_resealed(valid, _set("secret_terms", "100")))


def test_request_duplicate_or_empty_contributions(request_bytes: bytes, context: PublicContext) -> None:
    meta = open_envelope(request_bytes, Kind.DECRYPTION_REQUEST, "t").meta.as_dict()
    one = json.dumps(meta["contributions"][0])
    with pytest.raises(FormatError, match="twice"):
        DecryptionRequest.from_bytes(_resealed(request_bytes, _set("contributions", f"[{one},{one}]")), context)
    with pytest.raises(FormatError, match="no contributions"):
        DecryptionRequest.from_bytes(_resealed(request_bytes, _set("contributions", "[]")), context)


@pytest.mark.parametrize("value", [None, True, "7", 7.5, [7], {"a": 7}, -1, 2**63, 10**39])
def test_meta_accessors_raise_format_error(value: object) -> None:
    meta = Meta({"k": value}, "t")
    calls: list[Callable[[], object]] = [
        lambda: meta.integer("k", 0, 100), lambda: meta.integers("k", 0, 100), lambda: meta.text("k", 3),
        lambda: meta.hexbytes("k", 4), lambda: meta.integer("missing"), lambda: meta.raw("missing"),
    ]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        calls.append(lambda: meta.number("k"))
    for call in calls:
        try:
            got = call()
        except FormatError:
            continue
        assert value == got and type(value) is type(got), (value, got)  # only a valid value gets through
    for bad in ("ABCD1234", "abcd12", "ab cd 12 34", "zz" * 4, "\u00e9" * 8):
        with pytest.raises(FormatError):
            Meta({"k": bad}, "t").hexbytes("k", 4)


# -- regressions: TenSEAL framing (finding 6) ---------------------------------------------------


def tiny_block_vector(blob: bytes, block: int = 1) -> bytes:
    """``blob`` (TenSEAL zstd bytes) with every ciphertext re-framed as zstd raw blocks of
    ``block`` bytes: valid zstd (libzstd decodes it) and the same residues."""
    view = memoryview(blob)
    parts = []
    for f in tw._scan(view, {1: {tw._BYTES}, 2: {tw._BYTES}, 3: {tw._FIXED64}}, "t"):
        raw = bytes(view[f.value : f.end])
        if f.number == 2:
            payload = zstandard.ZstdDecompressor().decompress(raw[seal.HEADER.size :])
            frame = bytearray(b"\x28\xb5\x2f\xfd\xe0" + len(payload).to_bytes(8, "little"))
            for i in range(0, len(payload), block):
                piece = payload[i : i + block]
                frame += (int(i + block >= len(payload)) | len(piece) << 3).to_bytes(3, "little") + piece
            raw = seal._write_header(len(frame), seal.COMPR_ZSTD) + bytes(frame)
        parts.append(tw._key(f.number, f.wire_type) + (tw._varint(len(raw)) if f.wire_type == tw._BYTES else b"") + raw)
    return b"".join(parts)


def test_tiny_zstd_blocks_sum_correctly_and_cheaply(raw_zstd_vector: bytes, params: Params) -> None:
    """1-byte raw blocks (262,144 segments a ciphertext; was 7.9 s and 166 MB to sum): decoded
    by libzstd instead of read in place, with the same sum."""
    adversarial = tiny_block_vector(raw_zstd_vector)
    view = tw.read_vector(adversarial, params)
    assert isinstance(view.buffer, np.ndarray) and view.offsets.ndim == 1  # the decoder path
    tracemalloc.start()
    start = time.perf_counter()
    try:
        got = CiphertextBatch.sum([adversarial, adversarial], params)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == CiphertextBatch.sum([raw_zstd_vector, raw_zstd_vector], params)
    assert elapsed < 2.0 and peak < 32 << 20, (elapsed, peak)
    # blocks of at least 4 KiB are still read in place
    view = tw.read_vector(tiny_block_vector(raw_zstd_vector, seal.ZSTD_MIN_RAW_BLOCK), params)
    assert not isinstance(view.buffer, np.ndarray) and view.offsets.ndim == 3


def test_honest_tenseal_blob_is_zero_copy(raw_zstd_vector: bytes, params: Params) -> None:
    view = tw.read_vector(raw_zstd_vector, params)
    assert isinstance(view.buffer, memoryview) and view.offsets.ndim == 3  # segments into the blob itself
    assert view.offsets.shape[1] <= -(-seal.ciphertext_bytes(params) // seal.ZSTD_MIN_RAW_BLOCK) + 1


def test_chunk_sizes_are_checked_arithmetically(uncompressed_vector: bytes, small_params: Params) -> None:
    """A chunk size of 2^63 is refused without building a list of 2^51 entries."""
    fields = tw._scan(memoryview(uncompressed_vector), {1: {2}, 2: {2}, 3: {1}}, "t")
    rest = b"".join(uncompressed_vector[f.value - len(tw._key(2, 2)) - len(tw._varint(f.end - f.value)) : f.end]
                    for f in fields if f.number == 2)
    sizes = tw._varint(small_params.slots) + tw._varint(2**63)
    blob = tw._bytes_field(1, sizes) + rest + tw._double_field(3, small_params.scale)
    start = time.perf_counter()
    with pytest.raises(FormatError, match="chunking"):
        tw.read_vector(blob, small_params)
    assert time.perf_counter() - start < 1.0


def test_many_tiny_fields_fail_fast(small_params: Params) -> None:
    """300,000 empty ciphertext fields, or sizes for far more ciphertexts than present,
    fail at the first look (were ~10 s of per-field parsing for ~1 MB)."""
    sizes = b"".join(tw._varint(small_params.slots) for _ in range(300_000))
    tail = tw._double_field(3, small_params.scale)
    for blob, match in [(tw._bytes_field(1, sizes) + (tw._key(2, 2) + b"\0") * 300_000 + tail, "less than 16"),
                        (tw._bytes_field(1, sizes) + tw._bytes_field(2, bytes(16)) + tail, "chunk sizes for 1")]:
        start = time.perf_counter()
        with pytest.raises(FormatError, match=match):
            tw.read_vector(blob, small_params)
        assert time.perf_counter() - start < 1.0


def test_decompression_bomb_is_refused(small_params: Params) -> None:
    """Many ciphertexts of zero residues compress ~1000x: refused before decoding."""
    zero = np.zeros((1, 2, len(small_params.data_moduli), small_params.n), dtype=np.uint64)
    one = tw.write_vector(zero, small_params.slots, small_params)  # one full zstd ciphertext
    count = 200
    fields = tw._scan(memoryview(one), {1: {2}, 2: {2}, 3: {1}}, "t")
    ct = [one[f.value : f.end] for f in fields if f.number == 2][0]
    sizes = b"".join(tw._varint(small_params.slots) for _ in range(count))
    blob = tw._bytes_field(1, sizes) + tw._bytes_field(2, ct) * count + tw._double_field(3, small_params.scale)
    with pytest.raises(ResourceLimitError, match="decode to"):
        tw.read_vector(blob, small_params)


def test_random_bytes_only_raise_heagg_errors(small_params: Params, context: PublicContext) -> None:
    """The harness itself fails on a foreign exception (it is not vacuous)."""
    def parse(data: bytes) -> None:
        if len(data) > 3:
            raise KeyError("not a HeAggError")

    with pytest.raises(Exception) as info:
        assert_only_heagg_errors(lambda b: parse(b) if b != b"ok" else None, b"ok", examples=50)
    assert not isinstance(info.value, HeAggError)
