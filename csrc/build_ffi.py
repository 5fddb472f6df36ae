"""cffi out-of-line API-mode builder for he_agg's native core (he_agg._he_agg_native).

Lists the sources and sets the flags; the cdef is read from csrc/he_agg.h between the
CDEF markers, so the C ABI is written down exactly once.
"""

from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("util.c", "sum.c", "ntt.c", "pointwise.c", "crt.c", "noise.c")


def _rel(name: str) -> str:
    """Path of a csrc/ file relative to the working directory (setuptools wants that)."""
    return os.path.relpath(os.path.join(HERE, name))


def _cdef() -> str:
    with open(os.path.join(HERE, "he_agg.h"), encoding="utf-8") as f:
        text = f.read()
    _, _, rest = text.partition("/* CDEF-BEGIN */")
    body, found, _ = rest.partition("/* CDEF-END */")
    if not found:
        raise RuntimeError("csrc/he_agg.h lacks the CDEF-BEGIN/CDEF-END markers")
    return body


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "he_agg._he_agg_native",
    '#include "he_agg.h"',
    sources=[_rel(name) for name in SOURCES],
    include_dirs=[_rel(".")],
    depends=[_rel("he_agg.h"), _rel("modarith.h")],
    extra_compile_args=[
        "-O3",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-ffp-contract=off",  # crt_to_double is bit-exact with numba/numpy: no FMA
    ],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
