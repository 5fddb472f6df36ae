"""SEAL 4.x serialization: object headers, ciphertexts, plaintexts, encryption parameters.

Byte layouts (all little-endian; checked against TenSEAL 0.3.18 in tests/test_wire_seal.py):

* Every object starts with a 16-byte header: u16 magic 0xA15E, u8 header size (16),
  u8 version major, u8 version minor, u8 compression (0 none, 1 zlib, 2 zstd),
  u16 reserved (0), u64 total size including the header (the compressed size when
  compressed). The rest is the payload, zstd-compressed as one frame when compression=2.
* Ciphertext payload: parms_id (32 bytes), u8 is_ntt_form, u64 size, u64 N, u64 L,
  f64 scale, u64 correction_factor, then a DynArray: its own uncompressed 16-byte header,
  u64 word count, then size·L·N u64 words laid out (polynomial, prime, coefficient).
* Plaintext payload: parms_id, u64 coeff_count, f64 scale, DynArray.
* EncryptionParameters payload: u8 scheme, u64 N, u64 L, L Modulus objects, the plain
  modulus object (each a 16-byte header + u64 value).

Every field of bytes from another party is checked before it is used: sizes against the
real buffer, against the expected parameters, and decompressed sizes before decompressing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from ...errors import (
    FormatError,
    ParameterMismatchError,
    ResidueRangeError,
    UnsupportedCiphertextError,
)
from ...params import Params

__all__ = [
    "CT_DATA_OFFSET",
    "SealHeader",
    "ZSTD_MIN_RAW_BLOCK",
    "check_residues",
    "ciphertext_bytes",
    "decode_ciphertext",
    "locate_ciphertext",
    "locate_raw_zstd_ciphertext",
    "read_encryption_parameters",
    "read_header",
    "read_plaintext",
    "write_ciphertext",
    "write_encryption_parameters",
]

MAGIC = 0xA15E
HEADER = struct.Struct("<HBBBBHQ")
VERSION = (4, 3)  # what SEAL 4.x inside TenSEAL 0.3.18 writes
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2
_COMPRESSION_NAMES = {COMPR_NONE: "none", COMPR_ZLIB: "zlib", COMPR_ZSTD: "zstd"}

_CT_PREFIX = struct.Struct("<32sBQQQdQ")  # parms_id, is_ntt, size, N, L, scale, correction
_PT_PREFIX = struct.Struct("<32sQd")  # parms_id, coeff_count, scale
_COUNT = struct.Struct("<Q")
#: Offset of the first residue word inside an (uncompressed) ciphertext payload.
CT_DATA_OFFSET = _CT_PREFIX.size + HEADER.size + _COUNT.size  # 97


@dataclass(frozen=True)
class SealHeader:
    version: tuple[int, int]
    compression: int
    size: int  # total bytes including the header

    @property
    def payload_size(self) -> int:
        return self.size - HEADER.size


def read_header(buf: memoryview, what: str, *, exact: bool = True) -> SealHeader:
    """Parse and validate a SEAL object header at the start of ``buf``.

    With ``exact`` the object must fill ``buf`` completely (a protobuf field holds exactly
    one object); otherwise it may be followed by more bytes.
    """
    if len(buf) < HEADER.size:
        raise FormatError(f"{what}: {len(buf)} bytes, too short for a 16-byte SEAL header")
    magic, header_size, major, minor, compression, reserved, size = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise FormatError(f"{what}: bad SEAL magic 0x{magic:04X} (expected 0x{MAGIC:04X})")
    if header_size != HEADER.size:
        raise FormatError(f"{what}: SEAL header size {header_size}, expected {HEADER.size}")
    if major != VERSION[0]:
        raise FormatError(f"{what}: SEAL serialization version {major}.{minor}; he_agg reads {VERSION[0]}.x")
    if compression not in _COMPRESSION_NAMES:
        raise FormatError(f"{what}: unknown SEAL compression mode {compression}")
    if reserved != 0:
        raise FormatError(f"{what}: SEAL header reserved field is {reserved}, expected 0")
    if size < HEADER.size or size > len(buf) or (exact and size != len(buf)):
        raise FormatError(
            f"{what}: SEAL header declares {size} bytes but {len(buf)} are present"
        )
    return SealHeader((major, minor), compression, size)


def _write_header(payload_size: int, compression: int) -> bytes:
    return HEADER.pack(MAGIC, HEADER.size, VERSION[0], VERSION[1], compression, 0, HEADER.size + payload_size)


def _payload(buf: memoryview, header: SealHeader, expected: int, what: str, *, exact: bool = True) -> memoryview:
    """The payload of a SEAL object, decompressed if needed: exactly (or at most) ``expected`` bytes."""
    body = buf[HEADER.size : header.size]
    if header.compression == COMPR_NONE:
        if len(body) > expected or (exact and len(body) != expected):
            raise FormatError(f"{what}: payload is {len(body)} bytes, expected {expected} for these parameters")
        return body
    if header.compression == COMPR_ZLIB:
        raise UnsupportedCiphertextError(
            f"{what}: zlib-compressed SEAL objects are not supported; TenSEAL writes zstd"
        )
    return memoryview(_zstd_decompress(body, expected, what, exact=exact))


def _ciphertext_payload(blob: memoryview, header: SealHeader, params: Params, what: str) -> memoryview:
    """A ciphertext's payload with every field checked (fields first, so errors are specific)."""
    expected = CT_DATA_OFFSET + ciphertext_bytes(params)
    if header.compression == COMPR_ZSTD and _zstd_declared(blob[HEADER.size : header.size], what) != expected:
        # not the size these parameters give: decode the fields alone, for a specific error
        _check_ciphertext_prefix(_zstd_prefix(blob[HEADER.size : header.size], what), params, what, full=False)
    payload = _payload(blob, header, expected, what, exact=False)
    if len(payload) < CT_DATA_OFFSET:
        raise FormatError(f"{what}: ciphertext payload truncated ({len(payload)} bytes)")
    _check_ciphertext_prefix(payload, params, what)
    if len(payload) != expected:
        raise FormatError(f"{what}: payload is {len(payload)} bytes, expected {expected} for these parameters")
    return payload


def _zstd_decompress(body: memoryview, size: int, what: str, *, exact: bool = True) -> bytes:
    """Decompress one zstd frame that must yield ``size`` bytes (at most ``size`` if not exact).

    The declared content size is checked before anything is allocated, and output is
    capped at ``size`` when the frame does not declare it: no decompression bombs.
    """
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: not a zstd frame ({exc})") from None
    if declared != -1 and (declared > size or (exact and declared != size)):  # -1: not recorded
        raise FormatError(f"{what}: zstd frame declares {declared} bytes, expected {size}")
    try:
        out = zstandard.ZstdDecompressor().decompress(body, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: corrupt zstd payload ({exc})") from None
    if len(out) > size or (exact and len(out) != size):
        raise FormatError(f"{what}: zstd payload decompresses to {len(out)} bytes, expected {size}")
    return out


# -- ciphertexts -------------------------------------------------------------------------


def ciphertext_bytes(params: Params) -> int:
    """Bytes of residues in one fresh ciphertext: 2 polynomials × data primes × N words."""
    return 2 * len(params.data_moduli) * params.n * 8


def _zstd_declared(body: memoryview, what: str) -> int:
    """The content size a zstd frame declares (-1 when it does not)."""
    try:
        return int(zstandard.frame_content_size(body))
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: not a zstd frame ({exc})") from None


def _zstd_prefix(body: memoryview, what: str) -> memoryview:
    """The first CT_DATA_OFFSET bytes of a zstd payload, decompressing nothing more."""
    try:
        with zstandard.ZstdDecompressor().stream_reader(body) as reader:
            head = reader.read(CT_DATA_OFFSET)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: corrupt zstd payload ({exc})") from None
    if len(head) < CT_DATA_OFFSET:
        raise FormatError(f"{what}: ciphertext payload truncated ({len(head)} bytes)")
    return memoryview(head)


def _check_ciphertext_prefix(payload: memoryview, params: Params, what: str, *, full: bool = True) -> None:
    """Validate the fields of a ciphertext payload from its first CT_DATA_OFFSET bytes.

    ``full=False`` stops after the fields that explain a wrong size (for error messages).
    """
    parms_id, is_ntt, size, n, nmod, scale, correction = _CT_PREFIX.unpack_from(payload)
    expected_nmod = len(params.data_moduli)
    if n != params.n:
        raise ParameterMismatchError(f"{what}: ciphertext has N={n}, expected N={params.n}")
    if size != 2:
        if size == 3:
            raise UnsupportedCiphertextError(
                f"{what}: size-3 ciphertext (the result of a multiplication); relinearize it "
                "before sending, he_agg sums fresh size-2 ciphertexts"
            )
        raise UnsupportedCiphertextError(f"{what}: ciphertext size {size}, expected 2")
    if nmod != expected_nmod:
        raise ParameterMismatchError(
            f"{what}: ciphertext on {nmod} primes, expected the {expected_nmod} data primes of "
            "fresh ciphertexts (was it rescaled or made at another level?)"
        )
    if parms_id != params.data_parms_id:
        raise ParameterMismatchError(
            f"{what}: ciphertext parms_id {parms_id[:8].hex()}… does not match these parameters' "
            f"{params.data_parms_id[:8].hex()}… (different primes)"
        )
    if is_ntt != 1:
        raise UnsupportedCiphertextError(f"{what}: ciphertext is not in NTT form (is_ntt_form={is_ntt})")
    if scale != params.scale:
        raise ParameterMismatchError(f"{what}: ciphertext scale {scale!r}, expected {params.scale!r}")
    if correction != 1:
        raise UnsupportedCiphertextError(f"{what}: correction factor {correction}, expected 1 (CKKS)")
    dyn = payload[_CT_PREFIX.size :]
    (count,) = _COUNT.unpack_from(dyn, HEADER.size)
    words = 2 * expected_nmod * params.n
    if count == words // 2:
        raise UnsupportedCiphertextError(
            f"{what}: seeded ciphertext (only c0 stored, c1 as a PRNG seed: symmetric encryption); "
            "he_agg sums public-key ciphertexts"
        )
    if count != words:
        raise FormatError(f"{what}: residue array holds {count} words, expected {words}")
    if not full:
        return
    magic, header_size, major, _minor, compression, reserved, size = HEADER.unpack_from(dyn)
    if (magic, header_size, major, compression, reserved) != (MAGIC, HEADER.size, VERSION[0], COMPR_NONE, 0):
        raise FormatError(f"{what}: bad header on the nested residue array")
    if size != HEADER.size + _COUNT.size + 8 * words:
        raise FormatError(f"{what}: nested residue array declares {size} bytes, expected {HEADER.size + 8 + 8 * words}")


def locate_ciphertext(blob: memoryview, params: Params, what: str) -> int:
    """Validate one *uncompressed* SEAL ciphertext filling ``blob``; return where its words start.

    Zero copy. The residues are NOT range-checked here: the consumer must check them
    (the summing kernel does, in the same pass that adds them).
    """
    header = read_header(blob, what)
    if header.compression != COMPR_NONE:
        raise ValueError("locate_ciphertext needs an uncompressed ciphertext; use decode_ciphertext")
    _ciphertext_payload(blob, header, params, what)
    return HEADER.size + CT_DATA_OFFSET


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_MAX_BLOCK = 128 * 1024
#: Every raw block but the last must hold at least this many bytes to be read in place.
#: libzstd cuts frames into blocks of min(128 KiB, window) and TenSEAL's are 128 KiB; a
#: frame cut finer is still valid zstd, but each segment costs the summing kernel and the
#: parser a step, so such frames go to libzstd's decoder (size-bounded) instead. This caps
#: the segments of a ciphertext at ciphertext_bytes / 4 KiB + 1.
ZSTD_MIN_RAW_BLOCK = 4096


def _zstd_raw_blocks(body: memoryview, expected: int) -> list[tuple[int, int]] | None:
    """(offset, length) in ``body`` of each block of a zstd frame made only of raw blocks.

    RFC 8878: magic, frame header descriptor, optional window descriptor, no dictionary,
    optional content size, then blocks with 3-byte headers (bit 0 last, bits 1-2 type,
    0 = raw/stored, bits 3-23 size). Returns None — and the caller decompresses with the
    full decoder, which reports any error — for anything else: compressed or RLE blocks,
    a content checksum (which only the decoder verifies), a dictionary, a size mismatch,
    a block but the last shorter than ZSTD_MIN_RAW_BLOCK (found at the first such block).
    """
    if len(body) < 6 or bytes(body[:4]) != _ZSTD_MAGIC:
        return None
    descriptor = body[4]
    size_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    if descriptor & 0b1000 or descriptor & 0b100 or descriptor & 0b11:  # reserved, checksum, dictionary
        return None
    pos = 5 + (0 if single_segment else 1)
    size_bytes = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if size_bytes:
        if pos + size_bytes > len(body):
            return None
        declared = int.from_bytes(body[pos : pos + size_bytes], "little") + (256 if size_bytes == 2 else 0)
        if declared != expected:
            return None
        pos += size_bytes
    blocks, total = [], 0
    while True:
        if pos + 3 > len(body):
            return None
        header = int.from_bytes(body[pos : pos + 3], "little")
        pos += 3
        kind, size = (header >> 1) & 3, header >> 3
        if kind != 0 or size > _ZSTD_MAX_BLOCK or pos + size > len(body):
            return None
        if not header & 1 and size < ZSTD_MIN_RAW_BLOCK:
            return None
        blocks.append((pos, size))
        pos += size
        total += size
        if header & 1:
            break
    if pos != len(body) or total != expected:
        return None
    return blocks


def locate_raw_zstd_ciphertext(blob: memoryview, params: Params, what: str) -> list[tuple[int, int]] | None:
    """Residue byte segments (offset, length in ``blob``) of a zstd ciphertext stored raw.

    TenSEAL's zstd frames at 60-bit primes hold only raw blocks (the residues do not
    compress), so the residues can be summed where they lie, zero-copy, at the cost of a
    word straddling each block boundary. The payload's fields are validated here; the
    residues are NOT range-checked (the summing kernel does it). None: not stored raw.
    """
    header = read_header(blob, what)
    if header.compression != COMPR_ZSTD:
        return None
    expected = CT_DATA_OFFSET + ciphertext_bytes(params)
    blocks = _zstd_raw_blocks(blob[HEADER.size : header.size], expected)
    if blocks is None:
        return None
    segments = [(HEADER.size + offset, length) for offset, length in blocks]
    prefix = bytearray()
    residue_segments = []
    skip = CT_DATA_OFFSET
    for offset, length in segments:
        take = min(skip, length)
        prefix += blob[offset : offset + take]
        skip -= take
        if length > take:
            residue_segments.append((offset + take, length - take))
    _check_ciphertext_prefix(memoryview(bytes(prefix)), params, what)
    return residue_segments


def decode_ciphertext(blob: memoryview, params: Params, out: np.ndarray, what: str, *, check: bool = True) -> None:
    """Validate one SEAL ciphertext filling ``blob``; copy its residues to ``out`` (2, L, N).

    zstd payloads are decompressed first. With ``check=False`` the residues are left for
    the consumer to range-check (the summing kernel does it in the pass that adds them).
    """
    header = read_header(blob, what)
    payload = _ciphertext_payload(blob, header, params, what)
    out.reshape(-1)[:] = np.frombuffer(payload, dtype="<u8", offset=CT_DATA_OFFSET)
    if check:
        check_residues(out, params.data_moduli, what)


def check_residues(residues: np.ndarray, moduli: tuple[int, ...], what: str) -> None:
    """Raise ResidueRangeError unless every residue is below its prime.

    ``residues`` has shape (..., L, N) with prime index on the second-to-last axis.
    """
    q = np.asarray(moduli, dtype=np.uint64)[:, None]
    bad = residues >= q
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), residues.shape)
        *lead, prime, coeff = (int(i) for i in index)
        raise ResidueRangeError(
            f"{what}: residue at {tuple(lead)}, prime {prime}, coefficient {coeff} is "
            f"{int(residues[index])} >= its prime {moduli[prime]}"
        )


def write_ciphertext(residues: np.ndarray, params: Params, *, compress: bool) -> bytes:
    """Serialize one (2, L, N) residue array as a SEAL ciphertext at the data level."""
    return _write_ciphertext(residues, params, params.data_parms_id, len(params.data_moduli), params.scale, compress)


def write_key_ciphertext(residues: np.ndarray, params: Params, *, compress: bool) -> bytes:
    """Serialize a (2, L_all, N) array as a SEAL PublicKey (a ciphertext at the key level, scale 1)."""
    return _write_ciphertext(residues, params, params.key_parms_id, len(params.moduli), 1.0, compress)


def _write_ciphertext(residues: np.ndarray, params: Params, parms_id: bytes, nmod: int, scale: float,
                      compress: bool) -> bytes:
    words = np.ascontiguousarray(residues, dtype="<u8").reshape(-1)
    if words.size != 2 * nmod * params.n:
        raise ValueError(f"expected {2 * nmod * params.n} residues, got {words.size}")
    data = words.tobytes()
    dyn = _write_header(_COUNT.size + len(data), COMPR_NONE) + _COUNT.pack(words.size)
    prefix = _CT_PREFIX.pack(parms_id, 1, 2, params.n, nmod, scale, 1)
    return _seal_object(prefix + dyn + data, compress)


def read_key_ciphertext(blob: memoryview, params: Params, what: str) -> np.ndarray:
    """Parse a SEAL PublicKey (ciphertext at the key level) into a (2, L_all, N) array."""
    header = read_header(blob, what)
    nmod = len(params.moduli)
    words = 2 * nmod * params.n
    payload = _payload(blob, header, CT_DATA_OFFSET + 8 * words, what)
    parms_id, is_ntt, size, n, got_nmod, _scale, _corr = _CT_PREFIX.unpack_from(payload)
    if (n, got_nmod, size, is_ntt) != (params.n, nmod, 2, 1) or parms_id != params.key_parms_id:
        raise ParameterMismatchError(f"{what}: public key made for other parameters")
    (count,) = _COUNT.unpack_from(payload, _CT_PREFIX.size + HEADER.size)
    if count != words:
        raise FormatError(f"{what}: public key holds {count} words, expected {words}")
    out = np.frombuffer(payload, dtype="<u8", offset=CT_DATA_OFFSET).astype(np.uint64).reshape(2, nmod, params.n)
    check_residues(out, params.moduli, what)
    return out


def _seal_object(payload: bytes, compress: bool) -> bytes:
    if compress:
        payload = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(payload)
        return _write_header(len(payload), COMPR_ZSTD) + payload
    return _write_header(len(payload), COMPR_NONE) + payload


# -- plaintexts (secret keys) ------------------------------------------------------------


def read_plaintext(blob: memoryview, params: Params, what: str) -> np.ndarray:
    """Parse a SEAL Plaintext at the key level (how SecretKey serializes) → (L_all, N) array.

    Used by tests and tools that check he_agg's arithmetic against a TenSEAL secret key.
    """
    header = read_header(blob, what)
    nmod = len(params.moduli)
    words = nmod * params.n
    payload = _payload(blob, header, _PT_PREFIX.size + HEADER.size + _COUNT.size + 8 * words, what)
    parms_id, coeff_count, _scale = _PT_PREFIX.unpack_from(payload)
    if parms_id != params.key_parms_id or coeff_count != words:
        raise ParameterMismatchError(f"{what}: plaintext made for other parameters")
    (count,) = _COUNT.unpack_from(payload, _PT_PREFIX.size + HEADER.size)
    if count != words:
        raise FormatError(f"{what}: plaintext holds {count} words, expected {words}")
    out = np.frombuffer(payload, dtype="<u8", offset=_PT_PREFIX.size + HEADER.size + _COUNT.size)
    out = out.astype(np.uint64).reshape(nmod, params.n)
    check_residues(out, params.moduli, what)
    return out


# -- encryption parameters ---------------------------------------------------------------

_MODULUS_OBJECT = HEADER.size + 8


def read_encryption_parameters(blob: memoryview, what: str) -> tuple[int, tuple[int, ...]]:
    """Parse SEAL EncryptionParameters → (N, primes). Only CKKS is accepted."""
    header = read_header(blob, what)
    body = blob[HEADER.size : header.size]
    if header.compression == COMPR_ZSTD:
        # The payload is tiny; bound it generously before decompressing.
        body = memoryview(_zstd_decompress(body, 1 << 16, what, exact=False))
    elif header.compression == COMPR_ZLIB:
        raise UnsupportedCiphertextError(f"{what}: zlib-compressed SEAL objects are not supported")
    if len(body) < 17:
        raise FormatError(f"{what}: encryption parameters truncated")
    scheme = body[0]
    n, nmod = struct.unpack_from("<QQ", body, 1)
    if scheme != 2:
        raise ParameterMismatchError(f"{what}: scheme {scheme} is not CKKS (2)")
    if not 1 <= nmod <= 64:
        raise FormatError(f"{what}: {nmod} primes is out of range")
    expected = 17 + (nmod + 1) * _MODULUS_OBJECT
    if len(body) != expected:
        raise FormatError(f"{what}: encryption parameters are {len(body)} bytes, expected {expected}")
    values = []
    for k in range(nmod + 1):
        start = 17 + k * _MODULUS_OBJECT
        obj = body[start : start + _MODULUS_OBJECT]
        read_header(obj, f"{what} (modulus {k})")
        values.append(struct.unpack_from("<Q", obj, HEADER.size)[0])
    if values[-1] != 0:
        raise ParameterMismatchError(f"{what}: plain modulus {values[-1]} set; CKKS has none")
    return n, tuple(values[:-1])


def write_encryption_parameters(params: Params) -> bytes:
    """SEAL EncryptionParameters bytes for CKKS with these N and primes (uncompressed)."""
    parts = [bytes([2]), struct.pack("<QQ", params.n, len(params.moduli))]
    for value in (*params.moduli, 0):
        parts.append(_write_header(8, COMPR_NONE) + struct.pack("<Q", value))
    payload = b"".join(parts)
    return _write_header(len(payload), COMPR_NONE) + payload
