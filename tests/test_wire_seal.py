"""TenSEAL / SEAL byte formats: each fact he_agg relies on, proven against TenSEAL itself."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import tenseal as ts

from he_agg.ciphertext import CiphertextBatch
from he_agg.errors import (
    FormatError,
    HeAggError,
    ParameterMismatchError,
    ResidueRangeError,
    UnsupportedCiphertextError,
)
from he_agg.hazmat.wire import seal, tenseal as tw
from he_agg.params import Params

from .conftest import make_context


def _fields(blob: bytes) -> list[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of a CKKSVector blob."""
    return [(f.number, f.value, f.end) for f in tw._scan(memoryview(blob), {1: {0, 2}, 2: {2}, 3: {1}}, "t")]


# -- known-answer bytes (TenSEAL 0.3.18) --------------------------------------------------


def test_kat_files_unchanged(kat: dict) -> None:
    assert hashlib.sha256(kat["vector"]).hexdigest() == kat["vector_sha256"]
    assert hashlib.sha256(kat["context"]).hexdigest() == kat["context_sha256"]


def test_kat_context_parses(kat: dict, small_params: Params) -> None:
    parts = tw.read_context(kat["context"])
    assert parts.params == small_params
    assert parts.has_secret_key
    assert parts.public_key is not None and parts.public_key.shape == (2, 3, 4096)


def test_kat_vector_round_trips_through_tenseal(kat: dict, small_params: Params) -> None:
    batch = CiphertextBatch.from_tenseal(kat["vector"], small_params)
    assert (batch.length, batch.count) == (3000, 2)
    context = ts.context_from(kat["context"])
    for compress in (True, False):
        again = ts.ckks_vector_from(context, batch.to_tenseal_bytes(compress=compress))
        assert np.abs(np.array(again.decrypt()) - kat["plain"]).max() < 1e-3
    # the same residues come back out of our own bytes
    assert CiphertextBatch.from_tenseal(batch.to_tenseal_bytes(compress=False), small_params) == batch


def test_kat_seal_header_facts(kat: dict) -> None:
    blob = kat["vector"]
    fields = _fields(blob)
    assert [f[0] for f in fields] == [1, 2, 2, 3]
    _, start, end = fields[1]
    magic, hsize, major, minor, compression, reserved, size = seal.HEADER.unpack_from(blob, start)
    assert (magic, hsize, major, minor, compression, reserved) == (0xA15E, 16, 4, 3, 2, 0)
    assert size == end - start  # total size includes the header; compressed size when compressed


# -- live TenSEAL facts -------------------------------------------------------------------


def test_chunking_matches_tenseal(ctx, params: Params, capfd) -> None:  # type: ignore[no-untyped-def]
    blob = ts.ckks_vector(ctx, np.zeros(10000).tolist()).serialize()
    capfd.readouterr()  # TenSEAL warns on stdout for vectors longer than N/2
    view = tw.read_vector(blob, params)
    assert view.length == 10000 and view.count == 3
    assert tw.chunk_sizes(10000, params.slots) == [4096, 4096, 1808]
    packed = blob[_fields(blob)[0][1] : _fields(blob)[0][2]]
    sizes, pos = [], 0
    while pos < len(packed):
        value, pos = tw._read_varint(memoryview(packed), pos, "t")
        sizes.append(value)
    assert sizes == [4096, 4096, 1808]


def test_ciphertext_payload_layout(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    values = np.linspace(-1, 1, 100)
    batch = CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, values.tolist()), params)
    raw = batch.to_tenseal_bytes(compress=False)
    _, start, _ = _fields(raw)[1]
    payload = start + seal.HEADER.size
    parms_id, is_ntt, size, n, nmod, scale, correction = struct.unpack_from("<32sBQQQdQ", raw, payload)
    assert (is_ntt, size, n, nmod, scale, correction) == (1, 2, 8192, 2, 2.0**90, 1)
    assert parms_id == params.data_parms_id
    data_at = start + seal.HEADER.size + seal.CT_DATA_OFFSET
    assert int(tw.read_vector(raw, params).offsets[0]) == data_at  # the zero-copy view points here
    words = np.frombuffer(raw, "<u8", 2 * 2 * 8192, data_at).reshape(2, 2, 8192)
    assert np.array_equal(words, batch.data[0])  # (polynomial, prime, coefficient)


def test_written_bytes_decrypt_in_tenseal(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    values = np.random.default_rng(3).uniform(-1, 1, 5000)
    batch = CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, values.tolist()).serialize(), params)
    for compress in (True, False):
        vec = ts.ckks_vector_from(ctx, batch.to_tenseal_bytes(compress=compress))
        assert np.abs(np.array(vec.decrypt()) - values).max() < 1e-9
        assert vec.size() == 5000
    assert batch.to_tenseal(ctx).size() == 5000


def test_he_agg_bytes_round_trip(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    batch = CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, [0.5] * 9000), params)
    data = batch.to_bytes()
    again = CiphertextBatch.from_bytes(data, params)
    assert again == batch and again.digest == batch.digest
    per_value = len(data) / (batch.count * params.slots)
    assert per_value < 64.1  # 2 polys × 2 primes × 8 bytes per slot, plus the envelope


def test_digest_is_the_same_in_every_form(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    from he_agg.ciphertext import residue_view, view_digest

    vec = ts.ckks_vector(ctx, np.linspace(-1, 1, 4100).tolist())
    batch = CiphertextBatch.from_tenseal(vec, params)
    forms = [vec.serialize(), batch.to_tenseal_bytes(compress=False), batch.to_bytes(), batch]
    assert {view_digest(residue_view(f, params), params) for f in forms} == {batch.digest}
    other = CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, [0.0] * 4100), params)
    assert other.digest != batch.digest


def test_public_key_injection(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    """A context we write around a public key encrypts under that key in TenSEAL."""
    parts = tw.read_context(ctx.serialize(save_public_key=True, save_secret_key=False))
    assert parts.public_key is not None and not parts.has_secret_key
    public = ts.context_from(tw.write_context(params, parts.public_key))
    assert not public.has_secret_key()
    vec = ts.ckks_vector(public, [1.5, -2.25])
    vec.link_context(ctx)
    assert np.allclose(vec.decrypt(), [1.5, -2.25], atol=1e-9)


# -- malformed inputs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_vector(ctx) -> bytes:  # type: ignore[no-untyped-def]
    """An uncompressed 2-ciphertext TenSEAL vector."""
    vec = ts.ckks_vector(ctx, np.linspace(0, 1, 4096 + 10).tolist())
    return CiphertextBatch.from_tenseal(vec, make_params_default()).to_tenseal_bytes(compress=False)


def make_params_default() -> Params:
    from he_agg.params import AGGREGATION

    return AGGREGATION


def _ct_start(blob: bytes, index: int = 0) -> int:
    return [f for f in _fields(blob) if f[0] == 2][index][1]


def _patch(blob: bytes, offset: int, data: bytes) -> bytes:
    return blob[:offset] + data + blob[offset + len(data) :]


def test_unaligned_residues(raw_vector: bytes, params: Params) -> None:
    view = tw.read_vector(raw_vector, params)
    assert not view.checked and view.buffer.obj is raw_vector  # zero copy
    assert any(int(o) % 8 for o in view.offsets)  # TenSEAL blobs put residues at odd offsets


@pytest.mark.parametrize("cut", [0, 1, 5, 30, 200, 1000, -1, -9])
def test_truncation(raw_vector: bytes, params: Params, cut: int) -> None:
    with pytest.raises(FormatError):
        tw.read_vector(raw_vector[:cut], params)


def test_wrong_seal_magic(raw_vector: bytes, params: Params) -> None:
    blob = _patch(raw_vector, _ct_start(raw_vector), b"\x00\x00")
    with pytest.raises(FormatError, match="magic"):
        tw.read_vector(blob, params)


def test_wrong_he_agg_magic(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    data = CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, [1.0]), params).to_bytes()
    with pytest.raises(FormatError, match="magic"):
        CiphertextBatch.from_bytes(b"XEAG" + data[4:], params)


def test_residue_not_below_prime(raw_vector: bytes, params: Params) -> None:
    data_at = _ct_start(raw_vector, 1) + seal.HEADER.size + seal.CT_DATA_OFFSET
    q1 = params.data_moduli[1]
    where = data_at + 8 * (1 * 8192 + 77)  # polynomial 0, prime 1, coefficient 77
    blob = _patch(raw_vector, where, struct.pack("<Q", q1))
    with pytest.raises(ResidueRangeError, match=r"prime 1, coefficient 77"):
        CiphertextBatch.from_tenseal(blob, params)
    blob = _patch(raw_vector, where, b"\xff" * 8)
    with pytest.raises(ResidueRangeError):
        CiphertextBatch.from_tenseal(blob, params)


def test_wrong_ring_degree(small_ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    blob = ts.ckks_vector(small_ctx, [1.0]).serialize()
    with pytest.raises(ParameterMismatchError, match="N=4096, expected N=8192"):
        tw.read_vector(blob, params)


def test_wrong_primes(params: Params) -> None:
    other = Params.from_bit_sizes(8192, [50, 50, 60], 2.0**70)
    ctx = make_context(other)
    blob = ts.ckks_vector(ctx, [1.0]).serialize()
    with pytest.raises(ParameterMismatchError, match="different primes"):
        tw.read_vector(blob, Params(n=8192, moduli=params.moduli, scale=2.0**70))
    with pytest.raises(ParameterMismatchError):
        tw.read_vector(blob, params)


def test_wrong_scale(params: Params) -> None:
    ctx = make_context(Params(n=params.n, moduli=params.moduli, scale=2.0**80))
    blob = ts.ckks_vector(ctx, [1.0]).serialize()
    with pytest.raises(ParameterMismatchError, match="scale"):
        tw.read_vector(blob, params)


def test_size_three_ciphertext(params: Params) -> None:
    p40 = Params(n=params.n, moduli=params.moduli, scale=2.0**40)
    ctx = make_context(p40)
    ctx.auto_relin = False
    ctx.auto_rescale = False
    vec = ts.ckks_vector(ctx, [1.0, 2.0])
    product = vec * vec
    with pytest.raises(UnsupportedCiphertextError, match="size-3"):
        tw.read_vector(product.serialize(), p40)


def test_rescaled_ciphertext_refused(params: Params) -> None:
    ctx = make_context(Params(n=params.n, moduli=params.moduli, scale=2.0**40))
    vec = ts.ckks_vector(ctx, [1.0, 2.0])
    lower = vec * 2.0  # multiply + auto-rescale drops a prime
    with pytest.raises(ParameterMismatchError):
        tw.read_vector(lower.serialize(), Params(n=params.n, moduli=params.moduli, scale=2.0**40))


def test_not_ntt_form(raw_vector: bytes, params: Params) -> None:
    at = _ct_start(raw_vector) + seal.HEADER.size + 32
    with pytest.raises(UnsupportedCiphertextError, match="NTT"):
        tw.read_vector(_patch(raw_vector, at, b"\x00"), params)


def test_seeded_ciphertext(raw_vector: bytes, params: Params) -> None:
    """SEAL's seeded layout: DynArray of c0 only, then a PRNG-info object (seed)."""
    start = _ct_start(raw_vector)
    seal_size = struct.unpack_from("<Q", raw_vector, start + 8)[0]
    ct = raw_vector[start : start + seal_size]
    half = 2 * 8192
    prefix = ct[seal.HEADER.size : seal.HEADER.size + 73]
    dyn = seal.HEADER.pack(0xA15E, 16, 4, 3, 0, 0, 16 + 8 + 8 * half) + struct.pack("<Q", half)
    data = ct[seal.HEADER.size + seal.CT_DATA_OFFSET : seal.HEADER.size + seal.CT_DATA_OFFSET + 8 * half]
    prng = seal.HEADER.pack(0xA15E, 16, 4, 3, 0, 0, 16 + 1 + 64) + b"\x01" + b"\x07" * 64
    payload = prefix + dyn + data + prng
    seeded = seal.HEADER.pack(0xA15E, 16, 4, 3, 0, 0, 16 + len(payload)) + payload
    with pytest.raises(UnsupportedCiphertextError, match="seeded"):
        seal.locate_ciphertext(memoryview(seeded), params, "seeded")


def test_inconsistent_sizes(raw_vector: bytes, params: Params) -> None:
    start = _ct_start(raw_vector)
    size = struct.unpack_from("<Q", raw_vector, start + 8)[0]
    with pytest.raises(FormatError, match="declares"):
        tw.read_vector(_patch(raw_vector, start + 8, struct.pack("<Q", size + 8)), params)
    count_at = start + seal.HEADER.size + 73 + 16
    with pytest.raises(FormatError, match="words"):
        tw.read_vector(_patch(raw_vector, count_at, struct.pack("<Q", 2 * 2 * 8192 + 1)), params)


def test_zstd_bomb_refused(raw_vector: bytes, params: Params) -> None:
    import zstandard

    start = _ct_start(raw_vector) + seal.HEADER.size
    prefix = raw_vector[start : start + seal.CT_DATA_OFFSET]  # valid fields, then far too much data
    huge = zstandard.ZstdCompressor(write_content_size=False).compress(prefix + b"\0" * (8 << 20))
    blob = seal.HEADER.pack(0xA15E, 16, 4, 3, 2, 0, 16 + len(huge)) + huge
    with pytest.raises(FormatError, match="did not decompress|expected"):
        seal.decode_ciphertext(memoryview(blob), params, np.empty((2, 2, 8192), np.uint64), "bomb")


def test_unknown_protobuf_field(raw_vector: bytes, params: Params) -> None:
    with pytest.raises(FormatError, match="unexpected protobuf field"):
        tw.read_vector(raw_vector + b"\x20\x01", params)  # field 4, varint


def test_sizes_and_ciphertexts_disagree(raw_vector: bytes, params: Params) -> None:
    fields = _fields(raw_vector)
    _, start, end = fields[2]  # drop the second ciphertext field entirely
    header_len = len(tw._key(2, 2)) + len(tw._varint(end - start))
    blob = raw_vector[: start - header_len] + raw_vector[end:]
    with pytest.raises(FormatError, match="chunk sizes"):
        tw.read_vector(blob, params)


def test_errors_share_one_root() -> None:
    for exc in (FormatError, ResidueRangeError, ParameterMismatchError, UnsupportedCiphertextError):
        assert issubclass(exc, HeAggError) and issubclass(exc, ValueError)


def test_tenseal_zstd_blobs_are_read_in_place(ctx, params: Params) -> None:  # type: ignore[no-untyped-def]
    """At 60-bit primes TenSEAL's zstd frames store residues raw: no decompression, no copy."""
    vec = ts.ckks_vector(ctx, np.linspace(-1, 1, 4200).tolist())
    blob = vec.serialize()
    view = tw.read_vector(blob, params)
    assert view.buffer.obj is blob and view.offsets.shape == (2, 3, 2)  # 3 segments per ciphertext
    assert not view.checked  # left for the summing kernel
    assert np.array_equal(view.residues(params), CiphertextBatch.from_tenseal(vec, params).data)


def test_compressed_zstd_frames_are_decompressed(kat: dict, small_params: Params) -> None:
    view = tw.read_vector(kat["vector"], small_params)  # 40-bit primes: zstd really compresses
    assert isinstance(view.buffer, np.ndarray) and view.offsets.ndim == 1
