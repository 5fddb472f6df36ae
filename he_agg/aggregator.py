"""The server side of one round: accept encrypted updates, sum them as they arrive,
ask the committee to decrypt the sum, and return the result in the clients' structure.

The aggregator is untrusted: it never holds a key. It validates every submission
(committee, round, parameters, layout, residues), refuses a second submission from the
same client id, and adds each one into a single accumulator with the native kernel the
moment it arrives — memory holds the accumulator plus the submission being added. A
submission that fails any check (including a residue ≥ its prime, found by the kernel
in the same pass that adds) leaves the accumulator exactly as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .ciphertext import CiphertextBatch, Submission, residue_view, view_digest
from .client import EncryptedUpdate, open_update
from .committee import combine
from .context import PublicContext
from .errors import (
    AggregationError,
    DuplicateContributionError,
    HeAggError,
    ParameterMismatchError,
    RoundMismatchError,
    ShareBindingError,
    TooFewContributorsError,
)
from .hazmat.wire.envelope import Kind
from .hazmat.wire.tenseal import ResidueView
from .packing import Layout, PackingMismatchError, check_layout, unflatten, weighted_mean
from .requests import Contribution, DecryptionRequest, DecryptionShare, EnrolledRequest, check_min_clients, check_round_id

__all__ = ["AggregateResult", "Aggregator", "EnrolledAggregator"]


@dataclass(frozen=True)
class AggregateResult:
    """What a finished round released."""

    value: Any  # weighted mean (weighted layouts) or sum, in the clients' structure
    total_weight: float | None  # Σ weights for weighted layouts
    contributors: tuple[str, ...]
    slots: np.ndarray  # the decrypted slot vector (sum of weighted updates + weight slot)
    faulty: int | None = None  # finalize(robust=True): the member excluded as faulty, if any
    epsilon: float | None = None  # a DP round (dp=): ε of this release at ``delta``
    delta: float | None = None
    noise_std: float | None = None  # a DP round: std of the DP noise per released slot


class _CrashSafe:
    """The ``state_dir`` side shared by both aggregators (:mod:`he_agg.ledger`): attach a
    :class:`~he_agg.ledger.RoundStore`, resume from it, reopen, close. Subclasses define
    ``_resume()`` (rebuild the sum, contributors, layout and request from the store) and
    ``_open_kwargs(identity)`` (constructor arguments recorded in the ledger)."""

    context: Any
    layout: Layout | None
    _store: Any

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], context: Any, **kwargs: Any) -> Any:
        """Resume the round kept in ``state_dir`` (after a crash or a restart): every acknowledged
        upload counted once, an issued request reissued byte for byte."""
        from .ledger import RoundStore

        store = RoundStore(state_dir, committee_id=context.committee_id, fingerprint=context.params.fingerprint)
        identity = store.identity
        store.close()
        from .context import EnrolledContext

        kind = EnrolledAggregator if isinstance(context, EnrolledContext) else cls  # as Aggregator(...) dispatches
        return kind(context, int(identity["round"]), **kind._open_kwargs(identity), **kwargs, state_dir=state_dir)

    @staticmethod
    def _open_kwargs(identity: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _resume(self) -> None:
        raise NotImplementedError

    def _attach(self, state_dir: str | os.PathLike[str], identity: dict[str, Any]) -> None:
        from .ledger import RoundStore

        self._store = RoundStore(state_dir, committee_id=self.context.committee_id,
                                 fingerprint=self.context.params.fingerprint, identity=identity)
        try:
            given = self.layout
            if given is not None:
                self._store.fix_layout(_layout_text(given))
            self._resume()
            if given is not None and self.layout is not None:
                check_layout(self.layout, given)  # the round on disk was made for another layout
        except BaseException:
            self._store.close()
            self._store = None
            raise

    def close(self) -> None:
        """Release ``state_dir`` (its lock and ledger); the round stays on disk for :meth:`open`. Idempotent."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Aggregator(_CrashSafe):
    """One round of aggregation for one committee. Not thread-safe: call from one thread.

    ``layout``: the expected layout; by default the first submission's. Raw TenSEAL or
    he_agg ciphertexts (which carry no layout) need it, and a ``client_id`` each.
    ``retain``: keep every accepted submission, for decryptors whose policy verifies
    the aggregate (:attr:`contributions`; the default policy does); costs one
    submission's memory per client.
    ``state_dir``: keep the round crash-safe there (:mod:`he_agg.ledger`): ``add`` returns
    once the submission is durable; an existing round in it is resumed (round and minimum
    must match), :meth:`open` reopens one. With ``retain`` each upload's bytes are kept
    there too (members that verify the aggregate need them after a restart).
    """

    def __new__(cls, context: Any, *args: Any, **kwargs: Any) -> Any:
        """``Aggregator(enrolled_context, …)`` makes an :class:`EnrolledAggregator`."""
        from .context import EnrolledContext

        if cls is Aggregator and isinstance(context, EnrolledContext):
            return EnrolledAggregator(context, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, context: PublicContext, round_id: int, *, min_clients: int = 1,
                 layout: Layout | None = None, retain: bool = True, state_dir: Any = None, dp: Any = None) -> None:
        check_round_id(round_id)
        check_min_clients(min_clients)
        self.context = context
        self.round_id = round_id
        self.min_clients = min_clients
        self.layout = layout
        self._retain = retain
        self.dp = dp  # a he_agg.dp.DPSpec: ask the committee for a DP release
        self._accumulator: CiphertextBatch | None = None
        self._contributions: dict[str, bytes] = {}
        self._retained: dict[str, Submission] = {}
        self._request: DecryptionRequest | None = None
        self._store: Any = None
        self.result: AggregateResult | None = None
        if state_dir is not None:
            self._attach(state_dir, {"mode": "public", "epoch": 0, "round": round_id, "min_clients": min_clients,
                                     "retain": retain})

    # -- submissions -----------------------------------------------------------------------

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(self._contributions)

    def __len__(self) -> int:
        return len(self._contributions)

    @property
    def contributions(self) -> Mapping[str, Submission]:
        """The accepted submissions by client id (only with ``retain=True``)."""
        if not self._retain:
            raise AggregationError("this aggregator does not retain submissions; create it with retain=True")
        return dict(self._retained)

    def add(self, submission: Submission, *, client_id: str | None = None) -> Contribution:
        """Validate one submission and add it to the running sum; returns its contribution record.

        Accepts an :class:`~he_agg.client.EncryptedUpdate` or its bytes (which name their
        client, round and layout), or — with ``client_id`` — a TenSEAL ``CKKSVector``, its
        bytes, a :class:`~he_agg.ciphertext.CiphertextBatch` or its bytes.
        """
        if self._request is not None:
            raise AggregationError(f"round {self.round_id} is closed: its decryption request was issued")
        who, layout, view = self._open(submission, client_id)
        if who in self._contributions:
            raise DuplicateContributionError(f"client {who!r} already contributed to round {self.round_id}")
        if self.layout is None:
            self.layout = layout
        elif layout is not None:
            check_layout(layout, self.layout)
        if self.layout is None:
            raise AggregationError("the first submission carries no layout: pass layout= to the Aggregator")
        if view.length != self.layout.length:
            raise ParameterMismatchError(f"client {who!r} sent {view.length} values; the round expects {self.layout.length}")
        params = self.context.params
        if view.count != self.layout.ciphertexts(params):  # raw ciphertexts packed the other way
            raise PackingMismatchError(f"client {who!r} sent {view.count} ciphertexts; this round is packed as "
                                       f"{self.layout.packing!r} ({self.layout.ciphertexts(params)} ciphertexts): "
                                       "a round never mixes slot and dense packing")
        digest = view_digest(view, params)
        self._sum(view)  # range-checks as it adds; untouched on error
        if self._store is not None:
            self._record(who, digest, submission)
        self._contributions[who] = digest
        if self._retain:
            self._retained[who] = submission
        return Contribution(who, digest)

    def _sum(self, view: ResidueView) -> None:
        """Add one admitted view to the running sum, all or nothing (he_agg.dask sums it on workers)."""
        assert self.layout is not None
        accumulator = self._accumulator or CiphertextBatch.zeros(self.context.params, view.length, self.layout.packing)
        accumulator.accumulate([view])
        self._accumulator = accumulator

    # -- crash safety ------------------------------------------------------------------------

    @staticmethod
    def _open_kwargs(identity: dict[str, Any]) -> dict[str, Any]:
        return {"min_clients": int(identity["min_clients"]), "retain": bool(identity["retain"])}

    def _record(self, who: str, digest: bytes, submission: Submission) -> None:
        """Make one added submission durable (its bytes if retained, its ledger row, the checkpoint)."""
        assert self._accumulator is not None and self.layout is not None
        try:
            if self._retain:
                self._store.keep_upload(digest, _submission_bytes(submission))
            self._store.record(who, digest + who.encode(), digest, _layout_text(self.layout), self._accumulator.data)
        except BaseException:
            self._resume()  # the in-memory sum already holds the submission: reload what is durable
            raise

    def _resume(self) -> None:
        """Rebuild the sum, contributors (in arrival order), layout and any issued request from ``state_dir``."""
        params = self.context.params

        def shape_of(layout_json: str) -> tuple[int, int, int, int]:
            layout = Layout.from_json(json.loads(layout_json))
            return (layout.ciphertexts(params), 2, len(params.data_moduli), params.n)

        found = self._store.recover(shape_of)
        self._accumulator, self._request = None, None
        self._contributions, self._retained = {}, {}
        if found.layout is not None:
            self.layout = Layout.from_json(json.loads(found.layout))
        if found.acc is not None:
            assert self.layout is not None
            accumulator = CiphertextBatch.zeros(params, self.layout.length, self.layout.packing)
            accumulator.data[...] = found.acc  # restored state, checksummed by the checkpoint
            self._accumulator = accumulator
        for row in found.tickets:
            digest, who = row[:32], row[32:].decode()
            self._contributions[who] = digest
            if self._retain:
                self._retained[who] = self._store.load_upload(digest)
        if found.active_sets is not None:
            self.decryption_request(found.active_sets)

    def _open(self, submission: Submission, client_id: str | None) -> tuple[str, Layout | None, ResidueView]:
        params = self.context.params
        if isinstance(submission, EncryptedUpdate):
            return self._check_header(submission.client_id, submission.round_id, submission.committee_id,
                                      client_id), submission.layout, residue_view(submission.ciphertext, params)
        if _envelope_kind(submission) == Kind.ENCRYPTED_UPDATE:
            header, view = open_update(submission, self.context, check=False)  # the kernel checks residues
            return self._check_header(header.client_id, header.round_id, header.committee_id,
                                      client_id), header.layout, view
        if client_id is None:
            raise AggregationError("raw ciphertexts carry no client id: pass client_id=")
        return client_id, None, residue_view(submission, params, f"submission of {client_id!r}")

    def _check_header(self, who: str, round_id: int, committee_id: bytes, client_id: str | None) -> str:
        if committee_id != self.context.committee_id:
            raise ShareBindingError(f"client {who!r} encrypted for another committee")
        if round_id != self.round_id:
            raise RoundMismatchError(f"client {who!r} sent an update for round {round_id}; this is round {self.round_id}")
        if client_id is not None and client_id != who:
            raise AggregationError(f"the update names client {who!r}, not {client_id!r}")
        return who

    # -- decryption ------------------------------------------------------------------------

    def decryption_request(self, active_sets: Sequence[Sequence[int]] | None = None) -> DecryptionRequest:
        """Close the round and name what the committee is asked to decrypt, and which active sets answer.

        ``active_sets`` (default: members 0 … t−1) is fixed by the first call: members
        approve exactly one request per round, so the request never changes afterwards.
        """
        if self._request is not None and active_sets is not None:
            sets = tuple(tuple(sorted(a)) for a in active_sets)
            if sets != self._request.active_sets:
                raise AggregationError(f"round {self.round_id}'s request already names the active sets "
                                       f"{[list(a) for a in self._request.active_sets]}; start a new round to change them")
        if self._request is None:
            if len(self) < self.min_clients:
                raise TooFewContributorsError(
                    f"round {self.round_id} has {len(self)} contributions; at least {self.min_clients} are required")
            assert self._accumulator is not None and self.layout is not None
            contributions = [Contribution(k, v) for k, v in self._contributions.items()]
            request = DecryptionRequest(self.context, self.round_id, self._accumulator, contributions,
                                        self.layout.to_json(), active_sets, dp=self.dp)
            if self._store is not None:  # durable before the request can leave: a restart reissues it
                self._store.close_round([list(a) for a in request.active_sets])
            self._request = request
        return self._request

    def finalize(self, shares: Sequence[DecryptionShare | bytes], *, robust: bool = False) -> Any:
        """Combine the committee's shares; return the weighted mean (or sum) in the clients' structure.

        ``robust=True``: one member named faulty is excluded instead of raising; the result
        records it in ``self.result.faulty`` (see :func:`~he_agg.committee.combine_phase`).
        """
        request = self.decryption_request()
        assert self.layout is not None
        self.result = _released(combine(request, shares, robust=robust), self.layout, self.contributors)
        return self.result.value

    def __repr__(self) -> str:
        state = "closed" if self._request is not None else "open"
        return f"Aggregator(round {self.round_id}, {len(self)} contributions, {state})"


def _result(slots: np.ndarray, layout: Layout, contributors: tuple[str, ...]) -> AggregateResult:
    """The released slots in the clients' structure: the weighted mean for weighted layouts, else the sum."""
    if layout.weighted:
        mean, total = weighted_mean(slots, layout)
        return AggregateResult(unflatten(mean, layout), total, contributors, slots)
    return AggregateResult(unflatten(slots, layout), None, contributors, slots)


def _layout_text(layout: Layout) -> str:
    """The layout as canonical JSON text (how a round's ledger stores it)."""
    return json.dumps(layout.to_json(), sort_keys=True, separators=(",", ":"))


def _released(combined: Any, layout: Layout, contributors: tuple[str, ...]) -> AggregateResult:
    """:func:`_result` of a combine's output: plain values, or a robust (values, faulty) report."""
    from .committee import Combined
    from .dp import DPRelease

    if isinstance(combined, DPRelease):
        return dataclasses.replace(_result(combined.values, layout, contributors), faulty=combined.faulty,
                                   epsilon=combined.epsilon, delta=combined.delta, noise_std=combined.noise_std)
    if isinstance(combined, Combined):
        return dataclasses.replace(_result(combined.values, layout, contributors), faulty=combined.faulty)
    return _result(combined, layout, contributors)


def _submission_bytes(submission: Submission) -> bytes:
    """A submission as the bytes it arrived as (or would have): what a retained round keeps on disk."""
    if isinstance(submission, (bytes, bytearray, memoryview)):
        return bytes(submission)
    if isinstance(submission, (EncryptedUpdate, CiphertextBatch)):
        return submission.to_bytes()
    serialize = getattr(submission, "serialize", None)  # a TenSEAL CKKSVector
    if callable(serialize):
        return bytes(serialize())
    raise AggregationError(f"cannot keep a {type(submission).__name__} submission in state_dir")


def _envelope_kind(submission: object) -> int | None:
    """The he_agg envelope kind of a byte submission, or None for anything else."""
    if not isinstance(submission, (bytes, bytearray, memoryview)):
        return None
    head = bytes(memoryview(submission)[:8])
    if len(head) < 8 or head[:4] != b"HEAG":
        return None
    return int.from_bytes(head[6:8], "little")


class EnrolledAggregator(_CrashSafe):
    """One round of an enrolled-client committee: sum the c0-only uploads, name τ_r, decode.

    Same surface as :class:`Aggregator` (``Aggregator(enrolled_context, ...)`` returns one).
    ``epoch``: the committee's key epoch. ``client_keys``: optionally, a lookup client id →
    verify key to refuse uploads with bad tickets on arrival (members check them anyway).
    """

    def __init__(self, context: Any, round_id: int, *, epoch: int = 0, min_clients: int = 3,
                 layout: Layout | None = None, client_keys: Any = None,
                 state_dir: str | os.PathLike[str] | None = None, dp: Any = None) -> None:
        """``state_dir``: keep the round crash-safe there (:mod:`he_agg.ledger`); an existing
        round in it is resumed (its epoch, round and minimum must match). ``dp``: a
        :class:`~he_agg.dp.DPSpec` to ask for a DP release (pass the same one to :meth:`open`)."""
        check_round_id(round_id)
        check_round_id(epoch)
        check_min_clients(min_clients)
        self.context = context
        self.round_id = round_id
        self.epoch = epoch
        self.min_clients = min_clients
        self.layout = layout
        self._keys = client_keys
        self.dp = dp
        self._accumulator: Any = None
        self._request: EnrolledRequest | None = None
        self._store: Any = None
        self.result: AggregateResult | None = None
        if state_dir is not None:
            self._attach(state_dir, {"epoch": epoch, "round": round_id, "min_clients": min_clients})

    @staticmethod
    def _open_kwargs(identity: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": int(identity["epoch"]), "min_clients": int(identity["min_clients"])}

    @property
    def contributors(self) -> tuple[str, ...]:
        return () if self._accumulator is None else self._accumulator.contributors

    def __len__(self) -> int:
        return len(self.contributors)

    def add(self, upload: Any) -> Any:
        """Validate one upload (bytes or :class:`~he_agg.enrolled.EnrolledUpload`) and add its c0; returns its ticket.

        With ``state_dir`` it returns only once the upload is durable (ledger row and checkpoint).
        """
        from .enrolled import C0Accumulator, EnrolledUpload, OpenedUpload, blame_bytes, open_upload

        if self._request is not None:
            raise AggregationError(f"round {self.round_id} is closed: its decryption request was issued")
        if self._accumulator is None:
            if not isinstance(upload, EnrolledUpload):  # opened once: the accumulator takes it as is
                upload = open_upload(upload, self.context.params, self.context.committee_id,
                                     verify_key=None, epoch=self.epoch, round_id=self.round_id, check=False,
                                     defer_body=self._hashes_in_sum)
            layout = upload.layout
            if self.layout is not None:
                try:
                    check_layout(layout, self.layout)
                except HeAggError:
                    blame_bytes(upload.check_body if isinstance(upload, OpenedUpload) else None, upload.c0)
                    raise
            self._accumulator = self._new_accumulator(C0Accumulator, self.layout or layout)
            try:
                ticket = self._accumulator.add(upload)
            except BaseException:
                self._accumulator = None  # a refused first upload leaves no trace (not even its layout)
                raise
        else:
            ticket = self._accumulator.add(upload)
        self.layout = self._accumulator.layout
        if self._store is not None:
            try:
                self._store.record(ticket.client_id, ticket.to_bytes(), ticket.c0_digest, _layout_text(self.layout),
                                   self._accumulator._acc)
            except BaseException:
                self._resume()  # the in-memory sum already holds the upload: reload what is durable
                raise
        return ticket

    #: The round's accumulator hashes each upload's body in its summing pass (he_agg.dask: False).
    _hashes_in_sum = True

    def _new_accumulator(self, kind: Any, layout: Layout) -> Any:
        """The round's c0 accumulator (``kind``: C0Accumulator, or he_agg.dask's sharded subclass)."""
        return kind(self.context.params, layout.length, committee_id=self.context.committee_id, epoch=self.epoch,
                    round_id=self.round_id, layout=layout, verify_key=self._keys)

    # -- crash safety ------------------------------------------------------------------------

    def _resume(self) -> None:
        """Rebuild the accumulator, tickets, layout and any issued request from ``state_dir``."""
        from .enrolled import C0Accumulator, ciphertext_count

        params = self.context.params

        def shape_of(layout_json: str) -> tuple[int, int, int, int]:
            layout = Layout.from_json(json.loads(layout_json))
            return (ciphertext_count(layout.length, params, layout.packing), 1, len(params.data_moduli), params.n)

        found = self._store.recover(shape_of)
        self._accumulator = None
        self._request = None
        if found.layout is not None:
            self.layout = Layout.from_json(json.loads(found.layout))
        if found.acc is not None:
            assert self.layout is not None
            acc = C0Accumulator(params, self.layout.length, committee_id=self.context.committee_id, epoch=self.epoch,
                                round_id=self.round_id, layout=self.layout, verify_key=self._keys)
            acc.restore(found.acc, found.tickets)  # the sum is checksummed by the checkpoint
            self._accumulator = acc
        if found.active_sets is not None:
            self.decryption_request(found.active_sets)

    def decryption_request(self, active_sets: Sequence[Sequence[int]] | None = None) -> EnrolledRequest:
        """Close the round; τ_r names the contributors' tickets, the layout, Σc0's digest and the active sets."""
        from .enrolled import c0_digest
        from .hazmat.wire.envelope import as_bytes, body_hash

        if self._request is not None:
            if active_sets is not None and tuple(tuple(sorted(a)) for a in active_sets) != self._request.active_sets:
                raise AggregationError(f"round {self.round_id}'s request already names other active sets; start a "
                                       "new round to change them")
            return self._request
        if len(self) < self.min_clients:
            raise TooFewContributorsError(
                f"round {self.round_id} has {len(self)} contributions; at least {self.min_clients} are required")
        acc = self._accumulator
        assert acc is not None and self.layout is not None
        total = np.ascontiguousarray(acc.sum)
        digest = c0_digest(self.context.params, self.layout.length, body_hash(as_bytes(total)))
        tickets = {t.client_id: t.to_bytes() for t in acc.tickets}
        request = EnrolledRequest(self.context, self.epoch, self.round_id, tickets, self.layout.to_json(),
                                  total.shape[0], digest, active_sets, dp=self.dp)
        if self._store is not None:  # durable before the request can leave: a restart reissues it
            self._store.close_round([list(a) for a in request.active_sets])
        self._request = request
        return request

    def finalize(self, shares: Sequence[DecryptionShare | bytes], *, robust: bool = False) -> Any:
        """Combine the members' shares; return the weighted mean (or sum) in the clients' structure.

        ``robust=True``: one member named faulty is excluded instead of raising; the result
        records it in ``self.result.faulty`` (see :func:`~he_agg.committee.combine_phase`).
        """
        from .committee import _combine_enrolled

        request = self.decryption_request()
        assert self.layout is not None and self._accumulator is not None
        # the request was made from this sum, which a closed round no longer changes: not hashed again
        combined = _combine_enrolled(request, self._accumulator.sum, shares, robust=robust, digest_checked=True)
        self.result = _released(combined, self.layout, self.contributors)
        return self.result.value

    def __repr__(self) -> str:
        state = "closed" if self._request is not None else "open"
        return f"EnrolledAggregator(epoch {self.epoch}, round {self.round_id}, {len(self)} uploads, {state})"
