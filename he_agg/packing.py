"""Model updates ↔ one flat float64 slot vector plus a layout manifest (plaintext side).

A client's update — a numpy array, a list/tuple of arrays, a dict name → array, or a
PyTorch ``state_dict`` — becomes one contiguous float64 vector (layers in order, no
padding) and a :class:`Layout` that records how to rebuild it. The aggregator compares
:attr:`Layout.digest` values to refuse updates packed for another model.

Weighted averaging reserves one extra slot at the end for the client's weight: clients
encrypt ``[w·x_0, …, w·x_{V-1}, w]``, the server sums, and :func:`weighted_mean` divides.

Packing: ``"slots"`` (CKKS slot packing, N/2 values per ciphertext, canonical
embedding) or ``"dense"`` (coefficient packing, N values per ciphertext, value k in
coefficient k, no FFT). The choice is part of the layout — its JSON and its digest —
so an aggregator and a member refuse a round that mixes them
(:class:`PackingMismatchError`). A slot layout's JSON carries no ``packing`` key, so
its digest is the same as before dense packing existed.

Range: CKKS decrypts the *centred* value of each coefficient. A sum whose magnitude
passes Q/2 (``2^params.headroom_bits`` after scaling) wraps around silently and decrypts
to garbage, so each client's slots must be bounded *before* encryption:
:func:`max_abs_per_client` gives the bound and :func:`check_range` enforces it.

torch is optional: it is imported only when a tensor is actually given.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import blake3
import numpy as np

from .errors import DecodeError, FormatError, LayoutMismatchError, PackingError, PackingMismatchError, SlotRangeError
from .params import Params

__all__ = [
    "DecodeError",
    "Layout",
    "LayoutEntry",
    "PACKINGS",
    "PackingError",
    "PackingMismatchError",
    "SlotRangeError",
    "Update",
    "apply_weight",
    "check_layout",
    "check_range",
    "ciphertext_count",
    "clip",
    "flatten",
    "max_abs_per_client",
    "unflatten",
    "values_per_ciphertext",
    "weighted_mean",
]


# -- exceptions (proposed for he_agg.errors; kept here until they move) -------------------


#: The packings a layout may name: CKKS slots (N/2 values per ciphertext) or dense coefficients (N).
PACKINGS = ("slots", "dense")


def values_per_ciphertext(params: Params, packing: str = "slots") -> int:
    """Values one ciphertext carries: N/2 slots, or N coefficients for dense packing."""
    if packing not in PACKINGS:
        raise PackingError(f"packing must be one of {PACKINGS}, got {packing!r}")
    return params.n if packing == "dense" else params.slots


def ciphertext_count(length: int, params: Params, packing: str = "slots") -> int:
    """Ciphertexts ``length`` values take: ⌈length / (N/2)⌉ (slots) or ⌈length / N⌉ (dense)."""
    return -(-length // values_per_ciphertext(params, packing))


# -- the manifest -------------------------------------------------------------------------

#: A client's model update, as :func:`flatten` accepts it.
Update = np.ndarray | Sequence[np.ndarray] | Mapping[str, Any]

KINDS = ("array", "list", "dict", "torch")
NUMPY_DTYPES = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool"]
)
TORCH_ONLY_DTYPES = frozenset(["bfloat16"])

#: Limits on a manifest, checked on every :class:`Layout` (untrusted JSON included).
MAX_ENTRIES = 1 << 16
MAX_VALUES = 1 << 32
MAX_NDIM = 64
MAX_NAME_CHARS = 512

#: Integers beyond this magnitude are not exactly representable in float64.
_MAX_EXACT_INT = 1 << 53

_FORMAT = "he_agg.layout"
_VERSION = 1
_JSON_KEYS = frozenset(["format", "version", "kind", "entries", "values", "weighted"])
_DENSE_JSON_KEYS = _JSON_KEYS | {"packing"}
_ENTRY_KEYS = frozenset(["name", "shape", "dtype", "offset", "size"])


def _is_int(value: object) -> bool:
    return type(value) is int  # bool and floats are not sizes


@dataclass(frozen=True)
class LayoutEntry:
    """One array of the update: its name, shape, dtype, and place in the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    size: int

    def describe(self) -> str:
        return f"{self.name!r} {self.dtype} {self.shape}"


@dataclass(frozen=True)
class Layout:
    """How a flat slot vector maps back to a model update; validated on construction.

    ``values`` is the number of model values; a ``weighted`` layout reserves one more
    slot, at index ``values``, for the client's weight (:attr:`length` slots in all).
    ``packing`` is "slots" (CKKS slots) or "dense" (one value per coefficient).
    Invalid manifests raise :class:`~he_agg.errors.FormatError`.
    """

    kind: str
    entries: tuple[LayoutEntry, ...]
    values: int
    weighted: bool = False
    packing: str = "slots"

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        _validate_layout(self)

    @property
    def length(self) -> int:
        """Slots the packed update uses: the values plus the weight slot, if any."""
        return self.values + (1 if self.weighted else 0)

    @property
    def dense(self) -> bool:
        """True for dense (coefficient) packing."""
        return self.packing == "dense"

    def ciphertexts(self, params: Params) -> int:
        """Ciphertexts this layout's :attr:`length` values take under ``params`` and its packing."""
        return ciphertext_count(self.length, params, self.packing)

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (the canonical form :attr:`digest` hashes).

        ``"packing": "dense"`` appears only in dense layouts (slot layouts keep the
        JSON, and the digest, they had before dense packing existed).
        """
        out: dict[str, Any] = {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "weighted": self.weighted,
            "values": self.values,
            "entries": [
                {"name": e.name, "shape": list(e.shape), "dtype": e.dtype, "offset": e.offset, "size": e.size}
                for e in self.entries
            ],
        }
        if self.dense:
            out["packing"] = self.packing
        return out

    @classmethod
    def from_json(cls, obj: object) -> Layout:
        """Parse an untrusted manifest dict; any defect raises FormatError naming it."""
        if not isinstance(obj, Mapping):
            raise FormatError(f"layout must be a JSON object, got {type(obj).__name__}")
        _check_keys(obj, _DENSE_JSON_KEYS if "packing" in obj else _JSON_KEYS, "layout")
        if obj["format"] != _FORMAT or not _is_int(obj["version"]) or obj["version"] != _VERSION:
            raise FormatError(
                f"layout format {obj['format']!r} version {obj['version']!r} is not {_FORMAT!r} version {_VERSION}"
            )
        raw = obj["entries"]
        if not isinstance(raw, list):
            raise FormatError("layout 'entries' must be a list")
        if len(raw) > MAX_ENTRIES:
            raise FormatError(f"layout has {len(raw)} entries, more than the limit {MAX_ENTRIES}")
        entries = tuple(_entry_from_json(i, item) for i, item in enumerate(raw))
        return cls(kind=obj["kind"], entries=entries, values=obj["values"], weighted=obj["weighted"],
                   packing=obj.get("packing", "slots"))

    @cached_property
    def digest(self) -> bytes:
        """32-byte BLAKE3 of the canonical JSON (sorted keys, no spaces, ASCII)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return blake3.blake3(text.encode("ascii")).digest()


def _check_keys(obj: Mapping[Any, Any], expected: frozenset[str], what: str) -> None:
    keys = set(obj.keys())
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(map(repr, keys - expected))
        raise FormatError(f"{what}: missing keys {missing}, unknown keys {extra}")


def _entry_from_json(index: int, item: object) -> LayoutEntry:
    if not isinstance(item, Mapping):
        raise FormatError(f"layout entry {index} must be a JSON object")
    _check_keys(item, _ENTRY_KEYS, f"layout entry {index}")
    shape = item["shape"]
    if not isinstance(shape, list):
        raise FormatError(f"layout entry {index}: shape must be a list of integers")
    if len(shape) > MAX_NDIM:
        raise FormatError(f"layout entry {index}: {len(shape)} dimensions, more than {MAX_NDIM}")
    return LayoutEntry(
        name=item["name"], shape=tuple(shape), dtype=item["dtype"], offset=item["offset"], size=item["size"]
    )


def _validate_layout(layout: Layout) -> None:
    if layout.kind not in KINDS:
        raise FormatError(f"layout kind {layout.kind!r} is not one of {KINDS}")
    if type(layout.weighted) is not bool:
        raise FormatError("layout 'weighted' must be true or false")
    if type(layout.packing) is not str or layout.packing not in PACKINGS:
        raise FormatError(f"layout 'packing' must be one of {PACKINGS}")
    entries = layout.entries
    if not entries:
        raise FormatError("layout has no entries")
    if len(entries) > MAX_ENTRIES:
        raise FormatError(f"layout has {len(entries)} entries, more than the limit {MAX_ENTRIES}")
    if layout.kind == "array" and len(entries) != 1:
        raise FormatError(f"an 'array' layout has exactly one entry, got {len(entries)}")
    offset = 0
    names: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, LayoutEntry):
            raise FormatError(f"layout entry {index} is not a LayoutEntry")
        _validate_entry(index, entry, layout.kind, offset)
        if entry.name in names:
            raise FormatError(f"layout entry {index}: duplicate name {entry.name!r}")
        names.add(entry.name)
        offset += entry.size
    if not _is_int(layout.values) or layout.values != offset:
        raise FormatError(f"layout 'values' is {layout.values!r} but its entries hold {offset} values")
    if not 1 <= offset <= MAX_VALUES:
        raise FormatError(f"layout holds {offset} values; it must hold 1 to {MAX_VALUES}")


def _validate_entry(index: int, entry: LayoutEntry, kind: str, offset: int) -> None:
    where = f"layout entry {index}"
    if not isinstance(entry.name, str) or len(entry.name) > MAX_NAME_CHARS:
        raise FormatError(f"{where}: name must be a string of at most {MAX_NAME_CHARS} characters")
    if kind in ("array", "list") and entry.name != str(index):
        raise FormatError(f"{where}: name {entry.name!r} must be {str(index)!r} in an {kind!r} layout")
    known = NUMPY_DTYPES | (TORCH_ONLY_DTYPES if kind == "torch" else frozenset())
    if not isinstance(entry.dtype, str) or entry.dtype not in known:
        raise FormatError(f"{where} ({entry.name!r}): unknown dtype {entry.dtype!r}; known: {sorted(known)}")
    if not isinstance(entry.shape, tuple) or len(entry.shape) > MAX_NDIM:
        raise FormatError(f"{where} ({entry.name!r}): shape must be a tuple of at most {MAX_NDIM} integers")
    for dim in entry.shape:
        if not _is_int(dim) or not 0 <= dim <= MAX_VALUES:
            raise FormatError(f"{where} ({entry.name!r}): dimension {dim!r} is not an integer in [0, {MAX_VALUES}]")
    if not _is_int(entry.size) or entry.size < 0:
        raise FormatError(f"{where} ({entry.name!r}): size {entry.size!r} is not a non-negative integer")
    if entry.size != math.prod(entry.shape):
        raise FormatError(f"{where} ({entry.name!r}): size {entry.size} does not match shape {entry.shape}")
    if not _is_int(entry.offset) or entry.offset != offset:
        raise FormatError(
            f"{where} ({entry.name!r}): offset {entry.offset!r} should be {offset} (entries are contiguous)"
        )


# -- flatten / unflatten --------------------------------------------------------------------


def _is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch")


def flatten(update: Update, *, weighted: bool = False, packing: str = "slots") -> tuple[np.ndarray, Layout]:
    """Pack ``update`` into one contiguous float64 vector (layers in order) and its layout.

    The vector holds ``layout.values`` numbers; with ``weighted=True`` the layout also
    reserves the weight slot (see :func:`apply_weight`). ``packing`` ("slots" or
    "dense") is recorded in the layout. Raises :class:`PackingError`
    for empty updates, non-numeric or complex dtypes, non-finite values, and integers
    too large to be exact in float64.
    """
    if type(weighted) is not bool:
        raise PackingError("weighted must be True or False")
    if packing not in PACKINGS:
        raise PackingError(f"packing must be one of {PACKINGS}, got {packing!r}")
    kind, items = _items(update)
    entries: list[LayoutEntry] = []
    offset = 0
    for name, array, dtype in items:
        if len(name) > MAX_NAME_CHARS:
            raise PackingError(f"entry name {name[:40]!r}… is longer than {MAX_NAME_CHARS} characters")
        entries.append(LayoutEntry(name, tuple(int(d) for d in array.shape), dtype, offset, int(array.size)))
        offset += int(array.size)
    if offset == 0:
        raise PackingError("the update holds no values")
    if offset > MAX_VALUES:
        raise PackingError(f"the update holds {offset} values, more than the limit {MAX_VALUES}")
    vector = np.empty(offset, dtype=np.float64)
    for entry, (_, array, _) in zip(entries, items, strict=True):
        _check_exact_ints(entry, array)
        vector[entry.offset : entry.offset + entry.size] = array.reshape(-1)
    _check_finite(vector, entries)
    return vector, Layout(kind=kind, entries=tuple(entries), values=offset, weighted=weighted, packing=packing)


def _items(update: object) -> tuple[str, list[tuple[str, np.ndarray, str]]]:
    """The container kind and its (name, numpy array, dtype name) items, in order."""
    if isinstance(update, (np.ndarray, np.generic)):
        return "array", [("0", *_numpy_array("0", update))]
    if isinstance(update, (list, tuple)):
        if not update:
            raise PackingError("the update is an empty list")
        items = []
        for i, value in enumerate(update):
            if _is_torch(value):
                raise PackingError("lists of torch tensors are not supported; pass a state_dict (name → tensor)")
            items.append((str(i), *_numpy_array(str(i), value)))
        return "list", items
    if isinstance(update, Mapping):
        if not update:
            raise PackingError("the update is an empty dict")
        for key in update:
            if not isinstance(key, str):
                raise PackingError(f"dict keys must be strings, got {key!r}")
        flags = {_is_torch(v) for v in update.values()}
        if flags == {True}:
            return "torch", [(k, *_torch_array(k, v)) for k, v in update.items()]
        if flags == {False}:
            return "dict", [(k, *_numpy_array(k, v)) for k, v in update.items()]
        raise PackingError("the dict mixes torch tensors and other values; convert them to one kind")
    if _is_torch(update):
        raise PackingError("a single torch tensor is not supported; pass a state_dict (name → tensor)")
    raise PackingError(
        f"cannot pack a {type(update).__name__}: pass a numpy array, a list/tuple or dict of arrays, or a state_dict"
    )


def _numpy_array(name: str, value: object) -> tuple[np.ndarray, str]:
    if not isinstance(value, (np.ndarray, np.generic)):
        raise PackingError(f"entry {name!r} is a {type(value).__name__}, not a numpy array")
    array = np.asarray(value)
    dtype = array.dtype.name
    if dtype not in NUMPY_DTYPES:
        raise PackingError(f"entry {name!r} has dtype {dtype}; supported: {sorted(NUMPY_DTYPES)}")
    return array, dtype


def _torch_array(name: str, tensor: Any) -> tuple[np.ndarray, str]:
    import torch  # type: ignore[import-not-found, unused-ignore]

    if not isinstance(tensor, torch.Tensor):
        raise PackingError(f"entry {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in NUMPY_DTYPES | TORCH_ONLY_DTYPES:
        raise PackingError(f"entry {name!r} has dtype torch.{dtype}; not supported")
    if tensor.layout != torch.strided:
        raise PackingError(f"entry {name!r} is a {tensor.layout} tensor; pass dense tensors")
    tensor = tensor.detach().to("cpu")
    if dtype == "bfloat16":  # numpy has no bfloat16; float32 holds every bfloat16 exactly
        tensor = tensor.to(torch.float32)
    return tensor.numpy(), dtype


def _check_exact_ints(entry: LayoutEntry, array: np.ndarray) -> None:
    if entry.dtype == "int64" and bool(np.any((array > _MAX_EXACT_INT) | (array < -_MAX_EXACT_INT))):
        raise PackingError(f"entry {entry.name!r} holds int64 values beyond ±2^53, not exact in float64")


def _check_finite(vector: np.ndarray, entries: Sequence[LayoutEntry]) -> None:
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size == 0:
        return
    first = int(bad[0])
    entry = next(e for e in entries if e.offset <= first < e.offset + e.size)
    index = np.unravel_index(first - entry.offset, entry.shape) if entry.shape else ()
    raise PackingError(
        f"entry {entry.name!r} has a non-finite value ({vector[first]}) at index {tuple(map(int, index))}"
    )


def unflatten(vector: np.ndarray, layout: Layout) -> Any:
    """Rebuild the update from a slot vector: original container, shapes and dtypes.

    ``vector`` holds ``layout.values`` or ``layout.length`` numbers (a trailing weight
    slot is ignored). Integer and bool entries are rounded with ``np.rint``; a value
    that does not fit its dtype raises :class:`PackingError` instead of wrapping.
    "torch" layouts give an ``OrderedDict`` of CPU tensors; "dict" a dict; "list" a list.
    """
    vector = _as_float_vector(vector, "vector")
    if vector.shape[0] not in (layout.values, layout.length):
        raise LayoutMismatchError(
            f"vector has {vector.shape[0]} values; the layout needs {layout.values}"
            + (f" or {layout.length} (with the weight slot)" if layout.weighted else "")
        )
    arrays = [_restore(vector[e.offset : e.offset + e.size], e) for e in layout.entries]
    if layout.kind == "array":
        return arrays[0]
    if layout.kind == "list":
        return arrays
    if layout.kind == "dict":
        return {e.name: a for e, a in zip(layout.entries, arrays, strict=True)}
    return _to_torch(layout.entries, arrays)


def _restore(values: np.ndarray, entry: LayoutEntry) -> np.ndarray:
    if not np.isfinite(values).all():
        raise PackingError(f"entry {entry.name!r}: the vector holds non-finite values")
    target = np.dtype("float32" if entry.dtype == "bfloat16" else entry.dtype)
    if target.kind in "biu":
        rounded = np.rint(values)
        info = np.iinfo(target) if target.kind != "b" else None
        lo, hi = (0, 1) if info is None else (max(info.min, -_MAX_EXACT_INT), min(info.max, _MAX_EXACT_INT))
        if rounded.size and (rounded.min() < lo or rounded.max() > hi):
            raise PackingError(f"entry {entry.name!r}: values outside the range [{lo}, {hi}] of {entry.dtype}")
        integers: np.ndarray = rounded.astype(target).reshape(entry.shape)
        return integers
    with np.errstate(over="ignore"):
        restored = values.astype(target)
    if not np.isfinite(restored).all():
        raise PackingError(f"entry {entry.name!r}: values overflow {entry.dtype}")
    return restored.reshape(entry.shape)


def _to_torch(entries: Sequence[LayoutEntry], arrays: Sequence[np.ndarray]) -> OrderedDict[str, Any]:
    import torch  # type: ignore[import-not-found, unused-ignore]

    out: OrderedDict[str, Any] = OrderedDict()
    for entry, array in zip(entries, arrays, strict=True):
        tensor = torch.from_numpy(array if array.flags.c_contiguous else array.copy(order="C"))  # keeps 0-d
        if entry.dtype == "bfloat16":
            tensor = tensor.to(torch.bfloat16)
        out[entry.name] = tensor
    return out


def check_layout(layout: Layout, expected: Layout) -> None:
    """Raise LayoutMismatchError, naming the first differing entry, unless the layouts match.

    A layout packed the other way ("slots" vs "dense") raises :class:`PackingMismatchError`.
    """
    if layout.packing != expected.packing:
        raise PackingMismatchError(f"the update is packed as {layout.packing!r}; this round is packed as "
                                   f"{expected.packing!r}: a round never mixes slot and dense packing")
    if layout.kind != expected.kind:
        raise LayoutMismatchError(f"layout kind {layout.kind!r}, expected {expected.kind!r}")
    for index, (got, want) in enumerate(zip(layout.entries, expected.entries, strict=False)):
        if (got.name, got.shape, got.dtype) != (want.name, want.shape, want.dtype):
            raise LayoutMismatchError(f"layout entry {index} is {got.describe()}, expected {want.describe()}")
    if len(layout.entries) != len(expected.entries):
        n, m = len(layout.entries), len(expected.entries)
        first = (expected.entries if m > n else layout.entries)[min(n, m)]
        which = "missing" if m > n else "unexpected"
        raise LayoutMismatchError(f"layout has {n} entries, expected {m}; first {which} entry: {first.describe()}")
    if layout.weighted != expected.weighted:
        raise LayoutMismatchError(f"layout weighted={layout.weighted}, expected weighted={expected.weighted}")
    if layout.digest != expected.digest:  # unreachable unless the checks above miss a field
        raise LayoutMismatchError("layout digest differs from the expected layout's")


# -- clipping, weighting, range -----------------------------------------------------------


def _as_float_vector(vector: object, what: str) -> np.ndarray:
    array = np.asarray(vector)
    if array.dtype.kind not in "biuf":
        raise PackingError(f"{what} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise PackingError(f"{what} must be one-dimensional, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _positive_bound(name: str, bound: object) -> float:
    if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)):
        raise PackingError(f"{name} must be a number, got {type(bound).__name__}")
    value = float(bound)
    if not (math.isfinite(value) and value > 0):
        raise PackingError(f"{name} must be finite and > 0, got {bound!r}")
    return value


def _l2_norm(vector: np.ndarray) -> float:
    """Euclidean norm that neither overflows nor underflows (scaled by the max |value|)."""
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    if peak == 0.0:
        return 0.0
    return peak * math.sqrt(float(np.sum(np.square(vector / peak))))


def clip(vector: np.ndarray, *, l2: float | None = None, value: float | None = None) -> np.ndarray:
    """Bound a client's vector before encryption; returns a new float64 vector.

    ``value`` clips each element to [−value, value]; ``l2`` then scales the whole vector
    down if its Euclidean norm exceeds ``l2`` (afterwards the norm is ≤ l2 exactly as
    computed here). A vector already within both bounds is returned unchanged (copied).
    """
    out = np.array(_as_float_vector(vector, "vector"), dtype=np.float64, copy=True)
    if not np.isfinite(out).all():
        raise PackingError(f"vector has a non-finite value at index {int(np.flatnonzero(~np.isfinite(out))[0])}")
    if value is not None:
        bound = _positive_bound("value", value)
        np.clip(out, -bound, bound, out=out)
    if l2 is not None:
        limit = _positive_bound("l2", l2)
        norm = _l2_norm(out)
        if norm > limit:
            original, factor = out, limit / norm
            out = original * factor
            while _l2_norm(out) > limit:  # rounding can leave it one ulp above
                factor = float(np.nextafter(factor, 0.0))
                out = original * factor
    return out


def apply_weight(vector: np.ndarray, layout: Layout, weight: float) -> np.ndarray:
    """The slots a weighted client encrypts: ``[w·x_0, …, w·x_{V-1}, w]`` (layout.length)."""
    if not layout.weighted:
        raise PackingError("apply_weight needs a weighted layout: flatten(update, weighted=True)")
    values = _as_float_vector(vector, "vector")
    if values.shape[0] != layout.values:
        raise LayoutMismatchError(f"vector has {values.shape[0]} values; the layout has {layout.values}")
    w = _positive_bound("weight", weight)
    slots = np.empty(layout.length, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(values, w, out=slots[:-1])
    slots[-1] = w
    bad = np.flatnonzero(~np.isfinite(slots))
    if bad.size:
        raise PackingError(f"weighted slot {int(bad[0])} is not finite: the value or the weight is too large")
    return slots


def weighted_mean(slots: np.ndarray, layout: Layout) -> tuple[np.ndarray, float]:
    """From a summed weighted slot vector: (Σ w·x / Σ w, Σ w).

    Raises :class:`DecodeError` if Σ w is not a positive finite number (no client
    contributed, the vector is not weighted, or the aggregate is corrupt).
    """
    if not layout.weighted:
        raise PackingError("weighted_mean needs a weighted layout: flatten(update, weighted=True)")
    total = _as_float_vector(slots, "slots")
    if total.shape[0] != layout.length:
        raise LayoutMismatchError(f"slot vector has {total.shape[0]} values; the weighted layout has {layout.length}")
    if not np.isfinite(total).all():
        raise DecodeError("the aggregate holds non-finite values: it is corrupt")
    weight = float(total[-1])
    if not weight > 0:
        raise DecodeError(
            f"the total weight is {weight!r}, not positive: no weighted contribution, or a corrupt aggregate"
        )
    return total[:-1] / weight, weight


def max_abs_per_client(params: Params, max_clients: int) -> float:
    """Largest |slot value| one client may encrypt: ``2^(params.headroom_bits − 1) / max_clients``.

    CKKS decrypts the centred value of each coefficient; once a sum's magnitude passes
    Q/2 (``2^headroom_bits`` after dividing by the scale) it wraps around silently, with
    no error at decryption. Every coefficient is bounded by the largest slot magnitude,
    and one bit is kept in reserve for encryption and flooding noise. Enforce this bound
    (:func:`check_range`) before encrypting, so that the sum of ``max_clients``
    contributions still decrypts.
    """
    if not _is_int(max_clients) or max_clients < 1:
        raise PackingError(f"max_clients must be an integer >= 1, got {max_clients!r}")
    return float(2.0 ** (params.headroom_bits - 1.0)) / max_clients


def check_range(slots: np.ndarray, params: Params, max_clients: int) -> None:
    """Raise SlotRangeError (with the index and the bound) if a slot is out of range."""
    bound = max_abs_per_client(params, max_clients)
    values = _as_float_vector(slots, "slots")
    bad = np.flatnonzero(~(np.abs(values) <= bound))  # NaN compares False: caught too
    if bad.size:
        index = int(bad[0])
        raise SlotRangeError(
            f"slot {index} holds {values[index]!r}, beyond ±{bound:.6g} = 2^{params.headroom_bits - 1:.2f} / "
            f"{max_clients} clients: the sum would wrap around at decryption; clip or rescale the update",
            index,
            bound,
        )
