"""Scale-out summing on a Dask cluster: :class:`ShardedAggregator`.

A round's ciphertexts are cut by index range into shards, one per Dask worker (or more).
The process that runs the aggregator (the *driver*) validates each upload exactly as
:class:`~he_agg.aggregator.Aggregator` does — envelope, committee, round, layout, ticket,
digest, duplicates — then cuts its residue bytes into the shards' byte ranges and sends
each range straight to the worker that holds the shard (``Client.scatter(direct=True)``:
the bytes never pass through the scheduler), or — with ``store=`` — writes them once to a
shared folder from which each worker maps its range. The worker adds them to its shard sum with
the native kernel, which range-checks every residue in the same pass.

Atomicity across shards: a worker never changes a shard sum in place. Each add makes a
*new* shard sum (copy + add) and the driver swaps in the new sums only when every shard
succeeded; if any shard refuses the upload (a residue ≥ its prime), the new sums are
dropped and the old ones stay — the upload is refused and nothing is lost. The cost is one
shard-sized copy per add on the worker.

Only bytes cross the wire (numpy uint8/uint64 arrays, ints, tuples): never a pickled he_agg
object. Workers need he_agg importable (its native core built). The request is assembled
from the shard sums in order and is byte-identical to a local aggregator's.

Losing a worker loses its shard sum: the round then fails with :class:`AggregationError`
(run crash-safe rounds with a local ``EnrolledAggregator(state_dir=...)``).

``dask[distributed]`` is an optional extra: ``pip install he_agg[dask]``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Sequence

import numpy as np

from he_agg.aggregator import Aggregator, EnrolledAggregator
from he_agg.ciphertext import CiphertextBatch
from he_agg.context import EnrolledContext
from he_agg.errors import AggregationError, FormatError, HeAggError, ParameterError
from he_agg.hazmat.wire.packed import PackedView
from he_agg.packing import Layout

__all__ = ["ShardedAggregator", "shard_bounds"]


def shard_bounds(count: int, shards: int) -> list[tuple[int, int]]:
    """``count`` ciphertexts cut into ``min(shards, count)`` contiguous, nearly equal, nonempty ranges."""
    parts = max(1, min(shards, count))
    edges = [count * k // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


# -- on the worker ---------------------------------------------------------------------------


def _shard_add(previous: np.ndarray | None, data: np.ndarray, offsets: np.ndarray, packed: bool,
               shape: tuple[int, int, int, int], moduli: tuple[int, ...], threads: int) -> np.ndarray:
    """A new shard sum: ``previous`` (or zeros) + the ciphertexts in ``data`` (a Dask task).

    Never modifies ``previous``: the driver keeps it until every shard accepted the upload.
    Raises the kernel's FormatError / ResidueRangeError on a bad residue.
    """
    from he_agg.hazmat import kernels

    out = np.zeros(shape, dtype=np.uint64) if previous is None else previous.copy()
    with kernels.use_threads(threads):
        if packed:
            kernels.sum_packed(out, [(data, offsets)], moduli)
        else:
            kernels.sum_ciphertexts(out, [(data, offsets)], moduli)
    return out


def _shard_add_stored(previous: np.ndarray | None, path: str, start: int, nbytes: int, offsets: np.ndarray,
                      packed: bool, shape: tuple[int, int, int, int], moduli: tuple[int, ...], threads: int) -> np.ndarray:
    """:func:`_shard_add` of bytes ``start`` … ``start + nbytes`` of a file in the shared store (mapped, not copied)."""
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(nbytes,))
    try:
        return _shard_add(previous, data, offsets, packed, shape, moduli, threads)
    finally:
        del data


# -- on the driver ---------------------------------------------------------------------------


def _byte_array(buffer: Any) -> np.ndarray:
    """Any buffer as a flat uint8 array (no copy)."""
    if isinstance(buffer, np.ndarray):
        return np.ascontiguousarray(buffer).reshape(-1).view(np.uint8)
    return np.frombuffer(buffer, dtype=np.uint8)


def _slice(whole: np.ndarray, offsets: np.ndarray, lo: int, hi: int, ct_bytes: int) -> np.ndarray:
    """Ciphertexts lo…hi−1 as one contiguous byte array (a view when they already lie contiguously)."""
    what = "encrypted vector"
    if offsets.ndim == 1:
        starts = offsets[lo:hi].astype(np.int64)
        if starts.size and (starts.min() < 0 or int(starts.max()) + ct_bytes > whole.size):
            raise FormatError(f"{what}: a ciphertext runs past the end of its buffer")
        first = int(starts[0])
        if np.array_equal(starts - first, np.arange(hi - lo, dtype=np.int64) * ct_bytes):
            return whole[first:first + (hi - lo) * ct_bytes]
        return np.concatenate([whole[s:s + ct_bytes] for s in starts.tolist()])
    pieces = []
    for segments in offsets[lo:hi].tolist():  # (offset, length) pairs of one ciphertext
        if any(o < 0 or n < 0 or o + n > whole.size for o, n in segments) or sum(n for _, n in segments) != ct_bytes:
            raise FormatError(f"{what}: a ciphertext's segments do not hold exactly its residues")
        pieces.extend(whole[o:o + n] for o, n in segments if n)
    return np.concatenate(pieces)


class _Shards:
    """The shard sums of one round, each held by one Dask worker as a future."""

    #: Seconds an add may wait for every shard before the round reports its workers lost.
    timeout = 600.0

    def __init__(self, client: Any, count: int, polys: int, params: Any, shards: int | None, threads: int,
                 store: str | None = None) -> None:
        workers = sorted(client.ncores())  # asked of the scheduler now (scheduler_info() may be stale)
        if not workers:
            raise AggregationError("the Dask cluster has no workers")
        self.client = client
        self.bounds = shard_bounds(count, shards or len(workers))
        self.workers = [workers[k % len(workers)] for k in range(len(self.bounds))]
        self.polys, self.params, self.threads = polys, params, threads
        self.moduli = tuple(int(q) for q in params.data_moduli)
        self.sums: list[Any] = [None] * len(self.bounds)
        self.store = store

    def shape(self, k: int) -> tuple[int, int, int, int]:
        lo, hi = self.bounds[k]
        return (hi - lo, self.polys, len(self.moduli), self.params.n)

    def add(self, buffer: Any, offsets: np.ndarray, packed: bool) -> None:
        """Add one validated view's residues to every shard, all shards or none."""
        from he_agg.hazmat import kernels

        n = self.params.n
        ct_bytes = kernels.packed_ct_bytes(self.polys, n, self.moduli) if packed else self.polys * len(self.moduli) * n * 8
        whole, offsets = _byte_array(buffer), np.asarray(offsets)
        slices = [_slice(whole, offsets, lo, hi, ct_bytes) for lo, hi in self.bounds]
        path = self._stored(slices) if self.store is not None else None
        try:
            self._run(slices, path, ct_bytes, packed)
        finally:
            if path is not None:
                os.unlink(path)

    def _stored(self, slices: list[np.ndarray]) -> str:
        """The slices written one after another to a fresh file in the shared store (0600)."""
        assert self.store is not None
        path = os.path.join(self.store, f"he_agg-upload-{secrets.token_hex(12)}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for data in slices:
                    f.write(memoryview(data))
        except BaseException:
            os.unlink(path)
            raise
        return path

    def _run(self, slices: list[np.ndarray], path: str | None, ct_bytes: int, packed: bool) -> None:
        from distributed import wait

        new, start = [], 0
        for k, ((lo, hi), data) in enumerate(zip(self.bounds, slices)):
            rel = np.arange(hi - lo, dtype=np.uint64) * np.uint64(ct_bytes)
            where = dict(workers=[self.workers[k]], allow_other_workers=False, pure=False)
            task = (rel, packed, self.shape(k), self.moduli, self.threads)
            if path is None:
                sent = self.client.scatter(data, workers=[self.workers[k]], direct=True, hash=False)
                new.append(self.client.submit(_shard_add, self.sums[k], sent, *task, **where))
            else:
                new.append(self.client.submit(_shard_add_stored, self.sums[k], path, start, data.size, *task, **where))
            start += data.size
        try:
            wait(new, timeout=self.timeout)
        except Exception as exc:  # a shard's worker is gone or stuck: the old sums stay
            for f in new:
                f.release()
            raise AggregationError(f"the Dask workers did not sum the upload within {self.timeout} s "
                                   f"({type(exc).__name__}); the round's sums are unchanged") from exc
        failed = [k for k, f in enumerate(new) if f.status != "finished"]
        if failed:
            error = new[failed[0]].exception()
            for f in new:
                f.release()
            raise _located(error, failed[0], self.bounds[failed[0]])
        self.sums = new

    def gather(self) -> np.ndarray:
        """Every shard sum, concatenated in ciphertext order: (count, polys, L, N) uint64."""
        parts = [np.zeros(self.shape(k), dtype=np.uint64) if f is None else None for k, f in enumerate(self.sums)]
        futures = [f for f in self.sums if f is not None]
        try:
            got = iter(self.client.gather(futures))
        except Exception as exc:  # a lost worker: its shard sum is gone
            raise AggregationError(f"a shard sum could not be fetched from its Dask worker: {type(exc).__name__}") from exc
        return np.ascontiguousarray(np.concatenate([p if p is not None else next(got) for p in parts]))


def _located(error: BaseException, shard: int, bounds: tuple[int, int]) -> BaseException:
    """The worker's error for the driver: he_agg errors keep their type, their ciphertext
    numbers made global by naming the shard; anything else becomes an AggregationError."""
    lo, hi = bounds
    if isinstance(error, HeAggError):
        try:
            return type(error)(f"shard {shard} (ciphertexts {lo} to {hi - 1}; numbers below are within it): {error}")
        except Exception:  # an error type with another constructor: as it came
            return error
    located = AggregationError(f"a Dask worker failed while summing shard {shard}: {type(error).__name__}")
    located.__cause__ = error
    return located


def _view_parts(view: Any) -> tuple[Any, np.ndarray, bool]:
    return view.buffer, view.offsets, isinstance(view, PackedView)


def _check_options(client: Any, shards: int | None, threads: int, store: Any) -> str | None:
    """Validate the Dask options; returns ``store`` as an absolute path (or None)."""
    if store is not None and not os.path.isdir(store):
        raise ParameterError(f"store= must be an existing folder that every worker sees, got {str(store)[:200]!r}")
    if client is None:
        raise ParameterError("pass client= (a distributed.Client)")
    if shards is not None and (type(shards) is not int or shards < 1):
        raise ParameterError(f"shards must be a positive integer, got {shards!r}")
    if type(threads) is not int or not 1 <= threads <= 1024:
        raise ParameterError(f"threads must be an integer in [1, 1024], got {threads!r}")
    return None if store is None else os.path.abspath(store)


# -- public-key rounds -----------------------------------------------------------------------


class ShardedAggregator(Aggregator):
    """:class:`~he_agg.aggregator.Aggregator` whose running sum lives on Dask workers, in shards.

    ``ShardedAggregator(context, round_id, client=dask_client, shards=None, threads=1, ...)``
    takes every option of :class:`Aggregator` (or of :class:`EnrolledAggregator` for an
    enrolled context, except ``state_dir``). ``shards``: number of ciphertext ranges
    (default: one per worker); ``threads``: summing threads per worker task; ``store``: a
    folder the driver and every worker see (``/dev/shm`` on one machine, a shared file
    system on a cluster): each upload's ranges are written there once and workers map
    their range, instead of receiving it by ``scatter``.
    """

    def __new__(cls, context: Any, *args: Any, **kwargs: Any) -> Any:
        if cls is ShardedAggregator and isinstance(context, EnrolledContext):
            return ShardedEnrolledAggregator(context, *args, **kwargs)
        return object.__new__(cls)

    def __init__(self, context: Any, round_id: int, *, client: Any = None, shards: int | None = None,
                 threads: int = 1, store: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._store_dir = _check_options(client, shards, threads, store)
        super().__init__(context, round_id, **kwargs)
        self._client, self._shard_count, self._threads = client, shards, threads
        self._shards: _Shards | None = None

    def _sum(self, view: Any) -> None:
        if self._shards is None:
            self._shards = _Shards(self._client, view.count, 2, self.context.params, self._shard_count, self._threads,
                                   self._store_dir)
        self._shards.add(*_view_parts(view))

    def decryption_request(self, active_sets: Sequence[Sequence[int]] | None = None) -> Any:
        if self._request is None and self._shards is not None and len(self) >= self.min_clients:
            assert self.layout is not None
            self._accumulator = CiphertextBatch(self.context.params, self._shards.gather(), self.layout.length,
                                                self.layout.packing)
        return super().decryption_request(active_sets)

    def __repr__(self) -> str:
        return "Sharded" + super().__repr__()


# -- enrolled rounds -------------------------------------------------------------------------


def _sharded_c0_type() -> type:
    """C0Accumulator's sharded subclass (defined lazily: he_agg.enrolled imports heavy modules)."""
    global _SHARDED_C0
    if _SHARDED_C0 is not None:
        return _SHARDED_C0
    from he_agg.enrolled import C0Accumulator

    class ShardedC0Accumulator(C0Accumulator):
        """:class:`C0Accumulator` whose every check runs in the driver; the sum happens on the shards."""

        shards: _Shards | None = None
        _gathered: int = -1
        _hashes_in_sum = False  # the driver hashes each upload; the shards only sum

        def setup(self, client: Any, shards: int | None, threads: int, store: str | None) -> None:
            self.shards = _Shards(client, self._acc.shape[0], 1, self.params, shards, threads, store)

        @property
        def sum(self) -> np.ndarray:
            assert self.shards is not None
            if self._gathered != len(self):
                self._acc[...] = self.shards.gather()
                self._gathered = len(self)
            view = self._acc[:, 0]
            view.flags.writeable = False
            return view

        def _sum(self, c0: Any) -> None:
            assert self.shards is not None
            if isinstance(c0, PackedView):
                self.shards.add(c0.buffer, c0.offsets, True)
            else:
                c0 = np.ascontiguousarray(c0)
                step = np.uint64(c0[0].nbytes)
                self.shards.add(c0, np.arange(c0.shape[0], dtype=np.uint64) * step, False)

    _SHARDED_C0 = ShardedC0Accumulator
    return _SHARDED_C0


_SHARDED_C0: type | None = None


class ShardedEnrolledAggregator(EnrolledAggregator):
    """:class:`~he_agg.aggregator.EnrolledAggregator` whose Σc0 lives on Dask workers, in shards.

    Made by ``ShardedAggregator(enrolled_context, ...)``. No ``state_dir``: a sharded round
    lives in the cluster's memory.
    """

    def __init__(self, context: Any, round_id: int, *, client: Any = None, shards: int | None = None,
                 threads: int = 1, store: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._store_dir = _check_options(client, shards, threads, store)
        if kwargs.get("state_dir") is not None:
            raise AggregationError("a sharded round lives in the cluster's memory: state_dir= is for local rounds")
        super().__init__(context, round_id, **kwargs)
        self._client, self._shard_count, self._threads = client, shards, threads

    _hashes_in_sum = False  # the driver hashes each upload; the shards only sum

    def _new_accumulator(self, kind: Any, layout: Layout) -> Any:
        acc = super()._new_accumulator(_sharded_c0_type(), layout)
        acc.setup(self._client, self._shard_count, self._threads, self._store_dir)
        return acc

    def __repr__(self) -> str:
        return "Sharded" + super().__repr__()
