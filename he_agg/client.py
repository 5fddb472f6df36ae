"""The client side: pack an update, weight it, encrypt it under the committee's key.

:func:`encrypt` flattens a model update (numpy arrays, a dict, a torch state_dict) into
slots contiguously across layers, optionally clips it, multiplies it by the client's
weight and puts the weight in a reserved slot (so the server never sees a per-client
weight), checks that the sum of ``max_clients`` such updates cannot wrap around, and
encrypts with TenSEAL under the committee's public context — one TenSEAL vector of N/2
values per ciphertext, so TenSEAL never prints its long-vector warning.

``packing="dense"`` puts N values per ciphertext (value k in coefficient k, exact encoding)
and encrypts with he_agg's native public-key encryptor (:mod:`he_agg.hazmat.pkenc`, SEAL's
procedure): half the bytes per value of slots, no √(N/2) in the decoding error. The layout
records the packing, so a round refuses a mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .ciphertext import CiphertextBatch, view_from_meta
from .context import PublicContext
from .errors import FormatError, ShareBindingError
from .hazmat import pkenc
from .hazmat.sampling import KeyedStream
from .hazmat.wire import packed as packed_wire
from .hazmat.wire import tenseal as tenseal_wire
from .hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from .packing import Layout, PackingMismatchError, apply_weight, check_range, clip, flatten
from .requests import MAX_CLIENT_ID, check_client_id, check_round_id

__all__ = ["EncryptedUpdate", "UpdateHeader", "encrypt", "encrypt_dense", "encrypt_slots", "open_update"]

DEFAULT_MAX_CLIENTS = 10_000


class EncryptedUpdate:
    """One client's encrypted contribution to one round, with its layout manifest."""

    __slots__ = ("client_id", "round_id", "committee_id", "layout", "ciphertext")

    def __init__(self, client_id: str, round_id: int, committee_id: bytes, layout: Layout,
                 ciphertext: CiphertextBatch) -> None:
        check_client_id(client_id)
        check_round_id(round_id)
        if ciphertext.length != layout.length:
            raise ValueError(f"the ciphertext holds {ciphertext.length} values, the layout {layout.length}")
        if ciphertext.count != layout.ciphertexts(ciphertext.params):
            raise PackingMismatchError(f"the ciphertext has {ciphertext.count} ciphertexts; the layout "
                                       f"({layout.packing} packing) needs {layout.ciphertexts(ciphertext.params)}")
        self.client_id = client_id
        self.round_id = round_id
        self.committee_id = committee_id
        self.layout = layout
        self.ciphertext = ciphertext

    @property
    def digest(self) -> bytes:
        return self.ciphertext.digest

    def to_bytes(self, *, packed: bool = False) -> bytes:
        """The update's envelope; ``packed=True`` stores each residue in bitlen(q) bits
        (:meth:`CiphertextBatch.to_bytes`), summed in place by the aggregator's kernel."""
        params = self.ciphertext.params
        meta = {
            "client": self.client_id,
            "round": self.round_id,
            "committee": self.committee_id.hex(),
            "layout": self.layout.to_json(),
            "params": params.fingerprint.hex(),
            "n": params.n,
            "nmod": len(params.data_moduli),
            "length": self.ciphertext.length,
        }
        if not packed:
            return seal_envelope(Kind.ENCRYPTED_UPDATE, meta, self.ciphertext.data)
        meta["packed"] = True
        return seal_envelope(Kind.ENCRYPTED_UPDATE, meta, packed_wire.pack_residues(self.ciphertext.data,
                                                                                    params.data_moduli))

    @classmethod
    def from_bytes(cls, data: object, context: PublicContext) -> "EncryptedUpdate":
        """Parse and fully validate (residues range-checked here)."""
        update, view = open_update(data, context, check=True)
        return cls(update.client_id, update.round_id, update.committee_id, update.layout,
                   CiphertextBatch(context.params, view.residues(context.params), view.length, update.layout.packing))

    def __repr__(self) -> str:
        return (f"EncryptedUpdate(client {self.client_id!r}, round {self.round_id}, "
                f"{self.layout.values} values, {self.ciphertext.count} ciphertexts)")


@dataclass(frozen=True)
class UpdateHeader:
    """The validated meta of an encrypted update: who, which round, which committee, what layout."""

    client_id: str
    round_id: int
    committee_id: bytes
    layout: Layout


def open_update(data: object, context: PublicContext, *, check: bool) -> tuple[UpdateHeader, tenseal_wire.ResidueView]:
    """Validate an encrypted update's envelope and meta; view its residues without copying.

    With ``check=False`` the residues are range-checked later, by the summing kernel.
    """
    what = "he_agg encrypted update"
    env = open_envelope(data, Kind.ENCRYPTED_UPDATE, what)
    meta = env.meta
    if meta.hexbytes("committee", 32) != context.committee_id:
        raise ShareBindingError(f"{what}: encrypted for another committee")
    client_id = meta.text("client", MAX_CLIENT_ID)
    if not client_id:
        raise FormatError(f"{what}: empty client id")
    header = UpdateHeader(client_id, meta.integer("round"), context.committee_id, Layout.from_json(meta.raw("layout")))
    view = view_from_meta(meta, env.body, context.params, what, check=check, body_hash=env.body_hash)
    if view.length != header.layout.length:
        raise FormatError(f"{what}: {view.length} values but the layout describes {header.layout.length}")
    return header, view


def encrypt_slots(context: PublicContext, slots: np.ndarray) -> CiphertextBatch:
    """Encrypt a float vector of slot values with TenSEAL under the committee's key."""
    params = context.params
    values = np.ascontiguousarray(slots, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("nothing to encrypt")
    ctx = context.to_tenseal()
    import tenseal as ts

    batch = CiphertextBatch.zeros(params, values.size)
    step = params.slots
    for c in range(batch.count):
        chunk = values[c * step : (c + 1) * step]
        blob = ts.ckks_vector(ctx, chunk.tolist()).serialize()
        batch.data[c] = tenseal_wire.read_vector(blob, params, "TenSEAL output").residues(params)[0]
    return batch


def encrypt_dense(context: PublicContext, values: np.ndarray, *, stream: KeyedStream | None = None) -> CiphertextBatch:
    """Encrypt a float vector densely (N values per ciphertext) with the native encryptor.

    ``stream``: randomness (default a fresh CSPRNG stream; pass one only in tests).
    """
    params = context.params
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    data = pkenc.encrypt_dense(context.public_key, flat, params, stream=stream)
    return CiphertextBatch(params, data, flat.size, "dense")


def encrypt(context: PublicContext, update: Any, *, client_id: str, round_id: int, weight: float | None = None,
            clip_l2: float | None = None, clip_value: float | None = None,
            max_clients: int = DEFAULT_MAX_CLIENTS, packing: str = "slots") -> EncryptedUpdate:
    """Encrypt a client's update for one round.

    ``update``: a numpy array, a list/tuple or dict of arrays, or a torch state_dict.
    ``weight`` (e.g. the number of local examples): with it the round releases the
    weighted mean Σw·x / Σw and the total weight; without it, the plain sum.
    ``clip_value`` / ``clip_l2``: clip the flattened update before weighting.
    ``max_clients``: the most contributions the round may sum; every slot must stay
    below 2^(headroom−1)/max_clients so the sum cannot wrap around.
    ``packing``: "slots" (TenSEAL, N/2 values per ciphertext) or "dense" (the native
    encryptor, N values per ciphertext); anything else raises
    :class:`~he_agg.errors.PackingError`. The layout records it.
    """
    vector, layout = flatten(update, weighted=weight is not None, packing=packing)
    if clip_l2 is not None or clip_value is not None:
        vector = clip(vector, l2=clip_l2, value=clip_value)
    slots = apply_weight(vector, layout, weight) if weight is not None else vector
    check_range(slots, context.params, max_clients)
    batch = encrypt_dense(context, slots) if layout.dense else encrypt_slots(context, slots)
    return EncryptedUpdate(client_id, round_id, context.committee_id, layout, batch)
