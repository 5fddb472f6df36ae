"""TenSEAL's protobuf messages: CKKSVector and Context, read and written.

TenSEAL 0.3.18 (site-packages/tenseal/proto/*.proto):

* ``CKKSVectorProto``: 1 ``sizes`` (packed uint32), 2 ``ciphertexts`` (repeated bytes, one
  SEAL ciphertext each), 3 ``scale`` (double). A vector longer than N/2 values is split
  into chunks of N/2 values, the last one shorter.
* ``TenSEALContextProto``: 1 ``encryption_parameters`` (SEAL bytes), 2 ``public_context``
  {1 public_key, 2 auto_flags, 3 scale, 4 relin_keys, 5 galois_keys}, 3 ``private_context``
  {1 secret_key, ...}, 4 ``encryption_type``.

The reader is a small strict scanner rather than the protobuf runtime: it returns
*offsets* into the caller's buffer, which is what lets the summing kernel read residues
straight out of an uncompressed TenSEAL blob, and it rejects unknown fields and wire
types so that a format change fails loudly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

import numpy as np

from ...errors import FormatError, ParameterError, ParameterMismatchError, ResourceLimitError
from ...params import Params
from . import seal
from .envelope import as_bytes

__all__ = [
    "ResidueView",
    "chunk_count",
    "chunk_sizes",
    "read_context",
    "read_context_params",
    "read_secret_key",
    "read_vector",
    "write_context",
    "write_vector",
]

Buffer = Union[bytes, bytearray, memoryview]

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise FormatError(f"{what}: truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >= 1 << 64:
                raise FormatError(f"{what}: protobuf varint overflows 64 bits")
            return result, pos
    raise FormatError(f"{what}: protobuf varint longer than 10 bytes")


@dataclass(frozen=True)
class _Field:
    number: int
    wire_type: int
    value: int  # varint value, or start offset for bytes/fixed
    end: int  # end offset for bytes/fixed (== value for varints)


def _scan(buf: memoryview, allowed: dict[int, set[int]], what: str,
          min_len: dict[int, int] | None = None) -> list[_Field]:
    """All fields of one message; every field number and wire type must be in ``allowed``.

    ``min_len`` (field number → bytes) refuses a too-short bytes field as soon as it is
    read, so a blob of many tiny fields fails at the first one instead of after all.
    """
    fields: list[_Field] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos, what)
        number, wire_type = key >> 3, key & 7
        if number not in allowed or wire_type not in allowed[number]:
            raise FormatError(f"{what}: unexpected protobuf field {number} (wire type {wire_type})")
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos, what)
            fields.append(_Field(number, wire_type, value, pos))
            continue
        if wire_type == _BYTES:
            length, pos = _read_varint(buf, pos, what)
        else:
            length = 8 if wire_type == _FIXED64 else 4
        if length > len(buf) - pos:
            raise FormatError(f"{what}: protobuf field {number} claims {length} bytes, {len(buf) - pos} remain")
        if min_len is not None and length < min_len.get(number, 0):
            raise FormatError(f"{what}: protobuf field {number} is {length} bytes, less than {min_len[number]}")
        fields.append(_Field(number, wire_type, pos, pos + length))
        pos += length
    return fields


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(data)) + data


def _double_field(number: int, value: float) -> bytes:
    return _key(number, _FIXED64) + struct.pack("<d", value)


def _as_view(data: object, what: str) -> memoryview:
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise FormatError(f"{what}: expected bytes, got {type(data).__name__}") from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


# -- CKKS vectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidueView:
    """Where the validated residues of one encrypted vector are, copied only if needed.

    Ciphertext c's 2·L·N little-endian words start at byte ``offsets[c]`` of ``buffer``
    (``offsets`` of shape (count,)), or are the concatenation of byte segments
    ``offsets[c, k] = (offset, length)`` (shape (count, nseg, 2): TenSEAL's raw-block zstd
    frames). For TenSEAL blobs ``buffer`` is the blob itself (zero copy); for compressed
    frames it is an aligned (count, 2, L, N) array. ``checked`` says whether the residues
    were range-checked already; if not, the summing kernel checks them as it adds.
    """

    buffer: Buffer | np.ndarray
    offsets: np.ndarray
    length: int
    checked: bool
    body_hash: bytes | None = None  # BLAKE3 of the residue bytes in order, when already known

    @property
    def count(self) -> int:
        return len(self.offsets)

    def residues(self, params: Params, what: str = "encrypted vector") -> np.ndarray:
        """The residues as an aligned, range-checked (count, 2, L, N) uint64 array."""
        if isinstance(self.buffer, np.ndarray):
            if not self.checked:
                seal.check_residues(self.buffer, params.data_moduli, what)
            return self.buffer
        nmod = len(params.data_moduli)
        out = np.empty((self.count, 2, nmod, params.n), dtype=np.uint64)
        for c, piece in enumerate(self.chunks(params)):
            out[c].reshape(-1)[:] = np.frombuffer(piece, dtype="<u8")
        seal.check_residues(out, params.data_moduli, what)
        return out

    def chunks(self, params: Params) -> list[bytes | memoryview]:
        """Each ciphertext's residue bytes, in order (gathered only for segmented layouts)."""
        whole = as_bytes(self.buffer)
        if self.offsets.ndim == 1:
            size = 2 * len(params.data_moduli) * params.n * 8
            return [whole[o : o + size] for o in self.offsets.tolist()]
        return [b"".join(bytes(whole[o : o + n]) for o, n in segments.tolist() if n) for segments in self.offsets]


def chunk_count(length: int, slots: int) -> int:
    """How many ciphertexts TenSEAL splits ``length`` values into (0 for length <= 0)."""
    return -(-length // slots) if length > 0 else 0


def chunk_sizes(length: int, slots: int) -> list[int]:
    """TenSEAL's chunking of a vector of ``length`` values into ciphertexts of ``slots``.

    Builds a list: only for lengths already bounded by real data (see :func:`chunk_count`).
    """
    full, rest = divmod(length, slots)
    return [slots] * full + ([rest] if rest else [])


def _check_chunking(sizes: list[int], slots: int, what: str) -> int:
    """The vector length if ``sizes`` is TenSEAL's chunking (all full but a non-empty last)."""
    if any(size != slots for size in sizes[:-1]) or not 1 <= sizes[-1] <= slots:
        raise FormatError(f"{what}: chunk sizes {sizes[:4]}… are not TenSEAL's chunking into {slots}-value ciphertexts")
    return slots * (len(sizes) - 1) + sizes[-1]


def read_vector(blob: object, params: Params, what: str = "TenSEAL CKKSVector") -> ResidueView:
    """Validate serialized ``CKKSVector`` bytes against ``params`` and locate their residues."""
    view = _as_view(blob, what)
    fields = _scan(view, {1: {_BYTES, _VARINT}, 2: {_BYTES}, 3: {_FIXED64}}, what, {2: seal.HEADER.size})
    sizes: list[int] = []
    spans: list[tuple[int, int]] = []
    scale = None
    count = sum(1 for f in fields if f.number == 2)
    for f in fields:
        if f.number == 1 and f.wire_type == _VARINT:
            sizes.append(f.value)
        elif f.number == 1:
            packed = view[f.value : f.end]
            if len(packed) > 10 * count:  # a varint is at most 10 bytes: too many sizes
                raise FormatError(f"{what}: {len(packed)} bytes of chunk sizes for {count} ciphertexts")
            pos = 0
            while pos < len(packed):
                size, pos = _read_varint(packed, pos, what)
                sizes.append(size)
        elif f.number == 2:
            spans.append((f.value, f.end))
        else:
            if scale is not None:
                raise FormatError(f"{what}: scale given twice")
            (scale,) = struct.unpack_from("<d", view, f.value)
    if not spans:
        raise FormatError(f"{what}: no ciphertexts")
    if len(sizes) != len(spans):
        raise FormatError(f"{what}: {len(sizes)} chunk sizes for {len(spans)} ciphertexts")
    length = _check_chunking(sizes, params.slots, what)
    if scale is None:
        raise FormatError(f"{what}: no scale field")
    chunks = [view[start:end] for start, end in spans]
    labels = [f"{what}, ciphertext {c}" for c in range(len(chunks))]
    in_place = _locate_in_place(chunks, spans, labels, params)
    if in_place is not None:  # zero copy: raw SEAL objects, or zstd frames of stored blocks
        _check_vector_scale(scale, params, what)
        return ResidueView(view, in_place, length, False)
    _check_expansion(len(chunks), len(view), params, what)
    nmod = len(params.data_moduli)
    decoded = np.empty((len(chunks), 2, nmod, params.n), dtype=np.uint64)
    for c, (chunk, label) in enumerate(zip(chunks, labels)):
        seal.decode_ciphertext(chunk, params, decoded[c], label, check=False)
    _check_vector_scale(scale, params, what)
    step = np.uint64(decoded[0].nbytes)
    return ResidueView(decoded, np.arange(len(chunks), dtype=np.uint64) * step, length, False)


#: Compressed ciphertexts decode to at most this many times their size in all. Residues
#: are uniform below their primes (≥ 2 bits of entropy per 64-bit word), so an honest
#: vector compresses at most ~32×; a higher ratio is a decompression bomb.
MAX_EXPANSION = 64


def _check_expansion(count: int, size: int, params: Params, what: str) -> None:
    """Refuse to allocate ``count`` decoded ciphertexts out of ``size`` bytes of input."""
    needed = count * seal.ciphertext_bytes(params)
    if needed > MAX_EXPANSION * size:
        raise ResourceLimitError(
            f"{what}: {count} compressed ciphertexts would decode to {needed} bytes from {size}, "
            f"more than {MAX_EXPANSION}× (residues do not compress that well)"
        )


def _residue_segments(chunk: memoryview, params: Params, label: str) -> list[tuple[int, int]] | None:
    """Where one ciphertext's residues lie in ``chunk`` (fully validated), or None if compressed."""
    if len(chunk) > 5 and chunk[5] == seal.COMPR_NONE:
        return [(seal.locate_ciphertext(chunk, params, label), seal.ciphertext_bytes(params))]
    if len(chunk) > 5 and chunk[5] == seal.COMPR_ZSTD:
        return seal.locate_raw_zstd_ciphertext(chunk, params, label)
    seal.read_header(chunk, label)  # raises the specific error for anything else
    return None


def _outside(chunk: memoryview, segments: list[tuple[int, int]]) -> bytes:
    """The bytes of ``chunk`` that are not residues: every byte its validation read."""
    pieces, position = [], 0
    for offset, size in segments:
        pieces.append(chunk[position:offset])
        position = offset + size
    pieces.append(chunk[position:])
    return b"".join(pieces)


def _locate_in_place(chunks: list[memoryview], spans: list[tuple[int, int]], labels: list[str],
                     params: Params) -> np.ndarray | None:
    """Residue locations of every chunk if all can be read in place, else None.

    Returns byte offsets (count,) when every ciphertext is one run, else segments
    (count, nseg, 2). Ciphertexts of one vector carry byte-identical non-residue bytes
    (headers, block headers, fields); validation reads nothing else, so a chunk whose
    non-residue bytes equal an already validated chunk's shares its verdict and layout.
    """
    located: list[list[tuple[int, int]]] = []
    template: tuple[int, list[tuple[int, int]], bytes] | None = None
    for chunk, (start, _), label in zip(chunks, spans, labels):
        if template is not None and len(chunk) == template[0] and _outside(chunk, template[1]) == template[2]:
            segments = template[1]
        else:
            found = _residue_segments(chunk, params, label)
            if found is None:
                return None
            segments = found
            template = (len(chunk), segments, _outside(chunk, segments))
        located.append([(start + offset, size) for offset, size in segments])
    width = max(len(s) for s in located)
    if width == 1:
        return np.array([s[0][0] for s in located], dtype=np.uint64)
    out = np.zeros((len(located), width, 2), dtype=np.uint64)
    for c, segments in enumerate(located):
        out[c, : len(segments)] = segments
    return out


def _check_vector_scale(scale: float, params: Params, what: str) -> None:
    if scale != params.scale:
        raise ParameterMismatchError(f"{what}: vector scale {scale!r}, expected {params.scale!r}")


def write_vector(residues: np.ndarray, length: int, params: Params, *, compress: bool = True) -> bytes:
    """Serialize (count, 2, L, N) residues as TenSEAL ``CKKSVector`` bytes."""
    sizes = chunk_sizes(length, params.slots)
    if len(sizes) != residues.shape[0]:
        raise ValueError(f"{length} values need {len(sizes)} ciphertexts, got {residues.shape[0]}")
    packed = b"".join(_varint(s) for s in sizes)
    parts = [_bytes_field(1, packed)]
    for c in range(residues.shape[0]):
        parts.append(_bytes_field(2, seal.write_ciphertext(residues[c], params, compress=compress)))
    parts.append(_double_field(3, params.scale))
    return b"".join(parts)


# -- contexts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TenSEALContextParts:
    params: Params
    public_key: np.ndarray | None  # (2, L_all, N) at the key level
    has_secret_key: bool


def read_context(data: object, what: str = "TenSEAL context") -> TenSEALContextParts:
    """Parse serialized TenSEAL context bytes: parameters, scale, public key (if present)."""
    view = _as_view(data, what)
    top = _scan(view, {1: {_BYTES}, 2: {_BYTES}, 3: {_BYTES}, 4: {_VARINT}}, what)
    enc = [f for f in top if f.number == 1]
    if len(enc) != 1:
        raise FormatError(f"{what}: expected one encryption_parameters field, found {len(enc)}")
    for f in top:
        if f.number == 4 and f.value != 0:
            raise ParameterMismatchError(f"{what}: symmetric-key context; he_agg needs public-key encryption")
    n, moduli = seal.read_encryption_parameters(view[enc[0].value : enc[0].end], f"{what}, parameters")
    scale = 0.0
    pk_span: tuple[int, int] | None = None
    for f in top:
        if f.number != 2:
            continue
        sub = view[f.value : f.end]
        allowed = {1: {_BYTES}, 2: {_VARINT}, 3: {_FIXED64}, 4: {_BYTES}, 5: {_BYTES}}
        for g in _scan(sub, allowed, f"{what}, public part"):
            if g.number == 3:
                (scale,) = struct.unpack_from("<d", sub, g.value)
            elif g.number == 1:
                pk_span = (f.value + g.value, f.value + g.end)
    if not scale:
        raise ParameterError(f"{what}: no global scale; set context.global_scale before serializing")
    params = Params(n=n, moduli=moduli, scale=scale)
    public_key = None
    if pk_span is not None and pk_span[1] > pk_span[0]:
        public_key = seal.read_key_ciphertext(view[pk_span[0] : pk_span[1]], params, f"{what}, public key")
    has_secret = any(f.number == 3 and f.end > f.value for f in top)
    return TenSEALContextParts(params, public_key, has_secret)


def read_secret_key(data: object, params: Params, what: str = "TenSEAL context") -> np.ndarray:
    """The secret key of serialized TenSEAL context bytes: NTT form, key level, (L_all, N).

    For benchmarks and tests that compare against TenSEAL's own single-key decryption;
    he_agg itself never holds a whole secret key.
    """
    view = _as_view(data, what)
    top = _scan(view, {1: {_BYTES}, 2: {_BYTES}, 3: {_BYTES}, 4: {_VARINT}}, what)
    private = [f for f in top if f.number == 3]
    if len(private) != 1:
        raise FormatError(f"{what}: no private part (serialize with save_secret_key=True)")
    sub = view[private[0].value : private[0].end]
    keys = [f for f in _scan(sub, {1: {_BYTES}, 2: {_VARINT}, 3: {_VARINT}}, what) if f.number == 1]
    if len(keys) != 1:
        raise FormatError(f"{what}: the private part holds no secret key")
    return seal.read_plaintext(sub[keys[0].value : keys[0].end], params, f"{what}, secret key")


def read_context_params(context: object) -> Params:
    """Params of a TenSEAL ``Context`` object or its serialized bytes."""
    if hasattr(context, "serialize"):
        data = context.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)  # type: ignore[attr-defined]
    else:
        data = context
    return read_context(data).params


def write_context(params: Params, public_key: np.ndarray, *, compress: bool = True) -> bytes:
    """A public-only TenSEAL context: parameters, global scale and the given public key.

    No relinearization or Galois keys: aggregation only adds ciphertexts. Loads with
    ``tenseal.context_from`` and encrypts under ``public_key``.
    """
    pk = seal.write_key_ciphertext(public_key, params, compress=compress)
    auto_flags = 7  # TenSEAL's default: auto relinearize, rescale, mod-switch
    public = _bytes_field(1, pk) + _key(2, _VARINT) + _varint(auto_flags) + _double_field(3, params.scale)
    return _bytes_field(1, seal.write_encryption_parameters(params)) + _bytes_field(2, public)
