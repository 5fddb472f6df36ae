"""Benchmarks behind ``he-agg bench ...``: he_agg's kernels against TenSEAL and the memory floor.

Each submodule is one command (see :mod:`he_agg.cli`): ``add_arguments(parser)``,
``run(args) -> dict`` and optionally ``render(result)`` and ``plot(result, path)``.
:mod:`he_agg.bench.common` holds what they share.
"""
