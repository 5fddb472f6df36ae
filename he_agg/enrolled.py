"""Enrolled-client mode, client and server side: c0-only uploads, signed tickets, the c0 sum.

A client enrolled with the committee holds its own ternary secret s_k (replicated-shared
with the members at enrollment). For round r it uploads, per ciphertext j, only

    c0_{k,j} = −a_{r,j}·s_k + Encode(w·m_{k,j}) + e_{k,j}     (data primes, NTT form)

with a_{r,j} the round's public polynomial (:mod:`he_agg.hazmat.rounds`), e from SEAL's
error law (centred binomial, variance 10.5) and randomized rounding in Encode, both from
a fresh CSPRNG stream. The weight w is encrypted by the client in the layout's weight slot;
the server never chooses it. Alongside c0 goes a :class:`Ticket`: the client's Ed25519
signature over (committee id, epoch, round, client id, layout digest, digest of c0), which
a member can check against the client's enrolled key without the c0 body.

The server sums c0 over clients (:class:`C0Accumulator`, one validated native pass per
upload); members later add a·(their shares of Σ s_k) plus flooding.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import blake3
import numpy as np

from .errors import (
    AuthenticationError,
    ClientStateError,
    DuplicateContributionError,
    FormatError,
    HeAggError,
    NotEnrolledError,
    ParameterError,
    ParameterMismatchError,
    RoundMismatchError,
    ShareBindingError,
    StateError,
    TicketError,
)
from .hazmat import kernels
from .hazmat.ckks import encode_dense_split, encode_split
from .hazmat.rounds import MAX_COMMITTEE_ID, round_polynomials
from .hazmat.sampling import KeyedStream, cbd
from .hazmat.wire import packed as packed_wire
from .hazmat.wire import seal as seal_wire
from .hazmat.wire.envelope import Kind, as_bytes, body_hash, body_words, open_envelope, seal_envelope
from .identity import SIGNATURE_BYTES, PartyIdentity, verify_signature
from .packing import (
    MAX_VALUES,
    PACKINGS,
    Layout,
    PackingError,
    PackingMismatchError,
    apply_weight,
    check_layout,
    check_range,
    clip,
    flatten,
    values_per_ciphertext,
)
from .params import Params
from .requests import MAX_CLIENT_ID, check_client_id

__all__ = [
    "C0Accumulator",
    "EnrolledClient",
    "EnrolledUpload",
    "Ticket",
    "VerifyKey",
    "c0_digest",
    "client_state_owner",
    "ciphertext_count",
    "encrypt_enrolled",
    "encrypt_enrolled_slots",
    "enrolled_upload",
    "key_lookup",
    "OpenedUpload",
    "open_upload",
    "secret_ntt",
]

DEFAULT_MAX_CLIENTS = 10_000
#: Ciphertexts processed together by the client (bounds working memory and keeps it in cache: ~1 MiB per array at N=8192).
CHUNK = 16

#: A verify key, or a lookup client id → verify key (raising NotEnrolledError for unknown ids).
VerifyKey = bytes | Callable[[str], bytes]

_C0_DOMAIN = b"he_agg.enrolled.c0.v1\0"
_TICKET_DOMAIN = b"he_agg.enrolled.ticket.v1"
_TICKET_MAGIC = b"HEAGTKT\x01"
_TICKET_FIXED = struct.Struct("<8sQQ32s32s")
_LEN = struct.Struct("<H")
MAX_TICKET_BYTES = _TICKET_FIXED.size + 2 * _LEN.size + MAX_COMMITTEE_ID + 4 * MAX_CLIENT_ID + SIGNATURE_BYTES


def ciphertext_count(length: int, params: Params, packing: str = "slots") -> int:
    """Ciphertexts an update of ``length`` values takes: ⌈length / (N/2)⌉, or ⌈length / N⌉ dense."""
    return -(-length // values_per_ciphertext(params, packing))


def c0_digest(params: Params, length: int, residues_hash: bytes) -> bytes:
    """The digest a ticket signs: BLAKE3(domain ‖ params ‖ length ‖ D(c0 residue bytes)),
    D the body digest (:mod:`he_agg.hazmat.wire.digest`)."""
    return blake3.blake3(_C0_DOMAIN + params.fingerprint + struct.pack("<Q", length) + residues_hash).digest()


# -- tickets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """A client's signed statement: "for this committee, epoch and round I uploaded this c0
    under this layout". Bytes in and out; verifiable without the c0 body.

    Wire form (little-endian): magic ``HEAGTKT\\x01`` ‖ epoch u64 ‖ round u64 ‖ layout
    digest (32) ‖ c0 digest (32) ‖ u16 length + committee id ‖ u16 length + client id
    (UTF-8) ‖ Ed25519 signature (64) over everything before it (domain-separated).
    """

    committee_id: bytes
    epoch: int
    round_id: int
    client_id: str
    layout_digest: bytes
    c0_digest: bytes
    signature: bytes

    @staticmethod
    def _message(committee_id: bytes, epoch: int, round_id: int, client_id: str, layout_digest: bytes,
                 c0_digest: bytes) -> bytes:
        cid, client = bytes(committee_id), client_id.encode("utf-8")
        return b"".join([_TICKET_FIXED.pack(_TICKET_MAGIC, epoch, round_id, layout_digest, c0_digest),
                         _LEN.pack(len(cid)), cid, _LEN.pack(len(client)), client])

    @property
    def message(self) -> bytes:
        """The signed bytes (the wire form without the signature)."""
        return self._message(self.committee_id, self.epoch, self.round_id, self.client_id, self.layout_digest,
                             self.c0_digest)

    @classmethod
    def sign(cls, identity: PartyIdentity, *, committee_id: bytes, epoch: int, round_id: int, client_id: str,
             layout_digest: bytes, c0_digest: bytes) -> "Ticket":
        _check_fields(committee_id, epoch, round_id, client_id, layout_digest, c0_digest, ParameterError)
        message = cls._message(committee_id, epoch, round_id, client_id, layout_digest, c0_digest)
        return cls(bytes(committee_id), epoch, round_id, client_id, bytes(layout_digest), bytes(c0_digest),
                   identity.sign(_TICKET_DOMAIN, message))

    def to_bytes(self) -> bytes:
        return self.message + self.signature

    @classmethod
    def from_bytes(cls, data: object) -> "Ticket":
        """Parse a ticket (format only: :meth:`verify` checks the signature). FormatError if malformed."""
        what = "enrolled ticket"
        try:
            raw = bytes(memoryview(data))  # type: ignore[arg-type]
        except TypeError:
            raise FormatError(f"{what}: expected bytes, got {type(data).__name__}") from None
        if not _TICKET_FIXED.size + 2 * _LEN.size + SIGNATURE_BYTES <= len(raw) <= MAX_TICKET_BYTES:
            raise FormatError(f"{what}: {len(raw)} bytes is not a valid ticket size")
        magic, epoch, round_id, layout_digest, digest = _TICKET_FIXED.unpack_from(raw)
        if magic != _TICKET_MAGIC:
            raise FormatError(f"{what}: bad magic (not a ticket, or another version)")
        pos = _TICKET_FIXED.size
        committee_id, pos = _field(raw, pos, what, "committee id")
        client, pos = _field(raw, pos, what, "client id")
        if len(raw) - pos != SIGNATURE_BYTES:
            raise FormatError(f"{what}: {len(raw) - pos} bytes after the fields; a signature is {SIGNATURE_BYTES}")
        try:
            client_id = client.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what}: the client id is not UTF-8") from None
        _check_fields(committee_id, epoch, round_id, client_id, layout_digest, digest, FormatError)
        return cls(committee_id, epoch, round_id, client_id, layout_digest, digest, raw[pos:])

    def verify(self, verify_key: VerifyKey, *, committee_id: bytes | None = None, epoch: int | None = None,
               round_id: int | None = None, client_id: str | None = None, layout_digest: bytes | None = None,
               c0_digest: bytes | None = None) -> None:
        """Check the signature against the client's enrolled key, and every field given.

        TicketError for a bad signature or a mismatching field; NotEnrolledError if the key
        lookup does not know the client.
        """
        expected = {"committee id": committee_id, "epoch": epoch, "round": round_id, "client id": client_id,
                    "layout digest": layout_digest, "c0 digest": c0_digest}
        actual = {"committee id": self.committee_id, "epoch": self.epoch, "round": self.round_id,
                  "client id": self.client_id, "layout digest": self.layout_digest, "c0 digest": self.c0_digest}
        for name, want in expected.items():
            if want is not None and actual[name] != want:
                raise TicketError(f"ticket of client {self.client_id!r}: {name} does not match (made for "
                                  "another committee, epoch, round, client, layout or c0)")
        key = verify_key(self.client_id) if callable(verify_key) else verify_key
        try:
            verify_signature(key, _TICKET_DOMAIN, self.message, self.signature,
                             f"ticket of client {self.client_id!r}")
        except AuthenticationError as exc:
            raise TicketError(str(exc)) from None

    def __repr__(self) -> str:
        return (f"Ticket(client {self.client_id!r}, committee {self.committee_id[:6].hex()}…, epoch {self.epoch}, "
                f"round {self.round_id}, c0 {self.c0_digest[:6].hex()}…)")


def _field(raw: bytes, pos: int, what: str, name: str) -> tuple[bytes, int]:
    if pos + _LEN.size > len(raw):
        raise FormatError(f"{what}: truncated before the {name}")
    (size,) = _LEN.unpack_from(raw, pos)
    pos += _LEN.size
    if pos + size > len(raw):
        raise FormatError(f"{what}: the {name} runs past the end")
    return raw[pos : pos + size], pos + size


def _check_fields(committee_id: object, epoch: object, round_id: object, client_id: object, layout_digest: object,
                  digest: object, error: type[Exception]) -> None:
    if not isinstance(committee_id, (bytes, bytearray)) or not 1 <= len(committee_id) <= MAX_COMMITTEE_ID:
        raise error(f"a committee id is 1 to {MAX_COMMITTEE_ID} bytes")
    for name, value in (("epoch", epoch), ("round", round_id)):
        if type(value) is not int or not 0 <= value < 1 << 64:
            raise error(f"{name} must be an integer in [0, 2^64)")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
        raise error(f"client ids are non-empty strings of at most {MAX_CLIENT_ID} characters")
    for name, value in (("layout digest", layout_digest), ("c0 digest", digest)):
        if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
            raise error(f"the {name} is 32 bytes")


# -- client: encryption ------------------------------------------------------------------------


def secret_ntt(secret: np.ndarray, params: Params) -> np.ndarray:
    """The client's secret in NTT form over the data primes, shape (L_data, N) uint64.

    ``secret``: N small signed integer coefficients (int8/…/int64: a ternary s_k or a small
    sum of them), or residues in NTT form, (L_data, N) or key-level (L_all, N) uint64.
    """
    moduli = params.data_moduli
    if not isinstance(secret, np.ndarray):
        raise ParameterMismatchError(f"the secret must be a numpy array, got {type(secret).__name__}")
    if secret.dtype == np.uint64 and secret.ndim == 2 and secret.shape[1] == params.n \
            and secret.shape[0] in (len(moduli), len(params.moduli)):
        out = np.array(secret[: len(moduli)], dtype=np.uint64, order="C")
        seal_wire.check_residues(out, moduli, "secret")
        return out
    if secret.dtype.kind != "i" or secret.shape != (params.n,):
        raise ParameterMismatchError(
            f"the secret must be {params.n} signed integer coefficients or NTT residues "
            f"({len(moduli)} or {len(params.moduli)}, {params.n}) uint64; got {secret.dtype} {secret.shape}")
    coefficients = secret.astype(np.int64)
    try:
        if np.abs(coefficients).max() > 1 << 20:
            raise ParameterMismatchError("secret coefficients must be small (a ternary secret or a small sum)")
        out = kernels.signed_to_rns(coefficients, moduli)
    finally:
        coefficients.fill(0)
    kernels.ntt_forward(out, moduli)
    return out


def encrypt_enrolled_slots(secret: np.ndarray, slots: np.ndarray, *, committee_id: bytes, epoch: int,
                           round_id: int, params: Params, stream: KeyedStream | None = None,
                           packing: str = "slots") -> np.ndarray:
    """c0 for a value vector: (count, L_data, N) uint64, NTT form, count = :func:`ciphertext_count`.

    ``packing``: "slots" (CKKS slots, N/2 values per ciphertext) or "dense" (value k of a
    ciphertext in coefficient k, N per ciphertext). The last ciphertext's unused positions
    hold 0. Noise and rounding come from ``stream`` (default: a fresh CSPRNG stream; pass
    one only in tests). Range checks are the caller's (:func:`encrypt_enrolled` does them);
    a coefficient beyond Q/2 raises here.
    """
    values = np.asarray(slots, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ParameterError("nothing to encrypt")
    width = values_per_ciphertext(params, packing)
    moduli = params.data_moduli
    count = ciphertext_count(values.size, params, packing)
    stream = stream if stream is not None else KeyedStream.fresh(b"he_agg.enrolled.client-noise")
    out = np.empty((count, len(moduli), params.n), dtype=np.uint64)
    s = secret_ntt(secret, params)
    neg_s = np.zeros_like(s)
    try:
        kernels.sub(neg_s, neg_s, s, moduli)
        s.fill(0)
        for start in range(0, count, CHUNK):
            stop = min(count, start + CHUNK)
            chunk = np.zeros((stop - start, width), dtype=np.float64)
            piece = values[start * width : stop * width]
            chunk.reshape(-1)[: piece.size] = piece
            a = round_polynomials(committee_id, epoch, round_id, stop - start, params, start=start)
            m = _encode_with_noise(chunk, params, stream, packing)
            chunk.fill(0.0)
            kernels.ntt_forward(m, moduli)
            kernels.muladd(out[start:stop], a, neg_s, m, moduli)  # −a·s + (Encode(m) + e)
            m.fill(0)
    finally:
        s.fill(0)
        neg_s.fill(0)
    return out


def _encode_with_noise(chunk: np.ndarray, params: Params, stream: KeyedStream, packing: str = "slots") -> np.ndarray:
    """Encode(chunk) + e in coefficient form as residues (rows, L, N); everything secret wiped."""
    moduli = params.data_moduli
    encoded = (encode_dense_split if packing == "dense" else encode_split)(chunk, params.scale, stream)
    try:
        error = cbd(stream, encoded.low.size).reshape(encoded.low.shape)
        encoded.low += error
        error.fill(0)
        limit = float(params.data_modulus // 2)
        peak = float(np.abs(encoded.high).max()) * 2.0**encoded.shift + float(np.abs(encoded.low).max())
        if peak >= limit * (1 - 2.0**-40):
            raise ParameterMismatchError(f"a coefficient reaches 2^{math.log2(peak):.2f}, beyond Q/2: "
                                         "the values are too large for this scale")
        return encoded.to_rns(moduli)
    finally:
        encoded.wipe()


def encrypt_enrolled(secret: np.ndarray, update: Any, *, committee_id: bytes, epoch: int, round_id: int,
                     params: Params, weight: float | None = None, clip_l2: float | None = None,
                     clip_value: float | None = None, max_clients: int = DEFAULT_MAX_CLIENTS,
                     stream: KeyedStream | None = None, packing: str = "slots") -> tuple[np.ndarray, Layout]:
    """Encrypt a client's update for one round in enrolled mode: returns (c0, layout).

    ``update``, ``weight``, ``clip_l2``, ``clip_value``, ``max_clients``: as in
    :func:`he_agg.client.encrypt` (the client puts w·x and w in the slots itself).
    ``packing``: "slots" (default) or "dense" (N values per ciphertext, exact encoding;
    recorded in the layout, so a round refuses a mix).
    c0: (count, L_data, N) uint64 NTT residues, one row per N/2 slots (N values dense).
    """
    vector, layout = flatten(update, weighted=weight is not None, packing=packing)
    if clip_l2 is not None or clip_value is not None:
        vector = clip(vector, l2=clip_l2, value=clip_value)
    slots = apply_weight(vector, layout, weight) if weight is not None else vector
    check_range(slots, params, max_clients)
    c0 = encrypt_enrolled_slots(secret, slots, committee_id=committee_id, epoch=epoch, round_id=round_id,
                                params=params, stream=stream, packing=layout.packing)
    return c0, layout


def enrolled_upload(identity: PartyIdentity, secret: np.ndarray, update: Any, *, client_id: str,
                    committee_id: bytes, epoch: int, round_id: int, params: Params, **options: Any) -> "EnrolledUpload":
    """:func:`encrypt_enrolled` and sign the ticket: the upload, ready for ``to_bytes()``.

    A client must persist its round before uploading and resend the identical bytes on retry.
    """
    c0, layout = encrypt_enrolled(secret, update, committee_id=committee_id, epoch=epoch, round_id=round_id,
                                  params=params, **options)
    return EnrolledUpload.create(identity, c0, layout, client_id=client_id, committee_id=committee_id, epoch=epoch,
                                 round_id=round_id, params=params)


# -- the upload on the wire ----------------------------------------------------------------------


class EnrolledUpload:
    """One client's c0-only upload for one round: residues, layout and signed ticket.

    Wire form: a he_agg envelope (Kind.ENROLLED_UPLOAD) whose body is the (count, L_data, N)
    little-endian residues (64-byte aligned) and whose meta holds the parameter fingerprint,
    the length, the layout and the ticket (hex). The ticket's c0 digest binds the body.
    """

    __slots__ = ("params", "ticket", "layout", "c0", "_digest")

    def __init__(self, params: Params, ticket: Ticket, layout: Layout, c0: np.ndarray) -> None:
        """Trusts its caller on residue ranges and the ticket (as ``numpy.ndarray`` would)."""
        self._digest: bytes | None = None  # the body digest of c0, once known (create, from_bytes)
        expected = (layout.ciphertexts(params), len(params.data_moduli), params.n)
        if not isinstance(c0, np.ndarray) or c0.dtype != np.uint64 or c0.shape != expected \
                or not c0.flags.c_contiguous:
            raise ParameterMismatchError(f"c0 must be C-contiguous uint64 of shape {expected} for "
                                         f"{layout.length} slots")
        self.params, self.ticket, self.layout, self.c0 = params, ticket, layout, c0

    @classmethod
    def create(cls, identity: PartyIdentity, c0: np.ndarray, layout: Layout, *, client_id: str, committee_id: bytes,
               epoch: int, round_id: int, params: Params) -> "EnrolledUpload":
        """Sign the ticket for c0 (range-checked here) and wrap both."""
        check_client_id(client_id)
        seal_wire.check_residues(c0, params.data_moduli, "c0")
        residues = body_hash(as_bytes(np.ascontiguousarray(c0)))
        ticket = Ticket.sign(identity, committee_id=committee_id, epoch=epoch, round_id=round_id,
                             client_id=client_id, layout_digest=layout.digest,
                             c0_digest=c0_digest(params, layout.length, residues))
        upload = cls(params, ticket, layout, c0)
        upload._digest = residues  # the envelope's checksum reuses it: c0 is hashed once
        return upload

    @property
    def client_id(self) -> str:
        return self.ticket.client_id

    def to_bytes(self, *, packed: bool = False) -> bytes:
        """The envelope; ``packed=True`` stores each residue in bitlen(q) bits (meta
        ``"packed": true``). The ticket names the residues, not their packing: both forms
        carry the same ticket."""
        meta = {"params": self.params.fingerprint.hex(), "length": self.layout.length,
                "layout": self.layout.to_json(), "ticket": self.ticket.to_bytes().hex()}
        if packed:
            meta["packed"] = True
            return seal_envelope(Kind.ENROLLED_UPLOAD, meta, packed_wire.pack_residues(self.c0, self.params.data_moduli))
        return seal_envelope(Kind.ENROLLED_UPLOAD, meta, self.c0, body_digest=self._digest)

    @classmethod
    def from_bytes(cls, data: object, params: Params, committee_id: bytes, *, verify_key: VerifyKey | None,
                   epoch: int | None = None, round_id: int | None = None) -> "EnrolledUpload":
        """Parse and fully validate; c0 is a read-only view of ``data``.

        ``verify_key``: the client's enrolled key or a lookup by client id; None skips the
        signature (the members verify tickets). ``epoch``/``round_id``: refuse others.
        """
        ticket, layout, c0, residues, _ = open_upload(data, params, committee_id, verify_key=verify_key, epoch=epoch,
                                                      round_id=round_id, check=True)
        upload = cls(params, ticket, layout, c0)
        upload._digest = residues
        return upload

    def __repr__(self) -> str:
        return (f"EnrolledUpload(client {self.client_id!r}, round {self.ticket.round_id}, "
                f"{self.layout.values} values, {self.c0.shape[0]} ciphertexts)")


class OpenedUpload(NamedTuple):
    """An upload's envelope, meta and ticket validated by :func:`open_upload` (residues
    left to the summing kernel when opened with ``check=False``)."""

    ticket: Ticket
    layout: Layout
    c0: np.ndarray | packed_wire.PackedView
    residues_hash: bytes | None  # None: deferred, see ``check_body``
    check_body: Callable[[bytes], None] | None = None


def open_upload(data: object, params: Params, committee_id: bytes, *, verify_key: VerifyKey | None,
                epoch: int | None = None, round_id: int | None = None,
                check: bool = True, defer_body: bool = False) -> OpenedUpload:
    """Validate an upload's envelope, meta and ticket; view its residues without copying.

    Returns (ticket, layout, c0 view (count, L, N), digest of the residue words). A packed
    body (meta ``"packed": true``) gives a :class:`PackedView` instead (an array with
    ``check``) and the digest its unpacked words would have. Every size is checked
    against the buffer before the view is made. With ``check=False`` the residues are
    left for the summing kernel to range-check in the pass that adds them.

    ``defer_body=True`` (with ``check=False``; unpacked bodies, else ignored): the body is
    not hashed here. ``residues_hash`` is None and ``check_body(digest)`` — the envelope
    checksum, then the ticket's c0 digest — must be called with the digest of the words
    (:func:`he_agg.hazmat.kernels.sum_hashed`) before anything derived from the upload is
    kept. Errors are the same as without deferral: whenever the bytes fail their
    checksum, that is the error reported.
    """
    what = "he_agg enrolled upload"
    env = open_envelope(data, Kind.ENROLLED_UPLOAD, what, defer_body=defer_body and not check)
    if env.body_hash is None:
        try:
            return _open_upload(env, params, committee_id, verify_key, epoch, round_id, check, what)
        except HeAggError:
            env.check_body(body_hash(env.body))  # corrupted bytes: report the checksum, as without deferral
            raise
    return _open_upload(env, params, committee_id, verify_key, epoch, round_id, check, what)


def _open_upload(env: Any, params: Params, committee_id: bytes, verify_key: VerifyKey | None, epoch: int | None,
                 round_id: int | None, check: bool, what: str) -> OpenedUpload:
    meta = env.meta
    if meta.hexbytes("params", 32) != params.fingerprint:
        raise ParameterMismatchError(f"{what}: made for other parameters; expected {params.describe()}")
    length = meta.integer("length", 1, MAX_VALUES + 1)
    ticket = Ticket.from_bytes(bytes.fromhex(_hex(meta.text("ticket", 2 * MAX_TICKET_BYTES), what)))
    who = f"{what} of client {ticket.client_id!r}"
    if ticket.committee_id != committee_id:
        raise ShareBindingError(f"{who}: made for another committee")
    if (epoch is not None and ticket.epoch != epoch) or (round_id is not None and ticket.round_id != round_id):
        raise RoundMismatchError(f"{who}: made for epoch {ticket.epoch}, round {ticket.round_id}; "
                                 f"expected epoch {epoch}, round {round_id}")
    layout = Layout.from_json(meta.raw("layout"))
    if layout.length != length:
        raise FormatError(f"{who}: {length} slots but the layout describes {layout.length}")
    shape = (layout.ciphertexts(params), len(params.data_moduli), params.n)
    c0: np.ndarray | packed_wire.PackedView
    if packed_wire.packed_flag(meta, who):  # sizes checked against the formula before any use
        if env.body_hash is None:  # deferral is for unpacked bodies: check the packed bytes now
            env = dataclasses.replace(env, body_hash=body_hash(env.body))
            env.check_body(env.body_hash)
        c0 = packed_wire.PackedView(*packed_wire.packed_body(env.body, (shape[0], 1) + shape[1:], params.data_moduli,
                                                             who), length, False, env.body_hash, 1)
        residues_hash = c0.unpacked_hash(params)
    else:
        c0 = body_words(env.body, shape, who)
        residues_hash = env.body_hash

    def check_digest(digest: bytes) -> None:
        if ticket.c0_digest != c0_digest(params, length, digest):
            raise TicketError(f"{who}: the ticket does not match the layout or the residues")

    if ticket.layout_digest != layout.digest:
        raise TicketError(f"{who}: the ticket does not match the layout or the residues")
    if residues_hash is not None:
        check_digest(residues_hash)
    if verify_key is not None:
        ticket.verify(verify_key)
    if residues_hash is None:  # deferred: the caller hashes the words in its summing pass
        def check_body(digest: bytes) -> None:
            env.check_body(digest)
            check_digest(digest)
        return OpenedUpload(ticket, layout, c0, None, check_body)
    if check:
        if isinstance(c0, packed_wire.PackedView):
            c0 = c0.residues(params, who)[:, 0]
        else:
            seal_wire.check_residues(c0, params.data_moduli, who)
    return OpenedUpload(ticket, layout, c0, residues_hash)


def _hex(text: str, what: str) -> str:
    if len(text) % 2 or any(c not in "0123456789abcdef" for c in text):
        raise FormatError(f"{what}: the ticket is not lowercase hex")
    return text


def blame_bytes(check_body: Callable[[bytes], None] | None, c0: Any) -> None:
    """Before an error about an upload opened with ``defer_body`` leaves: hash its words and
    run the deferred checks, so that corrupted bytes are reported as such (ChecksumError,
    TicketError), exactly as when the body is checked at opening."""
    if check_body is not None:
        check_body(body_hash(as_bytes(c0)))


# -- server: the c0 sum ------------------------------------------------------------------------------


class C0Accumulator:
    """The server's running sum of c0-only uploads for one round. Not thread-safe.

    Each :meth:`add` validates the envelope and ticket, refuses a second upload from one
    client id, and adds the residues with the native summing kernel, range-checked in the
    same pass: on any error the sum is exactly as it was. ``verify_key`` (a key lookup by
    client id) makes the server check signatures too; members check them regardless.
    """

    def __init__(self, params: Params, length: int, *, committee_id: bytes, epoch: int, round_id: int,
                 layout: Layout | None = None, verify_key: Callable[[str], bytes] | None = None,
                 packing: str | None = None) -> None:
        if type(length) is not int or not 1 <= length <= MAX_VALUES + 1:
            raise ParameterError(f"length must be an integer in [1, {MAX_VALUES + 1}]")
        if layout is not None and layout.length != length:
            raise ParameterMismatchError(f"the layout holds {layout.length} slots, not {length}")
        packing = packing if packing is not None else (layout.packing if layout is not None else "slots")
        if packing not in PACKINGS:
            raise PackingError(f"packing must be one of {PACKINGS}, got {packing!r}")
        if layout is not None and layout.packing != packing:
            raise PackingMismatchError(f"the layout is packed as {layout.packing!r}, not {packing!r}")
        self.params, self.length, self.layout, self.packing = params, length, layout, packing
        self.committee_id, self.epoch, self.round_id = bytes(committee_id), epoch, round_id
        self._verify_key = verify_key
        count = ciphertext_count(length, params, packing)
        self._acc = np.zeros((count, 1, len(params.data_moduli), params.n), dtype=np.uint64)
        self._tickets: dict[str, Ticket] = {}

    @property
    def sum(self) -> np.ndarray:
        """Σ c0 over the accepted uploads, (count, L_data, N) NTT residues (a read-only view)."""
        view = self._acc[:, 0]
        view.flags.writeable = False
        return view

    @property
    def tickets(self) -> tuple[Ticket, ...]:
        """The accepted uploads' tickets, in order of arrival (what members receive)."""
        return tuple(self._tickets.values())

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(self._tickets)

    def __len__(self) -> int:
        return len(self._tickets)

    def add(self, upload: EnrolledUpload | OpenedUpload | bytes | bytearray | memoryview) -> Ticket:
        """Validate one upload and add its c0 to the sum; returns its ticket.

        An :class:`OpenedUpload` (bytes already opened for this round's parameters, e.g. to
        learn the first upload's layout) is not parsed again; its ticket is checked again.
        """
        check_body: Callable[[bytes], None] | None = None
        if isinstance(upload, (EnrolledUpload, OpenedUpload)):
            if isinstance(upload, EnrolledUpload) and upload.params != self.params:
                raise ParameterMismatchError("the upload was made under other parameters")
            ticket, layout, c0 = upload.ticket, upload.layout, upload.c0
            check_body = upload.check_body if isinstance(upload, OpenedUpload) else None
            self._check_ticket(ticket)
            if self._verify_key is not None:
                ticket.verify(self._verify_key)
        else:
            ticket, layout, c0, _, check_body = open_upload(
                upload, self.params, self.committee_id, verify_key=self._verify_key, epoch=self.epoch,
                round_id=self.round_id, check=False, defer_body=self._hashes_in_sum)
        try:
            self._check_upload(ticket, layout)
        except HeAggError:
            blame_bytes(check_body, c0)
            raise
        if check_body is not None and not self._hashes_in_sum:  # e.g. shards elsewhere: check before summing
            blame_bytes(check_body, c0)
            check_body = None
        if check_body is None:
            self._sum(c0)
        else:
            self._sum_and_check(c0, check_body)
        if self.layout is None:
            self.layout = layout
        self._tickets[ticket.client_id] = ticket
        return ticket

    def _sum(self, c0: np.ndarray | packed_wire.PackedView) -> None:
        """Add validated-layout residues to the sum, range-checked in the same pass; the sum
        is untouched on error (he_agg.dask overrides this to sum on its shards)."""
        if isinstance(c0, packed_wire.PackedView):  # unpacked inside the summing pass
            kernels.sum_packed(self._acc, [(c0.buffer, c0.offsets)], self.params.data_moduli)
        else:
            step = np.uint64(c0[0].nbytes)
            offsets = np.arange(c0.shape[0], dtype=np.uint64) * step
            kernels.sum_ciphertexts(self._acc, [(c0, offsets)], self.params.data_moduli)

    def _check_upload(self, ticket: Ticket, layout: Layout) -> None:
        if ticket.client_id in self._tickets:
            raise DuplicateContributionError(f"client {ticket.client_id!r} already contributed to round "
                                             f"{self.round_id}")
        if layout.packing != self.packing:
            raise PackingMismatchError(f"client {ticket.client_id!r} packed its update as {layout.packing!r}; "
                                       f"this round is packed as {self.packing!r}")
        if layout.length != self.length:
            raise ParameterMismatchError(f"client {ticket.client_id!r} sent {layout.length} slots; the round "
                                         f"expects {self.length}")
        if self.layout is not None:
            check_layout(layout, self.layout)

    #: Whether :meth:`add` may defer hashing an upload's body to :meth:`_sum_and_check` (the
    #: local sum hashes it in the same pass; he_agg.dask's shards hash in the driver).
    _hashes_in_sum = True

    def _sum_and_check(self, c0: Any, check_body: Callable[[bytes], None]) -> None:
        """Add words whose digest is still unchecked, hashing them in the summing pass
        (:func:`~he_agg.hazmat.kernels.sum_hashed`), then check the envelope checksum and the
        ticket's digest; on any error the sum is exactly as it was. A bad residue in bytes
        that also fail their checksum is reported as the checksum error."""
        mods = self.params.data_moduli
        try:
            digest = kernels.sum_hashed(self._acc, c0.reshape(self._acc.shape), mods)
        except HeAggError:
            blame_bytes(check_body, c0)
            raise
        try:
            check_body(digest)
        except BaseException:
            kernels.undo_hashed(self._acc, c0.reshape(self._acc.shape), mods)
            raise

    def restore(self, acc: np.ndarray, tickets: Sequence[bytes]) -> None:
        """Reset to a saved state: Σc0 ``acc`` (this accumulator's shape) and the accepted tickets'
        bytes in arrival order (e.g. a checkpoint and its ledger, :mod:`he_agg.ledger`).

        Each ticket is checked against this round (committee, epoch, round) and for
        duplicates; on any error the accumulator is left as it was. ``acc`` is trusted to
        be the sum of those uploads: its integrity is the checkpoint's job (checksummed).
        """
        acc = np.asarray(acc)
        if acc.dtype != np.uint64 or acc.shape != self._acc.shape:
            raise StateError(f"the saved sum has shape {acc.shape} ({acc.dtype}), not {self._acc.shape} (uint64)")
        restored: dict[str, Ticket] = {}
        for raw in tickets:
            ticket = Ticket.from_bytes(raw)
            self._check_ticket(ticket)
            if ticket.client_id in restored:
                raise StateError(f"the saved round lists client {ticket.client_id!r} twice")
            restored[ticket.client_id] = ticket
        self._acc[...] = acc
        self._tickets = restored

    def _check_ticket(self, ticket: Ticket) -> None:
        if ticket.committee_id != self.committee_id:
            raise ShareBindingError(f"client {ticket.client_id!r}: upload for another committee")
        if ticket.epoch != self.epoch or ticket.round_id != self.round_id:
            raise RoundMismatchError(f"client {ticket.client_id!r}: upload for epoch {ticket.epoch}, round "
                                     f"{ticket.round_id}; this is epoch {self.epoch}, round {self.round_id}")

    def __repr__(self) -> str:
        return f"C0Accumulator(epoch {self.epoch}, round {self.round_id}, {len(self)} uploads)"


def key_lookup(keys: dict[str, bytes]) -> Callable[[str], bytes]:
    """A verify-key lookup over a dict client id → key; NotEnrolledError for others."""
    def lookup(client_id: str) -> bytes:
        try:
            return keys[client_id]
        except KeyError:
            raise NotEnrolledError(f"client {client_id!r} is not enrolled") from None
    return lookup


# -- the client as users hold it -------------------------------------------------------------


def client_state_owner(committee_id: bytes, client_id: str) -> bytes:
    """The owner id of a client's round record (one per committee and client id)."""
    return blake3.blake3(b"he_agg.enrolled-client\0" + bytes(committee_id) + client_id.encode("utf-8")).digest()


class EnrolledClient:
    """One client of an enrolled committee: enrolls once per key epoch, uploads one c0 per round.

    Its secret s_k is the sum of the sub-secrets it dealt at enrollment; its round record
    (:class:`he_agg.state.ClientRounds`, durable when ``state_path`` is given) makes sure it
    never encrypts twice under one round's polynomial — two c0 under one a reveal m − m' —
    and that a retry resends the identical bytes.
    """

    __slots__ = ("context", "client_id", "epoch", "_identity", "_enrollment", "_rounds", "_secret")

    def __init__(self, context: Any, client_id: str, epoch: int, identity: PartyIdentity, enrollment: Any,
                 rounds: Any) -> None:
        self.context = context
        self.client_id = check_client_id(client_id)
        self.epoch = epoch
        self._identity = identity
        self._enrollment = enrollment
        self._rounds = rounds
        self._secret: np.ndarray | None = None

    @classmethod
    def create(cls, context: Any, client_id: str, epoch: int = 0, *, identity: PartyIdentity | None = None,
               state_path: Any = None) -> "EnrolledClient":
        """A client with a fresh identity (or ``identity``) and a fresh dealing for ``epoch``."""
        from .enrollment import ClientEnrollment, CommitteeInfo
        from .state import ClientRounds

        identity = identity or PartyIdentity.generate()
        info = CommitteeInfo(context.committee_id, context.roster, context.threshold, context.params.n)
        enrollment = ClientEnrollment.create(identity, client_id, info, epoch)
        owner = client_state_owner(context.committee_id, client_id)
        return cls(context, client_id, epoch, identity, enrollment, ClientRounds.open(state_path, owner=owner))

    @property
    def public_key(self) -> bytes:
        """The Ed25519 key the committee's operators admit for this client id."""
        return self._identity.public_key

    def dealing(self) -> bytes:
        """The signed enrollment dealing, for every member (the same bytes on every call)."""
        return bytes(self._enrollment.dealing())

    def confirm(self, acks: Sequence[bytes]) -> None:
        """Check that every member acknowledged this dealing."""
        self._enrollment.confirm(acks)

    def _secret_ntt(self) -> np.ndarray:
        if self._secret is None:
            coefficients = self._enrollment.secret_coefficients()
            self._secret = secret_ntt(coefficients, self.context.params)
            coefficients.fill(0)
        return self._secret

    def encrypt(self, update: Any, *, round_id: int, weight: float | None = None, clip_l2: float | None = None,
                clip_value: float | None = None, max_clients: int = 1000, packing: str = "slots",
                packed: bool = False) -> bytes:
        """The upload for ``round_id``, recorded before it is returned (once per round, forward only).

        ``packing``: "slots" or "dense" (N values per ciphertext: half the bytes, exact encoding).
        ``packed``: store each residue in ⌈log2 q⌉ bits on the wire (7.5 instead of 8 bytes at
        60-bit primes; 12.9 bytes per value dense at the COMPACT preset)."""
        def make() -> bytes:
            upload = enrolled_upload(self._identity, self._secret_ntt(), update, client_id=self.client_id,
                                     committee_id=self.context.committee_id, epoch=self.epoch, round_id=round_id,
                                     params=self.context.params, weight=weight, clip_l2=clip_l2,
                                     clip_value=clip_value, max_clients=max_clients, packing=packing)
            return upload.to_bytes(packed=packed)

        return bytes(self._rounds.record(self.epoch, round_id, make))

    def resend(self, round_id: int) -> bytes:
        """The identical bytes of an earlier upload (ClientStateError if there is none)."""
        stored = self._rounds.upload(self.epoch, round_id)
        if stored is None:
            raise ClientStateError(f"no upload was recorded for round {round_id} of epoch {self.epoch}")
        return bytes(stored)

    def save(self, path: Any, *, passphrase: bytes | None = None, insecure_plaintext: bool = False) -> None:
        """Write the identity and enrollment seeds (sealed with ``passphrase``); rounds go to ``path``.rounds.

        Save right after :meth:`create` (before the first upload), so the durable round record
        holds every upload this client ever makes.
        """
        from pathlib import Path

        from .hazmat.files import write_private
        from .state import ClientRounds

        path = Path(path)
        if getattr(self._rounds, "_path", None) is None and self._rounds.highest_round(self.epoch) is not None:
            raise ClientStateError("this client already uploaded with an in-memory round record; save it right "
                                   "after creating it")
        secret = self._identity.private_bytes() + self._enrollment.private_bytes()
        meta = {"mode": "enrolled-client", "client": self.client_id, "epoch": self.epoch,
                "committee": self.context.committee_id.hex()}
        write_private(path, seal_envelope(Kind.KEY_SHARE, meta, secret), passphrase=passphrase,
                      insecure_plaintext=insecure_plaintext)
        if getattr(self._rounds, "_path", None) is None:
            self._rounds = ClientRounds.open(path.with_name(path.name + ".rounds"),
                                             owner=client_state_owner(self.context.committee_id, self.client_id))

    @classmethod
    def load(cls, path: Any, context: Any, *, passphrase: bytes | None = None) -> "EnrolledClient":
        """Read a client file written by :meth:`save` and reopen its round record."""
        from pathlib import Path

        from .enrollment import ClientEnrollment, CommitteeInfo
        from .hazmat.files import read_private
        from .state import ClientRounds

        path = Path(path)
        what = f"client file {path}"
        env = open_envelope(read_private(path, passphrase=passphrase), Kind.KEY_SHARE, what)
        meta = env.meta
        if meta.text("mode", 32) != "enrolled-client" or meta.hexbytes("committee", 32) != context.committee_id:
            raise ShareBindingError(f"{what}: not a client file of this committee")
        body = bytes(env.body)
        identity = PartyIdentity.from_private_bytes(body[:32])
        info = CommitteeInfo(context.committee_id, context.roster, context.threshold, context.params.n)
        enrollment = ClientEnrollment.restore(identity, info, body[32:])
        client_id = meta.text("client", MAX_CLIENT_ID)
        if enrollment.client_id != client_id or enrollment.epoch != meta.integer("epoch"):
            raise FormatError(f"{what}: the enrollment does not match the file's client or epoch")
        rounds = ClientRounds.open(path.with_name(path.name + ".rounds"),
                                   owner=client_state_owner(context.committee_id, client_id))
        return cls(context, client_id, enrollment.epoch, identity, enrollment, rounds)

    def wipe(self) -> None:
        if self._secret is not None:
            self._secret.fill(0)
        self._enrollment.wipe()

    def __repr__(self) -> str:
        return f"EnrolledClient({self.client_id!r}, epoch {self.epoch}, committee {self.context.committee_id[:6].hex()}…)"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("an EnrolledClient cannot be pickled")
