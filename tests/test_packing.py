"""Packing: flatten/unflatten round trips, the layout manifest, clipping, weighting, range."""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from he_agg.errors import DecodeError, FormatError, HeAggError, LayoutMismatchError, PackingError, SlotRangeError
from he_agg.packing import (
    Layout,
    LayoutEntry,
    apply_weight,
    check_layout,
    check_range,
    clip,
    flatten,
    max_abs_per_client,
    unflatten,
    weighted_mean,
)
from he_agg.params import Params

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool"]


def _elements(dtype: str) -> st.SearchStrategy[Any]:
    if dtype.startswith("float"):
        return st.floats(allow_nan=False, allow_infinity=False, width=int(dtype[5:]))
    if dtype == "int64":  # only integers exact in float64 are packable
        return st.integers(-(2**53), 2**53)
    return hnp.from_dtype(np.dtype(dtype))


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=_elements(dtype)))


names = st.text(min_size=0, max_size=12)

updates = st.one_of(
    arrays(),
    st.lists(arrays(), min_size=1, max_size=5),
    st.lists(arrays(), min_size=1, max_size=5).map(tuple),
    st.dictionaries(names, arrays(), min_size=1, max_size=5),
)


def _as_list(update: Any) -> list[np.ndarray]:
    if isinstance(update, np.ndarray):
        return [update]
    if isinstance(update, dict):
        return list(update.values())
    return list(update)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _layout(update: Any = None, **kwargs: Any) -> Layout:
    default = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.int64), "s": np.zeros((), np.float64)}
    return flatten(default if update is None else update, **kwargs)[1]


# -- flatten / unflatten ------------------------------------------------------------------


@given(update=updates, weighted=st.booleans())
def test_round_trip_is_exact(update: Any, weighted: bool) -> None:
    arrays_in = _as_list(update)
    if sum(a.size for a in arrays_in) == 0:
        with pytest.raises(PackingError):
            flatten(update)
        return
    vector, layout = flatten(update, weighted=weighted)
    assert vector.dtype == np.float64 and vector.shape == (layout.values,)
    assert layout.values == sum(a.size for a in arrays_in)
    assert layout.length == layout.values + weighted
    assert np.array_equal(vector, np.concatenate([a.reshape(-1).astype(np.float64) for a in arrays_in]))
    restored = unflatten(vector, layout)
    assert type(restored) is (list if isinstance(update, tuple) else type(update))
    if isinstance(update, dict):
        assert list(restored) == list(update)  # insertion order kept
    assert all(_same_array(a, b) for a, b in zip(_as_list(restored), arrays_in, strict=True))
    if weighted:  # the weight slot is ignored
        again = unflatten(np.append(vector, 7.0), layout)
        assert all(_same_array(a, b) for a, b in zip(_as_list(again), arrays_in, strict=True))


def test_layout_records_offsets_and_kinds() -> None:
    update = {"w": np.ones((2, 3), np.float32), "b": np.arange(3, dtype=np.int64), "s": np.float64(2.5)}
    vector, layout = flatten(update)
    assert layout.kind == "dict"
    assert [(e.name, e.shape, e.dtype, e.offset, e.size) for e in layout.entries] == [
        ("w", (2, 3), "float32", 0, 6),
        ("b", (3,), "int64", 6, 3),
        ("s", (), "float64", 9, 1),
    ]
    assert vector.tolist() == [1.0] * 6 + [0.0, 1.0, 2.0, 2.5]
    assert flatten([np.ones(2)])[1].entries[0].name == "0"
    assert flatten(np.ones(2))[1].kind == "array"


def test_unflatten_rounds_integers_and_returns_copies() -> None:
    vector, layout = flatten(
        {"i": np.array([1, -2, 3], np.int16), "f": np.zeros(2, np.float64), "m": np.array([True, False])}
    )
    noisy = vector + np.array([0.3, -0.4, 0.2, 0.0, 0.0, -0.3, 0.1])
    out = unflatten(noisy, layout)
    assert out["i"].tolist() == [1, -2, 3] and out["i"].dtype == np.int16
    assert out["m"].tolist() == [True, False]
    out["f"][0] = 99.0
    assert noisy[3] == 0.0


@pytest.mark.parametrize(
    "update, match",
    [
        ([], "empty"),
        ({}, "empty"),
        (np.zeros((0, 3)), "no values"),
        ([np.zeros(2), np.array([1.0, np.nan])], r"'1'.*non-finite.*\(1,\)"),
        ({"layer": np.array([[0.0, np.inf]], np.float32)}, r"'layer'.*non-finite.*\(0, 1\)"),
        ([np.array([1 + 2j])], "complex128"),
        ([np.array(["a"])], "dtype"),
        ([np.array([1.0], dtype=object)], "dtype"),
        ([np.array([2**53 + 1], np.int64)], "2\\^53"),
        ([np.array([1], np.uint64)], "uint64"),
        ([[1.0, 2.0]], "not a numpy array"),
        ({1: np.ones(2)}, "keys must be strings"),
        ("abc", "cannot pack"),
    ],
)
def test_flatten_rejects(update: Any, match: str) -> None:
    with pytest.raises(PackingError, match=match):
        flatten(update)


def test_packing_errors_are_value_errors() -> None:
    assert issubclass(PackingError, ValueError) and issubclass(PackingError, HeAggError)
    assert issubclass(SlotRangeError, PackingError) and issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    "dtype, bad",
    [("int8", 128.0), ("uint8", -1.0), ("bool", 2.0), ("int64", 2.0**63), ("float16", 1e6), ("float32", math.nan)],
)
def test_unflatten_refuses_values_that_do_not_fit(dtype: str, bad: float) -> None:
    _, layout = flatten({"x": np.zeros(2, dtype)})
    with pytest.raises(PackingError, match="'x'"):
        unflatten(np.array([0.0, bad]), layout)


def test_unflatten_checks_length() -> None:
    vector, layout = flatten([np.ones(3)], weighted=True)
    for wrong in (vector[:-1], np.ones(5)):
        with pytest.raises(LayoutMismatchError, match="needs 3"):
            unflatten(wrong, layout)
    unflatten(np.ones(4), layout)  # with the weight slot


# -- the manifest -------------------------------------------------------------------------


@given(update=updates, weighted=st.booleans())
def test_layout_json_round_trip_and_digest(update: Any, weighted: bool) -> None:
    if sum(a.size for a in _as_list(update)) == 0:
        return
    layout = flatten(update, weighted=weighted)[1]
    text = json.dumps(layout.to_json())
    again = Layout.from_json(json.loads(text))
    assert again == layout
    assert len(layout.digest) == 32 and again.digest == layout.digest
    shuffled = dict(reversed(list(json.loads(text).items())))  # key order does not matter
    assert Layout.from_json(shuffled).digest == layout.digest
    other = flatten(update, weighted=not weighted)[1]
    assert other.digest != layout.digest


def test_digest_is_pinned() -> None:
    """Known answer: the digest of a fixed layout must not drift between releases."""
    layout = flatten({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.int64)}, weighted=True)[1]
    canonical = (
        '{"entries":[{"dtype":"float32","name":"w","offset":0,"shape":[2,3],"size":6},'
        '{"dtype":"int64","name":"b","offset":6,"shape":[3],"size":3}],'
        '"format":"he_agg.layout","kind":"dict","values":9,"version":1,"weighted":true}'
    )
    import blake3

    assert layout.digest == blake3.blake3(canonical.encode()).digest()


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


TAMPERING: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "offset shifted": (_set(("entries", 1, "offset"), 7), "offset 7 should be 6"),
    "first offset": (_set(("entries", 0, "offset"), 1), "offset 1 should be 0"),
    "unknown dtype": (_set(("entries", 0, "dtype"), "float128"), "unknown dtype 'float128'"),
    "complex dtype": (_set(("entries", 1, "dtype"), "complex64"), "unknown dtype"),
    "bfloat16 outside torch": (_set(("entries", 0, "dtype"), "bfloat16"), "unknown dtype 'bfloat16'"),
    "negative size": (_set(("entries", 2, "size"), -1), "size -1"),
    "negative dim": (_set(("entries", 0, "shape"), [-2, -3]), "dimension -2"),
    "size vs shape": (_set(("entries", 0, "size"), 5), "does not match shape"),
    "values total": (_set(("values",), 11), "'values' is 11"),
    "bool as size": (_set(("entries", 2, "size"), True), "size True"),
    "float as offset": (_set(("entries", 1, "offset"), 6.0), "offset 6.0"),
    "shape not a list": (_set(("entries", 0, "shape"), "2x3"), "shape must be a list"),
    "name not a string": (_set(("entries", 0, "name"), 3), "name must be a string"),
    "duplicate name": (_set(("entries", 1, "name"), "w"), "duplicate name"),
    "unknown kind": (_set(("kind",), "tuple"), "kind 'tuple'"),
    "weighted not bool": (_set(("weighted",), 1), "'weighted'"),
    "version": (_set(("version",), 2), "version 2"),
    "format": (_set(("format",), "other"), "format 'other'"),
    "missing key": (_delete(("values",)), "missing keys \\['values'\\]"),
    "extra key": (_set(("extra",), 0), "unknown keys"),
    "extra entry key": (_set(("entries", 0, "stride"), 1), "entry 0: missing keys \\[\\], unknown keys"),
    "no entries": (_set(("entries",), []), "no entries"),
    "entries not a list": (_set(("entries",), {}), "'entries' must be a list"),
    "list names": (_set(("kind",), "list"), "must be '0'"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_layout_is_rejected(case: str) -> None:
    obj = _layout().to_json()
    Layout.from_json(copy.deepcopy(obj))  # the untampered manifest parses
    mutate, match = TAMPERING[case]
    mutate(obj)
    with pytest.raises(FormatError, match=match):
        Layout.from_json(obj)


@given(
    update=st.lists(arrays(), min_size=2, max_size=5),
    data=st.data(),
)
def test_any_offset_or_size_change_is_rejected(update: list[np.ndarray], data: st.DataObject) -> None:
    if sum(a.size for a in update) == 0:
        return
    obj = flatten(update)[1].to_json()
    index = data.draw(st.integers(0, len(update) - 1))
    field = data.draw(st.sampled_from(["offset", "size", "values"]))
    delta = data.draw(st.integers(-3, 3).filter(bool))
    if field == "values":
        obj["values"] += delta
    else:
        obj["entries"][index][field] += delta
    with pytest.raises(FormatError):
        Layout.from_json(obj)


def test_from_json_rejects_non_objects_and_oversized() -> None:
    for bad in (None, [], "layout", 3):
        with pytest.raises(FormatError, match="JSON object"):
            Layout.from_json(bad)
    obj = _layout().to_json()
    obj["entries"][0]["shape"] = [1] * 65 + [2, 3]
    with pytest.raises(FormatError, match="dimensions"):
        Layout.from_json(obj)
    obj = _layout().to_json()
    obj["entries"][0]["name"] = "x" * 1000
    with pytest.raises(FormatError, match="at most 512"):
        Layout.from_json(obj)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(FormatError, match="offset"):
        Layout("list", (LayoutEntry("0", (2,), "float64", 0, 2), LayoutEntry("1", (2,), "float64", 3, 2)), 5)
    with pytest.raises(FormatError, match="exactly one entry"):
        Layout("array", (LayoutEntry("0", (1,), "float64", 0, 1), LayoutEntry("1", (1,), "float64", 1, 1)), 2)


# -- layout mismatch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, array, match",
    [
        ("b", np.zeros(4, np.int64), r"entry 1 is 'b' int64 \(4,\), expected 'b' int64 \(3,\)"),
        ("b", np.zeros(3, np.int32), r"entry 1 is 'b' int32 \(3,\), expected 'b' int64"),
        ("bias", np.zeros(3, np.int64), r"entry 1 is 'bias' int64 \(3,\), expected 'b'"),
    ],
)
def test_mismatch_names_the_entry(name: str, array: np.ndarray, match: str) -> None:
    expected = _layout()
    check_layout(_layout(), expected)
    changed = {"w": np.zeros((2, 3), np.float32), name: array, "s": np.zeros((), np.float64)}
    with pytest.raises(LayoutMismatchError, match=match):
        check_layout(flatten(changed)[1], expected)


def test_mismatch_in_count_kind_and_weighting() -> None:
    base = {"w": np.zeros(2), "b": np.zeros(3)}
    expected = flatten(base)[1]
    with pytest.raises(LayoutMismatchError, match="first missing entry: 'b'"):
        check_layout(flatten({"w": np.zeros(2)})[1], expected)
    with pytest.raises(LayoutMismatchError, match="first unexpected entry: 'c'"):
        check_layout(flatten({**base, "c": np.zeros(1)})[1], expected)
    with pytest.raises(LayoutMismatchError, match="kind 'list'"):
        check_layout(flatten([np.zeros(2), np.zeros(3)])[1], expected)
    with pytest.raises(LayoutMismatchError, match="weighted"):
        check_layout(flatten(base, weighted=True)[1], expected)


@given(update=st.lists(arrays(), min_size=1, max_size=4), data=st.data())
def test_any_single_entry_change_is_detected(update: list[np.ndarray], data: st.DataObject) -> None:
    if sum(a.size for a in update) == 0:
        return
    index = data.draw(st.integers(0, len(update) - 1))
    original = update[index]
    changed = list(update)
    if data.draw(st.booleans()):
        changed[index] = np.zeros(original.shape, np.float32 if original.dtype == np.float64 else np.float64)
    else:
        changed[index] = np.zeros(original.shape + (2,), original.dtype)
    with pytest.raises(LayoutMismatchError, match=f"entry {index} is '{index}'"):
        check_layout(flatten(changed)[1], flatten(update)[1])


# -- clipping -----------------------------------------------------------------------------

finite_vectors = hnp.arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
)
bounds = st.floats(1e-6, 1e6)


def _norm(vector: np.ndarray) -> float:
    """Overflow-free Euclidean norm (the one clip() guarantees)."""
    peak = float(np.max(np.abs(vector)))
    return 0.0 if peak == 0 else peak * math.sqrt(float(np.sum((vector / peak) ** 2)))


@given(vector=finite_vectors, l2=bounds)
def test_clip_l2_bounds_the_norm(vector: np.ndarray, l2: float) -> None:
    out = clip(vector, l2=l2)
    assert _norm(out) <= l2
    if _norm(vector) > l2:  # the direction is kept: a positive multiple of vector
        np.testing.assert_allclose(out, vector * (l2 / _norm(vector)), rtol=1e-9, atol=1e-290)
    else:
        assert np.array_equal(out, vector)


@given(vector=finite_vectors, value=bounds)
def test_clip_value_bounds_each_element(vector: np.ndarray, value: float) -> None:
    out = clip(vector, value=value)
    assert np.all(np.abs(out) <= value)
    inside = np.abs(vector) <= value
    assert np.array_equal(out[inside], vector[inside])
    assert np.array_equal(out[~inside], np.sign(vector[~inside]) * value)


@given(vector=finite_vectors, value=bounds, l2=bounds)
def test_clip_both_applies_value_then_l2(vector: np.ndarray, value: float, l2: float) -> None:
    out = clip(vector, value=value, l2=l2)
    assert np.all(np.abs(out) <= value)
    assert np.array_equal(out, clip(clip(vector, value=value), l2=l2))
    assert np.linalg.norm(out) <= l2 * (1 + 1e-12)


def test_clip_is_a_no_op_within_bounds_and_copies() -> None:
    vector = np.array([0.3, -0.4])
    out = clip(vector, l2=0.5, value=0.4)
    assert np.array_equal(out, vector) and out is not vector
    out[0] = 9.0
    assert vector[0] == 0.3
    assert clip(np.array([3.0, 4.0]), l2=1.0).tolist() == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("kwargs", [{"l2": 0.0}, {"l2": -1.0}, {"value": math.inf}, {"value": math.nan}, {"l2": True}])
def test_clip_rejects_bad_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(PackingError):
        clip(np.ones(3), **kwargs)


def test_clip_rejects_non_finite_vectors() -> None:
    with pytest.raises(PackingError, match="index 1"):
        clip(np.array([0.0, np.nan]), l2=1.0)


# -- weighting ----------------------------------------------------------------------------


@given(
    clients=st.integers(1, 8),
    size=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_weighted_mean_matches_numpy(clients: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    updates = [{"w": rng.normal(size=size).astype(np.float32), "b": rng.normal(size=1) * 1e3} for _ in range(clients)]
    weights = rng.uniform(1e-3, 1e4, size=clients)
    total = None
    layout = None
    for update, weight in zip(updates, weights, strict=True):
        vector, layout = flatten(update, weighted=True)
        slots = apply_weight(vector, layout, weight)
        assert slots.shape == (layout.length,) and slots[-1] == weight
        total = slots if total is None else total + slots
    assert layout is not None and total is not None
    mean, weight_sum = weighted_mean(total, layout)
    stacked = np.stack([flatten(u)[0] for u in updates])
    expected = np.average(stacked, axis=0, weights=weights)
    scale = np.max(np.abs(stacked), axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-12, atol=1e-12 * float(np.max(scale)))
    assert weight_sum == pytest.approx(weights.sum(), rel=1e-12)
    rebuilt = unflatten(mean, layout)
    assert rebuilt["w"].dtype == np.float32 and rebuilt["b"].shape == (1,)


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf, True, "2"])
def test_apply_weight_rejects_bad_weights(weight: Any) -> None:
    vector, layout = flatten([np.ones(3)], weighted=True)
    with pytest.raises(PackingError, match="weight"):
        apply_weight(vector, layout, weight)


def test_apply_weight_needs_a_weighted_layout_of_the_right_length() -> None:
    vector, layout = flatten([np.ones(3)])
    with pytest.raises(PackingError, match="weighted layout"):
        apply_weight(vector, layout, 1.0)
    vector, layout = flatten([np.ones(3)], weighted=True)
    with pytest.raises(LayoutMismatchError):
        apply_weight(np.ones(4), layout, 1.0)
    with pytest.raises(PackingError, match="slot 1 is not finite"):
        apply_weight(np.array([1.0, 1e300, 1.0]), layout, 1e10)


@pytest.mark.parametrize("weight, match", [(0.0, "total weight"), (-2.0, "total weight"), (math.nan, "non-finite")])
def test_weighted_mean_refuses_a_non_positive_total_weight(weight: float, match: str) -> None:
    _, layout = flatten([np.ones(2)], weighted=True)
    with pytest.raises(DecodeError, match=match):
        weighted_mean(np.array([1.0, 1.0, weight]), layout)
    with pytest.raises(LayoutMismatchError):
        weighted_mean(np.ones(2), layout)


# -- range --------------------------------------------------------------------------------


def test_max_abs_per_client() -> None:
    params = Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90)
    assert max_abs_per_client(params, 1) == 2.0 ** (params.headroom_bits - 1)  # one bit kept for noise
    assert max_abs_per_client(params, 1000) == pytest.approx(2.0 ** (params.headroom_bits - 1) / 1000)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(PackingError, match="max_clients"):
            max_abs_per_client(params, bad)  # type: ignore[arg-type]


def test_check_range_names_index_and_bound() -> None:
    params = Params.from_bit_sizes(4096, [40, 20, 40], 2.0**25)  # headroom ≈ 2^34
    bound = max_abs_per_client(params, 100)
    slots = np.zeros(10)
    slots[3] = bound
    check_range(slots, params, 100)
    for bad in (bound * (1 + 1e-9), -bound * 2, math.nan, math.inf):
        slots[7] = bad
        with pytest.raises(SlotRangeError, match="slot 7") as info:
            check_range(slots, params, 100)
        assert info.value.index == 7 and info.value.bound == bound
        assert isinstance(info.value, ValueError)


# -- torch --------------------------------------------------------------------------------


def test_torch_state_dict_round_trip() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    state["half"] = torch.randn(2, 2).to(torch.bfloat16)
    vector, layout = flatten(state, weighted=True)
    assert layout.kind == "torch" and layout.values == sum(t.numel() for t in state.values())
    restored = unflatten(vector, layout)
    assert isinstance(restored, OrderedDict) and list(restored) == list(state)
    for name, tensor in state.items():
        assert restored[name].dtype == tensor.dtype and restored[name].shape == tensor.shape
        assert torch.equal(restored[name], tensor)
    model.load_state_dict({k: v for k, v in restored.items() if k != "half"})
    assert Layout.from_json(layout.to_json()).digest == layout.digest


_NO_TORCH = """
import sys
class Spy:
    seen = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            Spy.seen.append(name)
        return None
sys.meta_path.insert(0, Spy())
import numpy as np
from he_agg.packing import flatten, unflatten
import he_agg.stats
unflatten(*flatten({"a": np.ones(2)}))
assert not Spy.seen, Spy.seen
"""


def test_torch_is_imported_only_when_a_tensor_is_given() -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _NO_TORCH], check=True)


# -- dense packing in the layout ------------------------------------------------------------


def test_dense_layout_json_and_digest() -> None:
    """"packing": "dense" is part of the JSON and the digest; slot layouts keep their pinned JSON."""
    from he_agg.packing import PACKINGS

    update = {"w": np.zeros((2, 3), np.float32)}
    slots, dense = flatten(update)[1], flatten(update, packing="dense")[1]
    assert (slots.packing, dense.packing) == ("slots", "dense") and PACKINGS == ("slots", "dense")
    assert "packing" not in slots.to_json() and dense.to_json()["packing"] == "dense"
    assert slots.digest != dense.digest
    assert Layout.from_json(dense.to_json()) == dense
    assert Layout.from_json(dense.to_json()).digest == dense.digest
    explicit = dict(slots.to_json(), packing="slots")  # accepted; canonical form omits it
    assert Layout.from_json(explicit).digest == slots.digest


@pytest.mark.parametrize("bad", ["Dense", "", None, 1, ["dense"]])
def test_unknown_packing_refused(bad: object) -> None:
    layout = flatten(np.ones(3))[1]
    with pytest.raises(FormatError, match="packing"):
        Layout.from_json(dict(layout.to_json(), packing=bad))


def test_check_layout_names_a_packing_mix() -> None:
    from he_agg.packing import PackingMismatchError

    slots, dense = flatten(np.ones(3))[1], flatten(np.ones(3), packing="dense")[1]
    with pytest.raises(PackingMismatchError, match="'dense'.*'slots'"):
        check_layout(dense, slots)
    assert issubclass(PackingMismatchError, LayoutMismatchError)
    check_layout(dense, flatten(np.zeros(3), packing="dense")[1])
