"""he_agg's own wire envelope: one versioned, checksummed layout for every wire object.

Layout (little-endian)::

    offset  size  field
    0       4     magic b"HEAG"
    4       2     format version (2)
    6       2     kind (Kind below)
    8       4     meta length M (bytes of canonical JSON, at most 1 MiB)
    12      4     reserved, 0
    16      8     body length B
    24      M     meta: canonical JSON object (sorted keys, no spaces, UTF-8)
    …       pad   zeros up to the next multiple of 64 (the body is 64-byte aligned)
    …       B     body: raw little-endian words (residues), or empty
    …       32    checksum: BLAKE3(fixed part ‖ meta ‖ pad ‖ D(body))

D is the body digest (:mod:`.digest`: BLAKE3 over the BLAKE3s of 1 MiB segments).

Readers check, in this order and before using anything: length against the fixed part,
magic, version, kind, reserved, meta length, the total length implied by M and B against
the real buffer, the checksum, then the meta JSON's keys and types. The one exception is
the server's summing pass (``open_envelope(..., defer_body=True)``): it hashes the body
while adding it to a private sum, checks the checksum after, and takes the body back out
on a mismatch, so nothing derived from unchecked bytes is ever kept or sent. The checksum detects
corruption, not forgery: authenticity belongs to the transport (or to the sealed
pairwise messages of key generation). The body is hashed once, on every core
(:func:`body_hash`); content digests built on top of it (a ciphertext's digest) reuse
that hash, so a large body is read by the hash exactly once.
"""

from __future__ import annotations

import enum
import hmac
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import blake3
import numpy as np

from ...errors import ChecksumError, FormatError, ResourceLimitError
from .digest import body_digest

__all__ = ["Envelope", "Kind", "Meta", "as_bytes", "body_hash", "body_words", "open_envelope", "parse_meta", "seal_envelope"]

MAGIC = b"HEAG"
VERSION = 2  # 2: the body digest is a BLAKE3 tree over 1 MiB segments (1: BLAKE3 of the body)
_FIXED = struct.Struct("<4sHHIIQ")
_ALIGN = 64
_CHECKSUM = 32
MAX_META = 1 << 20


class Kind(enum.IntEnum):
    CIPHERTEXT_BATCH = 1
    ENCRYPTED_UPDATE = 2
    PUBLIC_CONTEXT = 3
    KEY_SHARE = 4
    DECRYPTION_REQUEST = 5
    DECRYPTION_SHARE = 6
    KEYGEN_MESSAGE = 7
    APPROVAL = 8
    QUORUM_CERTIFICATE = 9
    KEYGEN_COMMITMENTS = 10
    KEYGEN_REVEAL = 11
    ENROLLMENT = 12
    ENROLLMENT_ACK = 13
    ENROLLED_UPLOAD = 14
    ENROLLED_REQUEST = 15


def _body_offset(meta_len: int) -> int:
    return -(-(_FIXED.size + meta_len) // _ALIGN) * _ALIGN


def seal_envelope(kind: Kind, meta: Mapping[str, Any], body: bytes | memoryview | np.ndarray = b"", *,
                  body_digest: bytes | None = None) -> bytes:
    """Serialize ``meta`` (JSON-able) and ``body`` into one checksummed envelope.

    ``body_digest``: :func:`body_hash` of ``body`` when the caller already computed it (a
    client signs its residues' digest first), so the body is not hashed twice.
    """
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(meta_bytes) > MAX_META:
        raise ValueError(f"meta is {len(meta_bytes)} bytes, more than {MAX_META}")
    body_view = as_bytes(body)
    head = _FIXED.pack(MAGIC, VERSION, int(kind), len(meta_bytes), 0, len(body_view))
    pad = b"\0" * (_body_offset(len(meta_bytes)) - _FIXED.size - len(meta_bytes))
    digest = body_hash(body_view) if body_digest is None else body_digest
    checksum = blake3.blake3(head + meta_bytes + pad + digest).digest()
    return b"".join([head, meta_bytes, pad, body_view, checksum])


def as_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """A flat byte view of bytes, a memoryview or a C-contiguous numpy array (no copy)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).data.cast("B")
    return memoryview(data).cast("B")


def body_hash(body: memoryview | bytes) -> bytes:
    """The body digest (:func:`.digest.body_digest`), its segments hashed on every core
    (large bodies are residues: gigabytes at scale)."""
    return body_digest(memoryview(body).cast("B"))


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    meta: "Meta"
    body: memoryview  # a view into the caller's buffer, 64-byte aligned relative to its start
    body_hash: bytes | None  # the body digest, computed for the checksum (None: deferred, see open_envelope)
    sealed: bytes = b""  # the checksummed bytes before the body (kept for a deferred check)
    checksum: bytes = b""

    def check_body(self, digest: bytes) -> None:
        """The deferred checksum check: ``digest`` is the body digest the caller computed
        (e.g. in the pass that sums the body). Raises ChecksumError on a mismatch."""
        if not hmac.compare_digest(blake3.blake3(self.sealed + digest).digest(), self.checksum):
            raise ChecksumError(f"{self.meta.what}: checksum mismatch, the bytes were corrupted in transit or storage")


def open_envelope(data: object, expected: Kind, what: str, *, defer_body: bool = False) -> Envelope:
    """Validate an envelope of kind ``expected`` and return its meta and a zero-copy body.

    ``defer_body=True`` (for a caller that hashes the body in the pass that uses it): the
    header, padding and meta are checked as usual, but the checksum is left to
    :meth:`Envelope.check_body`, which the caller MUST call before anything derived from
    the body or the meta leaves it; ``body_hash`` is then None.
    """
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise FormatError(f"{what}: expected bytes, got {type(data).__name__}") from None
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    if len(view) < _FIXED.size + _CHECKSUM:
        raise FormatError(f"{what}: {len(view)} bytes, too short for a he_agg envelope")
    magic, version, kind, meta_len, reserved, body_len = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise FormatError(f"{what}: bad magic {bytes(magic)!r}, expected {MAGIC!r} (not a he_agg object?)")
    if version != VERSION:
        raise FormatError(f"{what}: he_agg wire version {version}, this release reads {VERSION}")
    if kind != expected:
        name = Kind(kind).name if kind in Kind._value2member_map_ else f"unknown kind {kind}"
        raise FormatError(f"{what}: this is a {name}, expected a {expected.name}")
    if reserved != 0:
        raise FormatError(f"{what}: reserved header field is {reserved}, expected 0")
    if meta_len > MAX_META:
        raise FormatError(f"{what}: meta length {meta_len} exceeds {MAX_META}")
    body_start = _body_offset(meta_len)
    total = body_start + body_len + _CHECKSUM
    if total != len(view):
        raise FormatError(f"{what}: header implies {total} bytes, buffer has {len(view)} (truncated or padded?)")
    body = view[body_start : body_start + body_len]
    sealed, checksum = bytes(view[:body_start]), bytes(view[total - _CHECKSUM :])
    hashed = None if defer_body else body_hash(body)
    if hashed is not None and not hmac.compare_digest(blake3.blake3(sealed + hashed).digest(), checksum):
        raise ChecksumError(f"{what}: checksum mismatch, the bytes were corrupted in transit or storage")
    if any(view[_FIXED.size + meta_len : body_start]):
        raise FormatError(f"{what}: non-zero padding")
    meta = parse_meta(bytes(view[_FIXED.size : _FIXED.size + meta_len]), what)
    return Envelope(Kind(kind), Meta(meta, what), body, hashed, sealed, checksum)


# -- the meta JSON parser: bounded before and while json.loads runs ---------------------------

#: Deepest nesting of arrays/objects a meta may have (he_agg's own metas use 4).
MAX_META_DEPTH = 32
#: Most values (array items and object members) a meta may hold in all.
MAX_META_ITEMS = 1 << 17
#: Longest integer literal (digits and sign): 2^128 has 39 digits; every field is far smaller.
MAX_INT_DIGITS = 40
#: Longest number literal with a fraction or exponent.
MAX_FLOAT_CHARS = 64

#: A JSON string token; an unterminated one runs to the end (json.loads stops there anyway).
#: Each match starts at an opening quote and never backtracks: linear in the meta's size.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)


class _MetaRefused(Exception):
    """Raised inside json.loads hooks; becomes a FormatError naming the reason."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _MetaRefused(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise _MetaRefused(f"a number literal of {len(text)} characters (at most {MAX_FLOAT_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise _MetaRefused(f"the number {text[:20]} overflows a double")
    return value


def _parse_constant(text: str) -> float:
    raise _MetaRefused(f"{text} (JSON has no non-finite numbers)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _MetaRefused("a duplicated key")
    return out


def _check_structure(raw: bytes) -> None:
    """Nesting depth and item count of JSON text, measured without recursion.

    Strings are blanked first (brackets and commas inside them are text); the depth at
    every byte is then a running sum of opening minus closing brackets. A negative depth
    (more closes than opens) is refused too: no valid JSON has one.
    """
    skeleton = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    opens = (skeleton == ord("[")) | (skeleton == ord("{"))
    closes = (skeleton == ord("]")) | (skeleton == ord("}"))
    if not opens.any():
        return
    depth = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    if int(depth.max()) > MAX_META_DEPTH:
        raise _MetaRefused(f"nesting deeper than {MAX_META_DEPTH}")
    if int(depth.min()) < 0:
        raise _MetaRefused("a closing bracket without an opening one")
    items = int(np.count_nonzero(skeleton == ord(","))) + int(np.count_nonzero(opens))
    if items > MAX_META_ITEMS:
        raise _MetaRefused(f"more than {MAX_META_ITEMS} values")


def parse_meta(raw: bytes, what: str) -> dict[str, Any]:
    """Parse an envelope's meta JSON with every cost bounded; FormatError for anything else.

    Refused before or while json.loads runs: invalid UTF-8, nesting deeper than
    MAX_META_DEPTH (checked without recursion, before parsing), more than MAX_META_ITEMS
    values, integer literals longer than MAX_INT_DIGITS, non-finite numbers (1e400, NaN,
    Infinity), duplicated keys, and a top level that is not an object.
    """
    if len(raw) > MAX_META:
        raise ResourceLimitError(f"{what}: meta is {len(raw)} bytes, more than {MAX_META}")
    try:
        text = raw.decode("utf-8")
        _check_structure(raw)
        meta = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                          object_pairs_hook=_unique_keys)
    except _MetaRefused as exc:
        raise ResourceLimitError(f"{what}: meta refused: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what}: meta is not valid JSON ({exc})") from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:  # defence in depth
        raise FormatError(f"{what}: meta is not acceptable JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{what}: meta is not a JSON object")
    return meta


def _short(value: Any) -> str:
    """A bounded repr of an untrusted value, for error messages."""
    text = repr(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


class Meta:
    """Typed, validated access to an envelope's JSON meta: every read names what was wrong.

    Every accessor raises FormatError (never TypeError, ValueError or OverflowError) for a
    missing field, a wrong type or a value out of range; messages show bounded reprs.
    """

    def __init__(self, data: dict[str, Any], what: str) -> None:
        if not isinstance(data, dict):
            raise FormatError(f"{what}: meta is not a JSON object")
        self._data = data
        self._what = what

    @property
    def what(self) -> str:
        """What the envelope holds, as error messages name it."""
        return self._what

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise FormatError(f"{self._what}: missing field {key!r}")
        return self._data[key]

    def has(self, key: str) -> bool:
        return key in self._data

    def integer(self, key: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
        value = self._get(key)
        if type(value) is not int or not lo <= value <= hi:
            raise FormatError(f"{self._what}: field {key!r} must be an integer in [{lo}, {hi}], got {_short(value)}")
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if type(value) is int and abs(value) < 1 << 1023:
            return float(value)
        if type(value) is not float or not math.isfinite(value):
            raise FormatError(f"{self._what}: field {key!r} must be a finite number, got {_short(value)}")
        return value

    def text(self, key: str, max_len: int = 4096) -> str:
        value = self._get(key)
        if not isinstance(value, str) or len(value) > max_len:
            raise FormatError(f"{self._what}: field {key!r} must be a string of at most {max_len} characters")
        return value

    def hexbytes(self, key: str, size: int) -> bytes:
        value = self.text(key, 2 * size)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise FormatError(f"{self._what}: field {key!r} is not hex") from None
        if len(raw) != size or value != raw.hex():  # canonical lower-case hex, no spaces
            raise FormatError(f"{self._what}: field {key!r} must be {size} bytes as {2 * size} lower-case hex digits")
        return raw

    def integers(self, key: str, lo: int = 0, hi: int = (1 << 63) - 1, max_len: int = 1 << 20) -> list[int]:
        value = self._get(key)
        if not isinstance(value, list) or len(value) > max_len:
            raise FormatError(f"{self._what}: field {key!r} must be a list of at most {max_len} integers")
        for item in value:
            if type(item) is not int or not lo <= item <= hi:
                raise FormatError(f"{self._what}: field {key!r} holds {_short(item)}, outside [{lo}, {hi}]")
        return list(value)

    def as_dict(self) -> dict[str, Any]:
        """A deep copy of the meta as plain JSON values (for tools that re-seal envelopes)."""
        return json.loads(json.dumps(self._data))

    def raw(self, key: str) -> Any:
        """An unvalidated value, for callers that validate structure themselves.

        It is JSON parsed by :func:`parse_meta`: bounded depth and size, finite numbers,
        integers of at most MAX_INT_DIGITS digits; its type is still the caller's to check.
        """
        return self._get(key)


def body_words(body: memoryview, shape: tuple[int, ...], what: str) -> np.ndarray:
    """View an envelope body as a read-only uint64 array of ``shape`` (sizes checked)."""
    words = math.prod(shape)
    if len(body) != 8 * words:
        raise FormatError(f"{what}: body is {len(body)} bytes, expected {8 * words} for shape {shape}")
    return np.frombuffer(body, dtype="<u8").reshape(shape)
