"""Cryptographic hygiene: where randomness comes from, and what secrets never do."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from he_agg.hazmat.sampling import INSECURE_deterministic_randomness, KeyedStream, fresh_key
from he_agg.identity import PartyIdentity

PACKAGE = Path(__file__).resolve().parent.parent / "he_agg"
# Code that generates *plaintext data* for demonstrations and benchmarks, never secrets.
DATA_ONLY = {"demo.py", "bench"}


def _sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if not ({p.name} | set(p.relative_to(PACKAGE).parts)) & DATA_ONLY]


def test_no_insecure_randomness() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "random" for a in node.names):
                offenders.append(f"{path.name}: import random")
            if isinstance(node, ast.ImportFrom) and node.module in ("random", "numpy.random"):
                offenders.append(f"{path.name}: from {node.module} import …")
            if isinstance(node, ast.Attribute) and node.attr in ("random", "default_rng") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy"):
                offenders.append(f"{path.name}:{node.lineno}: np.{node.attr}")
    assert len(_sources()) > 20  # the scan really looked at the package
    assert offenders == []


def test_keyed_streams_are_deterministic_and_separated() -> None:
    key = fresh_key()
    assert KeyedStream(key, b"a").read(64) == KeyedStream(key, b"a").read(64)
    assert KeyedStream(key, b"a").read(64) != KeyedStream(key, b"b").read(64)
    assert KeyedStream(fresh_key(), b"a").read(64) != KeyedStream(key, b"a").read(64)
    assert fresh_key() != fresh_key()
    assert "secret" in repr(KeyedStream(key, b"a"))  # says it hides, shows nothing
    assert key.hex() not in repr(KeyedStream(key, b"a"))


def test_deterministic_mode_only_inside_the_named_test_hook() -> None:
    seed = bytes(range(32))
    with INSECURE_deterministic_randomness(seed):
        first = [fresh_key() for _ in range(3)]
    with INSECURE_deterministic_randomness(seed):
        assert [fresh_key() for _ in range(3)] == first
    assert fresh_key() not in first


def test_identities_hide_their_private_key() -> None:
    identity = PartyIdentity.generate()
    assert identity.private_bytes().hex() not in repr(identity)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(identity)
