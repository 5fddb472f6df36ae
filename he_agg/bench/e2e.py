"""End to end: client encrypt, server aggregate, committee decrypt, beside TenSEAL alone.

he_agg pipeline: ``encrypt`` (pack + TenSEAL under the committee key) → ``Aggregator.add``
on the wire bytes (validate, hash, sum) → approvals from a quorum of members (each
recomputes the aggregate from the submissions and signs the request) → t decryption
shares against the quorum certificate + ``combine``.
TenSEAL-only pipeline (single key, no threshold): ``ckks_vector(...).serialize()`` →
``ckks_vector_from`` + ``+=`` → ``decrypt()``.

Encrypting K clients × V values takes ~0.8 s per client and million values, so only
``--distinct`` clients (default 4) are encrypted (and timed, per client); the K
submissions cycle through their payloads under K distinct client ids. The server-side
work is identical to K distinct payloads of the same size.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import numpy as np

from he_agg.bench import common
from he_agg.bench.common import measure
from he_agg.params import AGGREGATION

__all__ = ["add_arguments", "render", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=common.positive_int, default=10, help="clients K (default 10)")
    parser.add_argument("--values", type=common.positive_int, default=1 << 16, help="values per client (default 65536)")
    parser.add_argument("--distinct", type=common.positive_int, default=4, help="clients actually encrypted (default 4)")
    parser.add_argument("--parties", type=common.positive_int, default=5, help="committee size n (default 5)")
    parser.add_argument("--threshold", type=common.positive_int, default=3, help="threshold t (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the plaintext values (never for keys)")


def _time(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tenseal as ts

    import he_agg

    if not 2 <= args.threshold <= args.parties <= 12:
        raise common.BenchError("need 2 <= --threshold <= --parties <= 12 (replicated sharing)")
    if args.clients < 2:
        raise common.BenchError("--clients must be at least 2: a member's default policy never decrypts one client")
    distinct = min(args.distinct, args.clients)
    common.check_memory(distinct * args.values * 64 * 4, "lower --values or --distinct")
    params = AGGREGATION
    rng = np.random.default_rng(args.seed)
    plain = rng.uniform(-1.0, 1.0, (distinct, args.values))
    counts = np.bincount(np.arange(args.clients) % distinct, minlength=distinct)
    expected_sum = (plain * counts[:, None]).sum(axis=0)
    single = common.tenseal_context(params)
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("committee key generation", total=2 * distinct + 2 * args.clients + 3)
        keygen_s, committee = _time(lambda: he_agg.Committee.dealer_free(
            args.parties, args.threshold, params, policy=he_agg.Policy(budget=1 << 20)))
        ctx = committee.public_context
        bar.update(task, description="encrypting (he_agg)")
        payloads, encrypt_times = [], []
        for i in range(distinct):
            seconds, enc = _time(lambda i=i: he_agg.encrypt(ctx, plain[i], client_id=f"c{i}", round_id=1,
                                                            max_clients=args.clients))
            encrypt_times.append(seconds)
            payloads.append(enc)
            bar.advance(task)
        wire_s, blobs = _time(lambda: [p.to_bytes() for p in payloads])
        bar.update(task, description="encrypting (TenSEAL alone)")
        tenseal_blobs, tenseal_encrypt = [], []
        for i in range(distinct):
            with common.quiet_stdout():
                seconds, blob = _time(lambda i=i: ts.ckks_vector(single, plain[i].tolist()).serialize())
            tenseal_encrypt.append(seconds)
            tenseal_blobs.append(blob)
            bar.advance(task)
        bar.update(task, description="server aggregate (he_agg)")
        aggregator = he_agg.Aggregator(ctx, 1, min_clients=1)  # retains submissions: members verify
        aggregate_s = 0.0
        for k in range(args.clients):
            blob = _renamed(blobs[k % distinct], k)  # a distinct client id, the same residues (untimed)
            start = time.perf_counter()
            aggregator.add(blob)
            aggregate_s += time.perf_counter() - start
            bar.advance(task)
        active = list(range(args.threshold))
        request = aggregator.decryption_request(active_sets=[active])
        bar.update(task, description="server aggregate (TenSEAL)")
        start = time.perf_counter()
        with common.quiet_stdout():
            total = ts.ckks_vector_from(single, tenseal_blobs[0])
            for k in range(1, args.clients):
                total += ts.ckks_vector_from(single, tenseal_blobs[k % distinct])
                bar.advance(task)
        tenseal_aggregate_s = time.perf_counter() - start
        bar.update(task, description="committee approve")
        submissions = aggregator.contributions
        approve_times, approvals = [], []
        for member in range(he_agg.quorum_size(ctx.parties, ctx.colluders)):  # a repeat re-verifies and re-sends
            timing, approval = measure(functools.partial(committee[member].approve, request,
                                                         contributions=submissions), 3)
            approve_times.append(timing.best)
            approvals.append(approval)
        certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
        bar.update(task, description="committee decrypt")
        share_times, shares = [], []
        for party in active:  # a repeated identical request is recomputed, deterministic, budget-free
            timing, share = measure(functools.partial(committee[party].decryption_share, request, certificate,
                                                      active), 3)
            share_times.append(timing.best)
            shares.append(share)
        combine_timing, _ = measure(lambda: he_agg.combine(request, shares), 3)
        combine_s = combine_timing.best
        mean = aggregator.finalize(shares)
        with common.quiet_stdout():
            tenseal_decrypt_s, tenseal_total = _time(total.decrypt)
        bar.advance(task, 3)
    values = args.values
    return {
        "clients": args.clients, "values": values, "distinct_clients_encrypted": distinct,
        "parties": args.parties, "threshold": args.threshold,
        "keygen_s": keygen_s,
        "client_encrypt_s": float(np.mean(encrypt_times)),
        "tenseal_client_encrypt_s": float(np.mean(tenseal_encrypt)),
        "client_to_bytes_s": wire_s / distinct,
        "server_aggregate_s": aggregate_s,
        "tenseal_server_aggregate_s": tenseal_aggregate_s,
        "server_aggregate_per_client_s": aggregate_s / args.clients,
        "quorum": len(approvals),
        "approve_s": float(np.mean(approve_times)),
        "approve_max_s": max(approve_times),
        "share_s": float(np.mean(share_times)),
        "combine_s": combine_s,
        "decrypt_only_s": max(share_times) + combine_s,
        "committee_decrypt_s": max(approve_times) + max(share_times) + combine_s,
        "committee_decrypt_total_cpu_s": sum(approve_times) + sum(share_times) + combine_s,
        "tenseal_decrypt_s": tenseal_decrypt_s,
        "bytes_per_client": len(blobs[0]),
        "bytes_per_value": len(blobs[0]) / values,
        "tenseal_bytes_per_value": len(tenseal_blobs[0]) / values,
        "max_abs_error": float(np.abs(mean - expected_sum).max()),
        "tenseal_max_abs_error": float(np.abs(np.asarray(tenseal_total) - expected_sum).max()),
        **common.machine_info(),
    }


def _renamed(blob: bytes, k: int) -> bytes:
    """The payload under another client id, residues untouched (a re-sealed envelope)."""
    from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope

    env = open_envelope(blob, Kind.ENCRYPTED_UPDATE, "benchmark payload")
    meta = env.meta.as_dict()
    meta["client"] = f"client-{k}"
    return seal_envelope(Kind.ENCRYPTED_UPDATE, meta, env.body)


def render(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"End to end: {result['clients']} clients × {result['values']:,} values, "
                        f"{result['threshold']}-of-{result['parties']} committee")
    table.add_column("phase")
    table.add_column("he_agg", justify="right")
    table.add_column("TenSEAL alone", justify="right")
    rows = [
        ("client encrypt (per client)", result["client_encrypt_s"], result["tenseal_client_encrypt_s"]),
        ("server aggregate (all clients)", result["server_aggregate_s"], result["tenseal_server_aggregate_s"]),
        ("decrypt (committee incl. approval, parallel members)", result["committee_decrypt_s"],
         result["tenseal_decrypt_s"]),
    ]
    for name, ours, theirs in rows:
        table.add_row(name, f"{ours:.3f} s", f"{theirs:.3f} s")
    table.add_row(f"  of which approval ({result['quorum']} members, slowest)", f"{result['approve_max_s']:.3f} s", "")
    table.add_row("  of which shares + combine", f"{result['decrypt_only_s']:.3f} s", "")
    table.add_row("bytes per value", f"{result['bytes_per_value']:.2f}", f"{result['tenseal_bytes_per_value']:.2f}")
    table.add_row("max abs error of the mean/sum", f"{result['max_abs_error']:.1e}", f"{result['tenseal_max_abs_error']:.1e}")
    return table
