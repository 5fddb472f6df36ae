"""End to end, both modes side by side: client encrypt, server aggregate, member time, beside TenSEAL alone.

Enrolled-client mode (default of he_agg): K clients enroll once for the epoch (timed
apart: it happens once per epoch, not per round), then each round every client uploads
c0 only (``EnrolledClient.encrypt``: 32 bytes per value), the server sums the uploads,
a quorum of members approves τ_r (checking every contributor's signed ticket) and the
active set answers with shares computed from the clients' seeds and the round's public
polynomials; ``finalize`` combines them. Every client encrypts its own upload.

Public-key mode (unmodified TenSEAL clients): ``encrypt`` (pack + TenSEAL under the
committee key) → ``Aggregator.add`` → approvals from a quorum of members (each recomputes
the aggregate from the submissions and signs the request) → t shares + ``combine``.
Encrypting there costs ~1.4 s per client and million values, so only ``--distinct``
clients (default 4) are encrypted and timed; the K submissions cycle through their
payloads under K distinct client ids (the server's and members' work is the same).

TenSEAL alone (single key, no threshold): ``ckks_vector(...).serialize()`` of the same
values → ``ckks_vector_from`` + ``+=`` → ``decrypt()``.

Server aggregation is timed the same way in both modes: uploads are made ahead, in batches
of at most 1 GiB, and each batch is added back to back, as by a server that receives them
and does nothing else. (Making an upload right before adding it, in one process, would
charge the server for the client's cache evictions.)

Member time per round is, for each member of the quorum, its approval plus (for the
active set) its decryption share, each on one core; members run in parallel in practice.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any, Callable

import numpy as np

from he_agg.bench import common
from he_agg.bench.common import measure
from he_agg.params import AGGREGATION, ENROLLED

__all__ = ["MODES", "add_arguments", "plot", "render", "run"]

MODES = ("both", "enrolled", "public-key")
_SMALL = 1 << 22  # clients × values below which member steps are timed three times (minimum reported)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default="both",
                        help="which he_agg mode to run beside TenSEAL (default both)")
    parser.add_argument("--clients", type=common.positive_int, default=10, help="clients K (default 10)")
    parser.add_argument("--values", type=common.positive_int, default=1 << 16, help="values per client (default 65536)")
    parser.add_argument("--distinct", type=common.positive_int, default=4,
                        help="clients encrypted with TenSEAL, alone and in public-key mode (default 4)")
    parser.add_argument("--parties", type=common.positive_int, default=5, help="committee size n (default 5)")
    parser.add_argument("--threshold", type=common.positive_int, default=3, help="threshold t (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the plaintext values (never for keys)")
    parser.add_argument("--packing", choices=("slots", "dense"), default="slots",
                        help="enrolled mode's packing: CKKS slots (N/2 values per ciphertext) or dense "
                             "coefficients (N per ciphertext, no FFT; default slots)")
    parser.add_argument("--packed", action="store_true",
                        help="enrolled uploads with residues packed to ⌈log2 q⌉ bits")
    parser.add_argument("--preset", choices=("enrolled", "compact"), default="enrolled",
                        help="enrolled mode's parameters: ENROLLED (2 x 60-bit primes, scale 2^94) or COMPACT "
                             "(52 + 51 bits, scale 2^86; for dense packing)")


_BATCH_BYTES = 1 << 30  # uploads made ahead of the server's timed adds, at most this many bytes at a time


def _add_all(add: Callable[[bytes], Any], make: Callable[[int], bytes], count: int,
             step: Callable[..., None]) -> tuple[float, int]:
    """Seconds to ``add`` uploads 0..count-1 back to back, made by ``make(k)`` (untimed here)
    in batches of at most :data:`_BATCH_BYTES`; and the size of one upload."""
    seconds, size, k = 0.0, 0, 0
    while k < count:
        batch: list[bytes] = []
        while k < count and (not batch or (len(batch) + 1) * size <= _BATCH_BYTES):
            batch.append(make(k))
            size = len(batch[-1])
            k += 1
            step()
        start = time.perf_counter()
        for blob in batch:
            add(blob)
        seconds += time.perf_counter() - start
        step(advance=len(batch))
        del batch
    return seconds, size


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class _Values:
    """The plaintext: ``distinct`` vectors, client k holds vector k mod distinct."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.clients, self.distinct = args.clients, min(args.distinct, args.clients)
        rng = np.random.default_rng(args.seed)
        self.plain = rng.uniform(-1.0, 1.0, (self.distinct, args.values))
        counts = np.bincount(np.arange(self.clients) % self.distinct, minlength=self.distinct)
        self.expected_sum = (self.plain * counts[:, None]).sum(axis=0)

    def of(self, k: int) -> np.ndarray:
        return self.plain[k % self.distinct]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 2 <= args.threshold <= args.parties <= 12:
        raise common.BenchError("need 2 <= --threshold <= --parties <= 12 (replicated sharing)")
    if args.clients < 3:
        raise common.BenchError("--clients must be at least 3: a member's default policy never decrypts fewer")
    modes = ("enrolled", "public-key") if args.mode == "both" else (args.mode,)
    distinct = min(args.distinct, args.clients)
    pk_bytes = args.clients * args.values * 64 if "public-key" in modes else 0  # retained submissions
    batch = min(_BATCH_BYTES, args.clients * args.values * 64)  # uploads made ahead of the timed adds
    common.check_memory(pk_bytes + distinct * args.values * 64 * 4 + batch, "lower --values, --clients or --distinct")
    values = _Values(args)
    result: dict[str, Any] = {"mode": args.mode, "clients": args.clients, "values": args.values,
                              "parties": args.parties, "threshold": args.threshold,
                              "distinct_clients_encrypted": distinct}
    steps = 2 * distinct + 2 + (3 * args.clients + 3 if "enrolled" in modes else 0) \
        + (distinct + args.clients + 3 if "public-key" in modes else 0)
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("TenSEAL alone", total=steps)

        def step(description: str | None = None, advance: int = 1) -> None:
            if description is not None:
                bar.update(task, description=description)
            bar.advance(task, advance)

        result.update(_tenseal(values, args, step))
        if "enrolled" in modes:
            result.update(_prefixed("enrolled", _enrolled(values, args, step)))
            result["enrolled_encrypt_speedup_vs_tenseal"] = (result["tenseal_client_encrypt_s"]
                                                             / result["enrolled_client_encrypt_s"])
        if "public-key" in modes:
            result.update(_prefixed("public_key", _public_key(values, args, step)))
    result.update(common.machine_info())
    return result


def _prefixed(prefix: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in figures.items()}


# -- TenSEAL alone ---------------------------------------------------------------------------


def _tenseal(values: _Values, args: argparse.Namespace, step: Callable[..., None]) -> dict[str, Any]:
    import tenseal as ts

    single = common.tenseal_context(AGGREGATION)
    blobs, times = [], []
    step("encrypting (TenSEAL alone)", 0)
    for i in range(values.distinct):
        with common.quiet_stdout():
            seconds, blob = _time(lambda i=i: ts.ckks_vector(single, values.plain[i].tolist()).serialize())
        times.append(seconds)
        blobs.append(blob)
        step()
    step("server aggregate (TenSEAL)", 0)
    start = time.perf_counter()
    with common.quiet_stdout():
        total = ts.ckks_vector_from(single, blobs[0])
        for k in range(1, args.clients):
            total += ts.ckks_vector_from(single, blobs[k % values.distinct])
    aggregate_s = time.perf_counter() - start
    step()
    with common.quiet_stdout():
        decrypt_s, decrypted = _time(total.decrypt)
    step()
    return {
        "tenseal_client_encrypt_s": float(np.mean(times)),
        "tenseal_server_aggregate_s": aggregate_s,
        "tenseal_decrypt_s": decrypt_s,
        "tenseal_bytes_per_value": len(blobs[0]) / args.values,
        "tenseal_max_abs_error": float(np.abs(np.asarray(decrypted) - values.expected_sum).max()),
    }


# -- the members' side, common to both modes --------------------------------------------------


def _member_figures(approve_times: list[float], share_times: dict[int, float], combine_s: float) -> dict[str, Any]:
    """Per-member time per round (approval + share if active), mean and max, plus the committee's critical path."""
    per_member = [a + share_times.get(i, 0.0) for i, a in enumerate(approve_times)]
    shares = list(share_times.values())
    return {
        "quorum": len(approve_times),
        "approve_s": float(np.mean(approve_times)),
        "approve_max_s": max(approve_times),
        "share_s": float(np.mean(shares)),
        "share_max_s": max(shares),
        "member_round_s": float(np.mean(per_member)),
        "member_round_max_s": max(per_member),
        "combine_s": combine_s,
        "decrypt_only_s": max(shares) + combine_s,
        "committee_decrypt_s": max(approve_times) + max(shares) + combine_s,
        "committee_decrypt_total_cpu_s": sum(approve_times) + sum(shares) + combine_s,
    }


# -- enrolled-client mode ----------------------------------------------------------------------


def _enrolled(values: _Values, args: argparse.Namespace, step: Callable[..., None]) -> dict[str, Any]:
    import he_agg
    from he_agg.hazmat.noise import EnrolledNoiseModel

    policy = he_agg.EnrolledPolicy(max_clients=max(1000, args.clients))  # the default policy, or sized for K
    from he_agg.params import COMPACT

    params = COMPACT if args.preset == "compact" else ENROLLED
    committee = he_agg.EnrolledCommittee.generate(args.parties, args.threshold, params, policy=policy)
    ctx = committee.public_context
    step("enrollment (once per epoch)", 0)
    clients, enroll_s = [], 0.0
    for k in range(args.clients):
        seconds, client = _time(lambda k=k: committee.client(f"client-{k}"))
        enroll_s += seconds
        clients.append(client)
        step()
    step("encrypting (enrolled)", 0)
    aggregator = he_agg.Aggregator(ctx, 1, min_clients=3)
    encrypt_times: list[float] = []

    def upload(k: int) -> bytes:
        seconds, blob = _time(lambda: clients[k].encrypt(values.of(k), round_id=1, max_clients=args.clients,
                                                         packing=args.packing, packed=args.packed))
        encrypt_times.append(seconds)
        return blob

    aggregate_s, upload_bytes = _add_all(aggregator.add, upload, len(clients), step)
    active = list(range(args.threshold))
    request = aggregator.decryption_request(active_sets=[active])
    repeat = 3 if args.clients * args.values <= _SMALL else 1
    step("members approve τ_r", 0)
    approve_times, approvals = [], []
    for member in range(he_agg.quorum_size(ctx.parties, ctx.colluders)):  # a repeat returns the stored signature
        timing, approval = measure(functools.partial(committee[member].approve, request), repeat)
        approve_times.append(timing.best)
        approvals.append(approval)
    certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
    step("members' shares", 0)
    share_times, shares = {}, []
    for member in active:  # a repeat of the same request is recomputed, identical and budget-free
        timing, share = measure(functools.partial(committee[member].decryption_share, request, certificate), repeat)
        share_times[member] = timing.best
        shares.append(share)
    step()
    combine_timing, total = measure(lambda: aggregator.finalize(shares), repeat)  # combine + decode + unflatten
    step(advance=2)
    sigma = committee[0].sigma
    bound = EnrolledNoiseModel(ctx.params, ctx.statistical_bits).error_bound(sigma, args.threshold, args.clients,
                                                                             args.values,
                                                                             dense=args.packing == "dense")
    return {
        "packing": args.packing,
        "packed": args.packed,
        "preset": args.preset,
        "server_round_s": aggregate_s + combine_timing.best,
        "enrollment_s": enroll_s,
        "enrollment_per_client_s": enroll_s / args.clients,
        "dealing_bytes": len(clients[0].dealing()),
        "client_encrypt_s": float(np.mean(encrypt_times)),
        "client_encrypt_max_s": max(encrypt_times),
        "server_aggregate_s": aggregate_s,
        "server_aggregate_per_client_s": aggregate_s / args.clients,
        **_member_figures(approve_times, share_times, combine_timing.best),
        "bytes_per_client": upload_bytes,
        "bytes_per_value": upload_bytes / args.values,
        "max_abs_error": float(np.abs(total - values.expected_sum).max()),
        "error_bound": bound,
        "flooding_sigma_log2": float(np.log2(sigma)),
    }


# -- public-key mode ---------------------------------------------------------------------------


def _public_key(values: _Values, args: argparse.Namespace, step: Callable[..., None]) -> dict[str, Any]:
    import he_agg

    step("committee key generation", 0)
    keygen_s, committee = _time(lambda: he_agg.Committee.dealer_free(
        args.parties, args.threshold, AGGREGATION, policy=he_agg.Policy(budget=1 << 20)))
    ctx = committee.public_context
    step("encrypting (public-key)", 0)
    payloads, encrypt_times = [], []
    for i in range(values.distinct):
        seconds, enc = _time(lambda i=i: he_agg.encrypt(ctx, values.plain[i], client_id=f"c{i}", round_id=1,
                                                        max_clients=args.clients))
        encrypt_times.append(seconds)
        payloads.append(enc)
        step()
    wire_s, blobs = _time(lambda: [p.to_bytes() for p in payloads])
    step("server aggregate (public-key)", 0)
    aggregator = he_agg.Aggregator(ctx, 1, min_clients=1)  # retains submissions: members verify
    # a distinct client id per upload, the same residues (the renaming is untimed)
    aggregate_s, _ = _add_all(aggregator.add, lambda k: _renamed(blobs[k % values.distinct], k), args.clients,
                              lambda advance=1: step(advance=advance / 2))
    active = list(range(args.threshold))
    request = aggregator.decryption_request(active_sets=[active])
    repeat = 3 if args.clients * args.values <= _SMALL else 1
    step("members approve (recompute)", 0)
    submissions = aggregator.contributions
    approve_times, approvals = [], []
    for member in range(he_agg.quorum_size(ctx.parties, ctx.colluders)):  # a repeat re-verifies and re-sends
        timing, approval = measure(functools.partial(committee[member].approve, request,
                                                     contributions=submissions), repeat)
        approve_times.append(timing.best)
        approvals.append(approval)
    certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
    step("members' shares", 0)
    share_times, shares = {}, []
    for member in active:  # a repeated identical request is recomputed, deterministic, budget-free
        timing, share = measure(functools.partial(committee[member].decryption_share, request, certificate,
                                                  active), repeat)
        share_times[member] = timing.best
        shares.append(share)
    step()
    combine_timing, total = measure(lambda: aggregator.finalize(shares), repeat)  # combine + decode + unflatten
    step(advance=2)
    return {
        "keygen_s": keygen_s,
        "client_encrypt_s": float(np.mean(encrypt_times)),
        "client_to_bytes_s": wire_s / values.distinct,
        "server_aggregate_s": aggregate_s,
        "server_aggregate_per_client_s": aggregate_s / args.clients,
        **_member_figures(approve_times, share_times, combine_timing.best),
        "bytes_per_client": len(blobs[0]),
        "bytes_per_value": len(blobs[0]) / args.values,
        "max_abs_error": float(np.abs(total - values.expected_sum).max()),
    }


def _renamed(blob: bytes, k: int) -> bytes:
    """The payload under another client id, residues untouched (a re-sealed envelope)."""
    from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope

    env = open_envelope(blob, Kind.ENCRYPTED_UPDATE, "benchmark payload")
    meta = env.meta.as_dict()
    meta["client"] = f"client-{k}"
    return seal_envelope(Kind.ENCRYPTED_UPDATE, meta, env.body)


# -- output ------------------------------------------------------------------------------------

_COLUMNS = (("enrolled", "enrolled"), ("public_key", "public-key"))


def _columns(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(prefix, name) for prefix, name in _COLUMNS if f"{prefix}_client_encrypt_s" in result]


def render(result: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    columns = _columns(result)
    table = Table(title=f"End to end: {result['clients']:,} clients × {result['values']:,} values, "
                        f"{result['threshold']}-of-{result['parties']} committee")
    table.add_column("per round")
    for _, name in columns:
        table.add_column(f"he_agg {name}", justify="right")
    table.add_column("TenSEAL alone", justify="right")

    def row(label: str, key: str | None, tenseal: str = "", fmt: str = "{:.3f} s") -> None:
        cells = [fmt.format(result[f"{p}_{key}"]) if key and f"{p}_{key}" in result else "" for p, _ in columns]
        table.add_row(label, *cells, tenseal)

    row("client encrypt (per client)", "client_encrypt_s", f"{result['tenseal_client_encrypt_s']:.3f} s")
    row("upload bytes per value", "bytes_per_value", f"{result['tenseal_bytes_per_value']:.2f}", "{:.2f}")
    row("server aggregate (all clients)", "server_aggregate_s", f"{result['tenseal_server_aggregate_s']:.3f} s")
    row("member time: approve + share (mean)", "member_round_s")
    row("member time: approve + share (max)", "member_round_max_s")
    row("  of which approval (max)", "approve_max_s")
    row("  of which share (max)", "share_max_s")
    row("combine", "combine_s")
    row("committee decrypt (parallel members)", "committee_decrypt_s", f"{result['tenseal_decrypt_s']:.3f} s")
    row("max abs error of the sum", "max_abs_error", f"{result['tenseal_max_abs_error']:.1e}", "{:.1e}")
    parts: list[Any] = [table]
    if "enrolled_enrollment_s" in result:
        parts.append(f"Enrolled client encryption is {result['enrolled_encrypt_speedup_vs_tenseal']:.1f}× faster "
                     f"than TenSEAL's; enrollment (once per epoch, every member in this process): "
                     f"{result['enrolled_enrollment_per_client_s'] * 1e3:.1f} ms per client, dealing "
                     f"{result['enrolled_dealing_bytes'] / 1e3:.1f} kB.")
    return Group(*parts)


def plot(result: dict[str, Any], path: str) -> None:
    """Grouped horizontal bars: seconds per phase for each mode and TenSEAL alone."""
    plt = common.require_matplotlib()
    phases = [("client encrypt\n(per client)", "client_encrypt_s"), ("server aggregate", "server_aggregate_s"),
              ("member time\n(max)", "member_round_max_s")]
    series = [(name, [result.get(f"{p}_{key}") for _, key in phases], color)
              for (p, name), color in zip(_columns(result), ("#1f77b4", "#ff7f0e"))]
    series.append(("TenSEAL alone", [result["tenseal_client_encrypt_s"], result["tenseal_server_aggregate_s"],
                                     result["tenseal_decrypt_s"]], "#9e9e9e"))
    fig, ax = plt.subplots(figsize=(8, 4))
    height = 0.8 / len(series)
    for s, (name, secs, color) in enumerate(series):
        ys = [i + s * height for i in range(len(phases))]
        ax.barh(ys, secs, height=height, color=color, label=name)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(phases))], [p for p, _ in phases])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (lower is better; TenSEAL's member time is its single-key decrypt)")
    ax.set_title(f"{result['clients']:,} clients × {result['values']:,} values, "
                 f"{result['threshold']}-of-{result['parties']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
