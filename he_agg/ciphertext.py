"""A batch of fresh CKKS ciphertexts held as one contiguous (count, 2, L, N) uint64 array.

This is the unit that crosses the wire and feeds the summing kernel. A TenSEAL
``CKKSVector`` of ``length`` values becomes a batch of ceil(length / (N/2)) ciphertexts,
chunked exactly as TenSEAL chunks it, and converts back losslessly. A dense-packed batch
(N values per ciphertext, :func:`he_agg.hazmat.pkenc.encrypt_dense`) holds ceil(length / N)
ciphertexts; its :attr:`~CiphertextBatch.packing` is "dense" and its envelope meta says so
(``"packing": "dense"``, absent for slots, so slot envelopes are unchanged).

Three byte forms are read, each validated in full before use:

* he_agg's envelope (:meth:`CiphertextBatch.to_bytes`): header, parameter fingerprint,
  64-byte-aligned residues, BLAKE3 checksum;
* TenSEAL ``CKKSVector.serialize()`` bytes, zstd-compressed or not;
* a TenSEAL ``CKKSVector`` object.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence, Union

import blake3
import numpy as np

from .errors import FormatError, ParameterMismatchError
from .hazmat.wire import packed as packed_wire
from .hazmat.wire import seal, tenseal
from .hazmat.wire.digest import StreamDigest
from .hazmat.wire.envelope import Kind, Meta, as_bytes, body_hash, body_words, open_envelope, seal_envelope
from .params import Params

__all__ = ["CiphertextBatch", "Submission", "residue_digest", "residue_view", "view_digest"]

#: Anything he_agg accepts as an encrypted vector.
Submission = Union["CiphertextBatch", bytes, bytearray, memoryview, object]

_DIGEST_DOMAIN = b"he_agg.ciphertext.v1\0"


def _count_for(length: int, params: Params, packing: str = "slots") -> int:
    """Ciphertexts for ``length`` values, by arithmetic (no list: ``length`` may be untrusted):
    TenSEAL's chunking into N/2 slots, or ⌈length / N⌉ for dense packing."""
    return tenseal.chunk_count(length, params.n if packing == "dense" else params.slots)


def _packing_for(count: int, length: int, params: Params) -> str:
    """The packing a batch of ``count`` ciphertexts for ``length`` values uses (slots when both fit)."""
    if length > 0 and count == _count_for(length, params):
        return "slots"
    if length > 0 and count == _count_for(length, params, "dense"):
        return "dense"
    raise ParameterMismatchError(f"{count} ciphertexts hold neither the slot ({_count_for(length, params)}) nor the "
                                 f"dense ({_count_for(length, params, 'dense')}) packing of {length} values")


def _meta_packing(meta: Meta, what: str) -> str:
    """The packing an envelope's meta declares: its ``"packing"`` key, else its layout's, else slots."""
    if meta.has("packing"):
        if meta.raw("packing") != "dense":
            raise FormatError(f"{what}: field 'packing' must be \"dense\" when present")
        return "dense"
    layout = meta.raw("layout") if meta.has("layout") else None
    if isinstance(layout, dict) and "packing" in layout:
        if layout["packing"] not in ("slots", "dense"):
            raise FormatError(f"{what}: the layout names an unknown packing")
        return "dense" if layout["packing"] == "dense" else "slots"
    return "slots"


class CiphertextBatch:
    """``count`` fresh ciphertexts under ``params`` carrying ``length`` values in all.

    ``data`` is C-contiguous uint64 of shape (count, 2, L, N): ciphertext, polynomial
    (c0, c1), data prime, NTT-form coefficient. Every residue is below its prime (checked
    by every loader; the constructor trusts its caller, like ``numpy.ndarray``).
    ``packing``: "slots" (count = TenSEAL's chunking into N/2) or "dense" (count = ⌈length/N⌉);
    by default read from ``data``'s count (slots when both packings give the same count).
    """

    __slots__ = ("params", "data", "length", "packing", "_digest")

    def __init__(self, params: Params, data: np.ndarray, length: int, packing: str | None = None) -> None:
        if length < 1:
            raise ValueError("a ciphertext batch carries at least one value")
        if packing is None:
            packing = _packing_for(data.shape[0] if data.ndim else -1, length, params)
        elif packing not in ("slots", "dense"):
            raise ParameterMismatchError(f"packing must be 'slots' or 'dense', got {packing!r}")
        expected = (_count_for(length, params, packing), 2, len(params.data_moduli), params.n)
        if data.dtype != np.uint64 or data.shape != expected or not data.flags.c_contiguous:
            raise ParameterMismatchError(
                f"ciphertext data must be C-contiguous uint64 of shape {expected} for {length} values "
                f"({packing} packing), got {data.dtype} {data.shape}"
            )
        self.params = params
        self.data = data
        self.length = length
        self.packing = packing
        self._digest: bytes | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def zeros(cls, params: Params, length: int, packing: str = "slots") -> "CiphertextBatch":
        """The additive identity: an all-zero (transparent) batch, for accumulators."""
        if packing not in ("slots", "dense"):
            raise ParameterMismatchError(f"packing must be 'slots' or 'dense', got {packing!r}")
        count = _count_for(length, params, packing)
        return cls(params, np.zeros((count, 2, len(params.data_moduli), params.n), dtype=np.uint64), length, packing)

    @classmethod
    def from_tenseal(cls, vector: object, params: Params) -> "CiphertextBatch":
        """From a TenSEAL ``CKKSVector`` or its ``serialize()`` bytes (validated)."""
        view = residue_view(vector, params)
        return cls(params, view.residues(params), view.length, "slots")

    @classmethod
    def from_bytes(cls, data: object, params: Params) -> "CiphertextBatch":
        """From he_agg envelope bytes (validated; the array is a read-only view of ``data``)."""
        env = open_envelope(data, Kind.CIPHERTEXT_BATCH, "he_agg ciphertext batch")
        packing = _meta_packing(env.meta, "he_agg ciphertext batch")
        view = view_from_meta(env.meta, env.body, params, "he_agg ciphertext batch", check=False,
                              body_hash=env.body_hash)
        return cls(params, view.residues(params), view.length, packing)

    # -- serialization --------------------------------------------------------------------

    def to_bytes(self, *, packed: bool = False) -> bytes:
        """he_agg's compact wire form: 2·L·8 bytes per slot plus a ~150-byte envelope.

        ``packed=True`` stores each residue in bitlen(q) bits (meta ``"packed": true``):
        2·Σ_l⌈N·bitlen(q_l)/64⌉·8 bytes per ciphertext, summed in place by the kernel.
        """
        meta = _meta(self.params, self.length)
        if self.packing == "dense":
            meta["packing"] = "dense"
        if not packed:
            return seal_envelope(Kind.CIPHERTEXT_BATCH, meta, self.data)
        meta["packed"] = True
        return seal_envelope(Kind.CIPHERTEXT_BATCH, meta, packed_wire.pack_residues(self.data, self.params.data_moduli))

    def to_tenseal_bytes(self, *, compress: bool = True) -> bytes:
        """TenSEAL ``CKKSVector`` bytes (zstd like TenSEAL's own, or uncompressed); slot packing only."""
        if self.packing != "slots" and self.count != _count_for(self.length, self.params):
            raise ParameterMismatchError("a dense-packed batch has no TenSEAL form (TenSEAL vectors use slot packing)")
        return tenseal.write_vector(self.data, self.length, self.params, compress=compress)

    def to_tenseal(self, context: object) -> object:
        """A TenSEAL ``CKKSVector`` bound to ``context`` (which must use the same parameters)."""
        import tenseal as ts

        if Params.from_tenseal(context) != self.params:
            raise ParameterMismatchError("the TenSEAL context uses other parameters than this batch")
        return ts.ckks_vector_from(context, self.to_tenseal_bytes(compress=False))

    # -- arithmetic -----------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self.data.shape[0]

    @property
    def digest(self) -> bytes:
        """BLAKE3-256 over parameters, length and residues: names this exact ciphertext."""
        if self._digest is None:
            self._digest = residue_digest(self.params, self.length, body_hash(as_bytes(self.data)))
        return self._digest

    @classmethod
    def sum(cls, items: Iterable[Submission], params: Params) -> "CiphertextBatch":
        """Homomorphic sum of encrypted vectors of one length, in one native pass."""
        views = [residue_view(item, params, f"input {i}") for i, item in enumerate(items)]
        if not views:
            raise ValueError("nothing to sum")
        acc = cls.zeros(params, views[0].length, _packing_for(views[0].count, views[0].length, params))
        acc.accumulate(views)
        return acc

    def accumulate(self, views: Sequence[tenseal.ResidueView]) -> None:
        """Add validated views into this batch in place, in one native pass.

        Every residue is range-checked in the pass that adds it; on any error the batch
        is left exactly as it was.
        """
        from .hazmat import kernels

        for i, view in enumerate(views):
            if view.length != self.length:
                raise ParameterMismatchError(f"input {i} has {view.length} values, this batch has {self.length}")
            if view.count != self.count:
                raise ParameterMismatchError(f"input {i} holds {view.count} ciphertexts, this batch {self.count}: "
                                             "slot and dense packing never mix")
        words = [(v.buffer, v.offsets) for v in views if not isinstance(v, packed_wire.PackedView)]
        packed = [(v.buffer, v.offsets) for v in views if isinstance(v, packed_wire.PackedView)]
        moduli = self.params.data_moduli
        backup = self.data.copy() if words and packed else None  # two passes: restore on the second's error
        try:
            if words:
                kernels.sum_ciphertexts(self.data, words, moduli)
            if packed:
                kernels.sum_packed(self.data, packed, moduli)
        except BaseException:
            if backup is not None:
                self.data[...] = backup
            raise
        finally:
            self._digest = None

    def __add__(self, other: "CiphertextBatch") -> "CiphertextBatch":
        if not isinstance(other, CiphertextBatch):
            return NotImplemented
        if other.params != self.params:
            raise ParameterMismatchError("cannot add ciphertexts made under different parameters")
        return CiphertextBatch.sum([self, other], self.params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CiphertextBatch):
            return NotImplemented
        return (self.params == other.params and self.length == other.length and self.packing == other.packing
                and np.array_equal(self.data, other.data))

    __hash__ = None  # type: ignore[assignment]  # mutable array inside

    def __repr__(self) -> str:
        return (
            f"CiphertextBatch({self.length} values in {self.count} ciphertexts ({self.packing}), "
            f"N={self.params.n}, {len(self.params.data_moduli)} primes, digest {self.digest[:6].hex()}…)"
        )


def _meta(params: Params, length: int) -> dict[str, object]:
    return {
        "params": params.fingerprint.hex(),
        "n": params.n,
        "nmod": len(params.data_moduli),
        "length": length,
    }


def _envelope_view(data: object, params: Params, what: str = "he_agg ciphertext batch") -> tenseal.ResidueView:
    """A zero-copy view of an envelope's residues, range-checked later (by the kernel or residues())."""
    env = open_envelope(data, Kind.CIPHERTEXT_BATCH, what)
    return view_from_meta(env.meta, env.body, params, what, check=False, body_hash=env.body_hash)


def view_from_meta(meta: Meta, body: memoryview, params: Params, what: str, *, check: bool = True,
                   body_hash: bytes | None = None) -> tenseal.ResidueView:
    """Check a batch's meta against ``params`` and view its body (shared by richer wire types).

    With ``check=False`` the residues are left for the summing kernel to range-check in
    the same pass that adds them (the view says so: ``checked`` is False).
    """
    if meta.hexbytes("params", 32) != params.fingerprint:
        raise ParameterMismatchError(
            f"{what}: made for other parameters (N={meta.integer('n')}, {meta.integer('nmod')} data primes "
            f"or a different scale); expected {params.describe()}"
        )
    length = meta.integer("length", 1, 1 << 40)
    nmod = len(params.data_moduli)
    shape = (_count_for(length, params, _meta_packing(meta, what)), 2, nmod, params.n)
    if packed_wire.packed_flag(meta, what):
        buffer, offsets = packed_wire.packed_body(body, shape, params.data_moduli, what)
        view = packed_wire.PackedView(buffer, offsets, length, False, body_hash, 2)
        if check:
            view.residues(params, what)  # unpack and range-check (readers that want the array)
        return view
    words = body_words(body, shape, what)
    if check:
        seal.check_residues(words, params.data_moduli, what)
    step = np.uint64(words[0].nbytes)
    return tenseal.ResidueView(words, np.arange(shape[0], dtype=np.uint64) * step, length, check, body_hash)


def residue_view(item: Submission, params: Params, what: str = "encrypted vector") -> tenseal.ResidueView:
    """Validated residues of any accepted encrypted form, located without copying if possible."""
    inner = getattr(item, "ciphertext", None)  # an EncryptedUpdate
    if isinstance(inner, CiphertextBatch):
        item = inner
    if isinstance(item, CiphertextBatch):
        if item.params != params:
            raise ParameterMismatchError(f"{what}: made under other parameters")
        step = np.uint64(item.data[0].nbytes)
        return tenseal.ResidueView(item.data, np.arange(item.count, dtype=np.uint64) * step, item.length, True)
    if hasattr(item, "serialize") and not isinstance(item, (bytes, bytearray, memoryview)):
        item = item.serialize()  # a TenSEAL CKKSVector
    try:
        head = bytes(memoryview(item)[:4])  # type: ignore[arg-type]
    except TypeError:
        raise FormatError(f"{what}: expected a CiphertextBatch, bytes or a TenSEAL CKKSVector, "
                          f"got {type(item).__name__}") from None
    if head == b"HEAG":
        kind = bytes(memoryview(item)[6:8])  # type: ignore[arg-type]
        if kind == Kind.ENCRYPTED_UPDATE.to_bytes(2, "little"):  # an update's meta describes its batch too
            env = open_envelope(item, Kind.ENCRYPTED_UPDATE, what)
            return view_from_meta(env.meta, env.body, params, what, check=False, body_hash=env.body_hash)
        return _envelope_view(item, params, what)
    return tenseal.read_vector(item, params, what)


def residue_digest(params: Params, length: int, residues_hash: bytes) -> bytes:
    """The digest naming an encrypted vector: BLAKE3(domain ‖ parameters ‖ length ‖ D(residues)),
    D the body digest (:mod:`he_agg.hazmat.wire.digest`).

    The residue bytes are (count, 2, L, N) little-endian words in order; hashing them
    once serves both this digest and the wire checksum.
    """
    return blake3.blake3(_DIGEST_DOMAIN + params.fingerprint + struct.pack("<Q", length) + residues_hash).digest()


def view_digest(view: tenseal.ResidueView, params: Params) -> bytes:
    """The digest :attr:`CiphertextBatch.digest` would give, computed on a (zero-copy) view."""
    if isinstance(view, packed_wire.PackedView):  # the digest of the residues, not of their packing
        return residue_digest(params, view.length, view.unpacked_hash(params))
    if view.body_hash is not None:
        return residue_digest(params, view.length, view.body_hash)
    if isinstance(view.buffer, np.ndarray):
        return residue_digest(params, view.length, body_hash(as_bytes(view.buffer)))
    hasher = StreamDigest()
    whole = as_bytes(view.buffer)
    if view.offsets.ndim == 1:
        size = 2 * len(params.data_moduli) * params.n * 8
        for offset in view.offsets.tolist():
            hasher.update(whole[offset : offset + size])
    else:
        for offset, length in view.offsets.reshape(-1, 2).tolist():
            hasher.update(whole[offset : offset + length])
    return residue_digest(params, view.length, hasher.digest())
