"""Coverage-guided fuzzing (atheris / libFuzzer) of one parser of bytes from another party.

    python fuzz/run.py --target envelope fuzz/corpus/envelope [libFuzzer options…]
    python fuzz/run.py --list

The target's valid objects are rebuilt in each process (fresh committee keys) and written
as ``seed-*`` files into the corpus directory at start-up, replacing older seeds: an upload
or share seed made for another process's committee would only exercise the refusal.

Pass = only :class:`~he_agg.errors.HeAggError` subclasses escape the parser. Anything
else is reported by libFuzzer as a crash and the input saved (``crash-…``). Two more
checks turn a quiet resource bug into a crash:

* **memory**: one input may not raise the process's peak RSS (``ru_maxrss``) by more than
  ``--rss-step-mb`` (default 128): an allocation sized by an unchecked length field trips it
  on the input that made it (the largest legitimate input is a few hundred KiB). The step is
  per input, not cumulative: libFuzzer's own corpus and buffers grow the RSS slowly over a
  run (a cumulative 256 MB cap fired after 159k executions on an input that allocates 0.1
  MB). The libFuzzer option ``-rss_limit_mb`` (4096 unless given) is the backstop;
* **time**: ``-timeout`` (default here 10 s per input).

he_agg's Python code is instrumented for coverage (``atheris.instrument_imports``); the C
kernels run (the fused sums go through them) but are not coverage-instrumented: that
needs clang's ``-fsanitize=fuzzer-no-link`` and this machine has gcc only (docs/FUZZING.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class MemoryCapExceeded(Exception):
    """Peak RSS grew past the cap on one input: an allocation no input this size should cause."""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_capped(parse: object, data: bytes, step_mb: float) -> None:
    """``parse(data)``, HeAggError swallowed; :class:`MemoryCapExceeded` if this one call raised
    the peak RSS by more than ``step_mb``. Any other exception propagates (a finding)."""
    from he_agg.errors import HeAggError

    before = _peak_mb()
    try:
        parse(data)  # type: ignore[operator]
    except HeAggError:
        pass
    step = _peak_mb() - before
    if step > step_mb:
        raise MemoryCapExceeded(f"one {len(data)}-byte input raised the peak RSS by {step:.0f} MB (> {step_mb:.0f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="the parser to fuzz (see --list)")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--rss-step-mb", type=float, default=128.0)
    parser.add_argument("--canary", action="store_true",
                        help="raise a KeyError on every input (proves a foreign exception is reported as a crash)")
    args, rest = parser.parse_known_args(argv)

    import atheris

    with atheris.instrument_imports(include=["he_agg"]):
        import he_agg  # noqa: F401
        from he_agg import aggregator, ciphertext, client, context, enrolled, enrollment, keygen  # noqa: F401
        from he_agg import keyshare, member, quorum, requests  # noqa: F401
        from he_agg.hazmat import files  # noqa: F401
        from he_agg.hazmat.wire import envelope, packed, seal, tenseal  # noqa: F401

    from fuzz.targets import TARGETS, reseal_checksum

    if args.list or not args.target:
        print("\n".join(TARGETS))
        return
    if args.target not in TARGETS:
        parser.error(f"unknown target {args.target!r}; one of: {', '.join(TARGETS)}")
    target = TARGETS[args.target]()
    for seed in target.seeds:
        target.parse(seed)  # the harness is pointed at the right parser
    corpus = next((Path(a) for a in rest if not a.startswith("-")), None)
    if corpus is not None and (corpus.is_dir() or not corpus.exists()):
        from fuzz.seeds import write_target_seeds

        write_target_seeds(target, corpus)  # this process's keys: seeds bound to a committee must match it

    def one_input(data: bytes) -> None:
        if target.envelope:
            if not data:
                return
            mode, data = data[0], data[1:]
            if mode & 1:
                data = reseal_checksum(data)
        if args.canary:
            raise KeyError("canary: not a HeAggError")
        run_capped(target.parse, data, args.rss_step_mb)

    if not any(a.startswith("-rss_limit_mb") for a in rest):
        rest.append("-rss_limit_mb=4096")
    if not any(a.startswith("-timeout") for a in rest):
        rest.append("-timeout=10")
    if not any(a.startswith("-max_len") for a in rest):
        rest.append(f"-max_len={max(len(s) for s in target.seeds) + 4096}")
    os.environ.setdefault("HE_AGG_FUZZ_TARGET", args.target)
    atheris.Setup([sys.argv[0]] + rest, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
