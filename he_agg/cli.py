"""The ``he-agg`` command line.

Adding a command is one line in :data:`COMMANDS`: its words and the module implementing it.
A command module provides

* ``add_arguments(parser)``: its own options (the CLI itself adds ``--json`` to every command);
* ``run(args) -> dict``: does the work and returns its figures as one flat, JSON-able dict;
* optionally ``render(result)``: a rich renderable for people (default: a key/value table);
* optionally ``plot(result, path)``: the CLI then adds ``--plot PATH`` (PNG; matplotlib is
  checked before the run starts, so a missing package never costs a long run).

The first line of the module's docstring is its help text. Modules are imported when the
parser is built, so they should import heavy packages (TenSEAL, numba) inside ``run``.

Exit codes: 0 success; 2 bad arguments or a he_agg error (one line on stderr, no
traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from he_agg.errors import HeAggError

__all__ = ["COMMANDS", "GROUPS", "build_parser", "main"]

#: Command words -> implementing module. One line per command.
COMMANDS: dict[tuple[str, ...], str] = {
    ("bench", "aggregate"): "he_agg.bench.aggregate",
    ("bench", "all"): "he_agg.bench.all",
    ("bench", "decrypt"): "he_agg.bench.decrypt",
    ("bench", "e2e"): "he_agg.bench.e2e",
    ("bench", "memory"): "he_agg.bench.memory",
    ("demo",): "he_agg.demo",
}

#: Help for the words that group commands.
GROUPS: dict[tuple[str, ...], str] = {
    ("bench",): "benchmarks against TenSEAL and the memory floor",
}

PROG = "he-agg"


def _summary(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _subparsers(parent: argparse.ArgumentParser, path: tuple[str, ...]) -> Any:
    words = " ".join(path)
    return parent.add_subparsers(
        title="commands", metavar="COMMAND", required=True,
        dest="_command_" + "_".join(path) if path else "_command",
        help=f"run `{PROG} {words + ' ' if words else ''}COMMAND --help` for its options",
    )


def _add_command(groups: dict[tuple[str, ...], Any], words: tuple[str, ...], module_name: str) -> None:
    """Register one command under its group parsers (created on first use)."""
    for depth in range(1, len(words)):
        prefix = words[:depth]
        if prefix not in groups:
            group = groups[words[: depth - 1]].add_parser(
                prefix[-1], help=GROUPS.get(prefix, ""), description=GROUPS.get(prefix))
            groups[prefix] = _subparsers(group, prefix)
    module = importlib.import_module(module_name)
    summary = _summary(module)
    parser = groups[words[:-1]].add_parser(
        words[-1], help=summary, description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON object on stdout (no progress bars)")
    if hasattr(module, "plot"):
        parser.add_argument("--plot", metavar="PATH", default=None,
                            help="also save a PNG chart to PATH (needs `pip install he_agg[plot]`)")
    parser.set_defaults(_module=module)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every registered command."""
    from he_agg.bench.common import he_agg_version

    parser = argparse.ArgumentParser(
        prog=PROG, description="he_agg: CKKS secure aggregation (TenSEAL clients, native summing, "
                               "t-of-n decryption).")
    parser.add_argument("--version", action="version", version=f"{PROG} {he_agg_version()}")
    groups: dict[tuple[str, ...], Any] = {(): _subparsers(parser, ())}
    for words, module_name in COMMANDS.items():
        _add_command(groups, words, module_name)
    return parser


def _execute(args: argparse.Namespace) -> None:
    from he_agg.bench import common

    module: ModuleType = args._module
    plot_path = getattr(args, "plot", None)
    if plot_path is not None:
        common.check_plot_path(plot_path)  # fail now, not after the run
        common.require_matplotlib()
    result = module.run(args)
    if plot_path is not None:
        module.plot(result, plot_path)
        result["plot"] = plot_path
    if args.json:
        common.emit_json(result)
        return
    from rich.console import Console

    renderable = module.render(result) if hasattr(module, "render") else common.key_value_table(result)
    console = Console()
    console.print(renderable)
    if plot_path is not None:
        console.print(f"chart written to {plot_path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``he-agg``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        _execute(args)
    except HeAggError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
