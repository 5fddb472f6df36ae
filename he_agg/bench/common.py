"""Helpers shared by the ``he-agg`` commands: timing, quiet TenSEAL, progress, output, plots.

Nothing here is on a hot path of the library; it is imported only by the CLI and the
benchmarks. Heavy or optional imports (TenSEAL, matplotlib) happen inside functions.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from he_agg.errors import UsageError
from he_agg.params import Params

__all__ = [
    "BenchError",
    "Timing",
    "available_memory",
    "check_memory",
    "check_plot_path",
    "emit_json",
    "he_agg_version",
    "machine_info",
    "make_progress",
    "measure",
    "progress_wanted",
    "quiet_stdout",
    "require_matplotlib",
    "tenseal_context",
    "to_jsonable",
]

T = TypeVar("T")

PLOT_HINT = "pip install he_agg[plot]"


class BenchError(UsageError):
    """A command that cannot run as asked (a missing optional package, too little memory)."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1, with a message saying what was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- timing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeat`` runs of one operation."""

    runs: tuple[float, ...]

    @property
    def best(self) -> float:
        """The minimum: the least disturbed run, what the benchmark reports."""
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def measure(
    fn: Callable[[], T],
    repeat: int,
    *,
    setup: Callable[[], object] | None = None,
    on_run: Callable[[], object] | None = None,
) -> tuple[Timing, T]:
    """Time ``fn()`` ``repeat`` times (``setup()`` untimed before each); return the last result.

    The garbage collector is paused while timing, as ``timeit`` does; the previous run's
    result is dropped before the next run so that large results are not held twice.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    runs: list[float] = []
    result: T | None = None
    for _ in range(repeat):
        result = None
        if setup is not None:
            setup()
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            result = fn()
            runs.append(time.perf_counter() - start)
        finally:
            if enabled:
                gc.enable()
        if on_run is not None:
            on_run()
    return Timing(tuple(runs)), result  # type: ignore[return-value]


# -- TenSEAL ------------------------------------------------------------------------------


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (std::cout writes through them when stdout is a pipe)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the block: silences TenSEAL's C++ warnings.

    TenSEAL prints a multi-line WARNING to stdout (from C++, below Python's ``sys.stdout``)
    for every vector longer than N/2 values, which would corrupt ``--json`` output.
    C's stdio buffers are flushed on both sides so nothing buffered leaks out later.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            _flush_c_stdio()
            os.dup2(saved, 1)
    finally:
        os.close(saved)


def tenseal_context(params: Params) -> Any:
    """A TenSEAL CKKS context (with its secret key) for ``params``: the benchmark's clients."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.n, coeff_mod_bit_sizes=params.to_tenseal_bit_sizes())
    ctx.global_scale = params.scale
    return ctx


# -- progress -----------------------------------------------------------------------------


def progress_wanted(json_output: bool) -> bool:
    """Progress bars only for a person at a terminal: never with --json or when piped."""
    return not json_output and sys.stdout.isatty() and sys.stderr.isatty()


def make_progress(enabled: bool) -> Any:
    """A rich Progress on stderr (a silent one when not ``enabled``); use it as a context."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


# -- output -------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for a result (numpy scalars, tuples, nested dicts)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def emit_json(result: Mapping[str, Any]) -> None:
    """Print the result as one JSON object on stdout."""
    print(json.dumps(to_jsonable(result), indent=2, allow_nan=False))


def key_value_table(result: Mapping[str, Any], title: str | None = None) -> Any:
    """A two-column rich table of a flat result (the default human-readable view)."""
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.items():
        table.add_row(key, format_value(value))
    return table


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)


def check_plot_path(path: str) -> None:
    """Refuse (BenchError) a --plot path that cannot be written, before any long work."""
    import pathlib

    folder = pathlib.Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise BenchError(f"--plot {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise BenchError(f"--plot {path}: the folder {folder} is not writable; choose another path")


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` with the Agg backend, or a BenchError saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(f"--plot needs matplotlib, which is not installed: run `{PLOT_HINT}`") from None
    return plt


# -- machine and memory --------------------------------------------------------------------


def he_agg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("he_agg")
    except PackageNotFoundError:
        import he_agg

        return str(getattr(he_agg, "__version__", "unknown (not installed)"))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), if known."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def check_memory(needed: int, advice: str) -> None:
    """Refuse up front (BenchError) a run that would need more memory than is available."""
    available = available_memory()
    if available is not None and needed > available:
        raise BenchError(
            f"this run needs about {needed / 1e9:.1f} GB of memory and {available / 1e9:.1f} GB "
            f"are available; {advice}"
        )
