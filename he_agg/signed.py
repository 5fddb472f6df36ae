"""Signed he_agg envelopes: protocol messages that prove who sent them.

An envelope's checksum detects corruption, not forgery (anyone can recompute BLAKE3).
Messages whose sender matters — key generation, enrollment, approvals — carry an Ed25519
signature in their meta over the kind, the canonical meta without the signature, and the
body's hash: a relay that edits any byte, or re-seals edited meta, is caught.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import blake3

from .hazmat.wire.envelope import Envelope, Kind, Meta, as_bytes, body_hash, open_envelope, seal_envelope
from .identity import SIGNATURE_BYTES, PartyIdentity, verify_signature

__all__ = ["open_signed", "seal_signed", "signed_digest"]

_DOMAIN = b"he_agg.signed-envelope.v1"


def signed_digest(kind: Kind, meta: Mapping[str, Any], hashed_body: bytes) -> bytes:
    """What a signed envelope's signature covers: kind, canonical meta (minus the signature), body hash."""
    unsigned = {k: v for k, v in meta.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return blake3.blake3(int(kind).to_bytes(2, "little") + len(canonical).to_bytes(4, "little") + canonical
                         + hashed_body).digest()


def seal_signed(kind: Kind, meta: Mapping[str, Any], body: Any, identity: PartyIdentity) -> bytes:
    """An envelope whose meta carries ``signature``: the sender's Ed25519 signature."""
    view = as_bytes(body) if not isinstance(body, bytes) else memoryview(body)
    digest = signed_digest(kind, meta, body_hash(view))
    signed = dict(meta)
    signed["signature"] = identity.sign(_DOMAIN, digest).hex()
    return seal_envelope(kind, signed, view)


def open_signed(data: object, kind: Kind, what: str, signer: Callable[[Meta], bytes]) -> Envelope:
    """Open an envelope and verify its signature against ``signer(meta)``, the expected key.

    ``signer`` reads the claimed sender from the meta and returns that sender's verify key
    from a roster (raising FormatError for an unknown sender).
    """
    env = open_envelope(data, kind, what)
    key = signer(env.meta)
    signature = env.meta.hexbytes("signature", SIGNATURE_BYTES)
    digest = signed_digest(kind, env.meta.as_dict(), env.body_hash)
    verify_signature(key, _DOMAIN, digest, signature, what)
    return env
