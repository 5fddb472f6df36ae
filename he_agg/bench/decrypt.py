"""Time t-of-n committee decryption against TenSEAL's single-key decryption of the same ciphertexts.

One run, the same ciphertexts for both: TenSEAL encrypts V values under a context with
a secret key; for this benchmark only, that key is replicated-shared among n members (as
a trusted dealer would: one sub-secret per (t−1)-subset, summing to TenSEAL's key) so that
the committee decrypts exactly the ciphertexts TenSEAL decrypts. Measured:

* ``tenseal_decrypt_s``: ``CKKSVector.decrypt()`` (what TenSEAL users call);
* ``approve_s``: one member's approval — it parses nothing more than the request, recomputes
  the aggregate from the submission (its policy verifies) and signs the request digest;
  q = ⌈(n + c + 1)/2⌉ members approve, in parallel on their own machines;
* ``share_s``: one member's decryption share against the quorum certificate (certificate
  check, flooding noise, NTT, σ·c1 + e), per member;
* ``combine_s``: c0 + Σ shares, inverse NTT, exact CRT, decoding;
* ``committee_s`` = slowest approval + slowest share + combine (members work in parallel),
  and ``ratio_vs_tenseal`` = committee_s / tenseal_decrypt_s; ``decrypt_only_s`` leaves the
  approval out; ``ratio_total_cpu``: every approval, share and the combine on one machine.
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Any

import numpy as np

from he_agg.bench import common
from he_agg.bench.common import measure
from he_agg.params import AGGREGATION

__all__ = ["add_arguments", "render", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--values", type=common.positive_int, default=1 << 18, help="values decrypted (default 262144)")
    parser.add_argument("--parties", type=common.positive_int, default=5, help="committee size n (default 5)")
    parser.add_argument("--threshold", type=common.positive_int, default=3, help="threshold t (default 3)")
    parser.add_argument("--repeat", type=common.positive_int, default=3, help="timed runs per method (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the plaintext values (never for keys)")


def _split_key(coefficients: np.ndarray, parties: int, threshold: int) -> list[np.ndarray]:
    """Benchmark-only: int8 sub-secrets, one per (t−1)-subset, that sum to ``coefficients``.

    Random ternary masks and one correcting term when that term fits in int8; otherwise
    each coefficient goes whole to one subset (sub-secrets stay ternary). Either way the
    timing of a share is the same: it adds the assigned sub-secrets, whatever they hold.
    """
    from he_agg.hazmat.replicated import expand_ternary, subsets
    from he_agg.hazmat.sampling import KeyedStream, fresh_key

    count = len(subsets(parties, threshold))
    n = coefficients.size
    if count <= 100:
        masks = [expand_ternary(fresh_key(), b"he_agg.bench.decrypt", n).astype(np.int64) for _ in range(count - 1)]
        last = coefficients.astype(np.int64) - (np.sum(masks, axis=0) if masks else 0)
        return [m.astype(np.int8) for m in masks] + [last.astype(np.int8)]
    owner = np.frombuffer(KeyedStream.fresh().read(4 * n), dtype=np.uint32) % count
    return [np.where(owner == k, coefficients, 0).astype(np.int8) for k in range(count)]


def _committee_from_tenseal(ctx: Any, parties: int, threshold: int) -> tuple[Any, list[Any]]:
    """Benchmark-only trusted dealer: replicated-share TenSEAL's own secret key."""
    from he_agg.context import PublicContext
    from he_agg.hazmat import kernels
    from he_agg.hazmat.replicated import held_subsets
    from he_agg.hazmat.sampling import fresh_key
    from he_agg.hazmat.wire import tenseal as wire
    from he_agg.identity import PartyIdentity
    from he_agg.keyshare import KeyShare, Policy

    data = ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    parts = wire.read_context(data)
    params = parts.params
    secret = wire.read_secret_key(data, params)
    kernels.ntt_inverse(secret, params.moduli)
    q0 = params.moduli[0]
    coefficients = np.where(secret[0] > q0 // 2, secret[0].astype(np.int64) - q0, secret[0].astype(np.int64))
    secret.fill(0)
    pieces = _split_key(coefficients, parties, threshold)
    coefficients.fill(0)
    identities = [PartyIdentity.generate() for _ in range(parties)]
    assert parts.public_key is not None
    context = PublicContext(params, parts.public_key, parties=parties, threshold=threshold,
                            roster=tuple(i.public_key for i in identities), secret_terms=1)
    # One client's ciphertext: the policy admits a single contributor; it still verifies the sum.
    policy = Policy(budget=1 << 30, min_clients=1)
    keys = [KeyShare(context, i, identities[i], {k: pieces[k] for k in held_subsets(i, parties, threshold)},
                     fresh_key(), policy) for i in range(parties)]
    return context, keys


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tenseal as ts

    from he_agg.ciphertext import CiphertextBatch
    from he_agg.committee import combine
    from he_agg.quorum import QuorumCertificate, quorum_size
    from he_agg.requests import Contribution, DecryptionRequest

    if not 2 <= args.threshold <= args.parties <= 12:
        raise common.BenchError("need 2 <= --threshold <= --parties <= 12 (replicated sharing)")
    params = AGGREGATION
    common.check_memory(args.values * 64 * 8, "lower --values")
    rng = np.random.default_rng(args.seed)
    plain = rng.uniform(-1.0, 1.0, args.values)
    ctx = common.tenseal_context(params)
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("encrypting with TenSEAL", total=5)
        with common.quiet_stdout():
            vector = ts.ckks_vector(ctx, plain.tolist())
        batch = CiphertextBatch.from_tenseal(vector, params)
        context, keys = _committee_from_tenseal(ctx, args.parties, args.threshold)
        active = tuple(range(args.threshold))
        request = DecryptionRequest(context, 0, batch, [Contribution("bench-client", batch.digest)],
                                    active_sets=[active])
        submissions = {"bench-client": batch.to_bytes()}  # what members receive beside the request
        bar.update(task, advance=1, description="TenSEAL decrypt")
        with common.quiet_stdout():
            tenseal_time, tenseal_values = measure(vector.decrypt, args.repeat)
        bar.update(task, advance=1, description="approvals")
        approve_times, approvals = [], []
        for member in range(quorum_size(context.parties, context.colluders)):  # a repeat re-verifies, re-sends
            timing, approval = measure(functools.partial(keys[member].approve, request, contributions=submissions),
                                       args.repeat)
            approve_times.append(timing)
            approvals.append(approval)
        certificate = QuorumCertificate.collect(request.round_id, request.digest, approvals)
        bar.update(task, advance=1, description="decryption shares")
        share_times, shares = [], []
        for member in active:
            timing, share = measure(functools.partial(keys[member].decryption_share, request, certificate, active),
                                    args.repeat)
            share_times.append(timing)
            shares.append(share)
        bar.update(task, advance=1, description="combine and decode")
        combine_time, values = measure(lambda: combine(request, shares), args.repeat)
        bar.update(task, advance=1)
    model = context.noise_model()
    coefficients = batch.count * params.n
    sigma = model.flooding_sigma(request.summed, coefficients)
    approve_best = [t.best for t in approve_times]
    share_best = [t.best for t in share_times]
    decrypt_only = max(share_best) + combine_time.best
    committee = max(approve_best) + decrypt_only
    return {
        "values": args.values,
        "ciphertexts": batch.count,
        "parties": args.parties,
        "threshold": args.threshold,
        "quorum": len(approvals),
        "tenseal_decrypt_s": tenseal_time.best,
        "approve_s": float(np.mean(approve_best)),
        "approve_max_s": max(approve_best),
        "share_s": float(np.mean(share_best)),
        "share_max_s": max(share_best),
        "combine_s": combine_time.best,
        "decrypt_only_s": decrypt_only,
        "committee_s": committee,
        "ratio_vs_tenseal": committee / tenseal_time.best,
        "ratio_total_cpu": (sum(approve_best) + sum(share_best) + combine_time.best) / tenseal_time.best,
        "max_abs_error": float(np.abs(values - plain).max()),
        "tenseal_max_abs_error": float(np.abs(np.asarray(tenseal_values) - plain).max()),
        "error_bound": model.error_bound(request.summed, coefficients, args.threshold, args.values),
        "flooding_sigma_log2": math.log2(sigma),
        "statistical_bits": context.statistical_bits,
        "release_distance_log2": model.release_distance_log2(coefficients),
        "tenseal_decrypt_median_s": tenseal_time.median,
        "combine_median_s": combine_time.median,
        "repeat": args.repeat,
        **common.machine_info(),
    }


def render(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"Committee decryption ({result['threshold']}-of-{result['parties']}) vs TenSEAL, "
                        f"{result['values']:,} values in {result['ciphertexts']} ciphertexts")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("TenSEAL single-key decrypt", f"{result['tenseal_decrypt_s']:.4f} s"),
        (f"one member's approval, {result['quorum']} approve (mean / slowest)",
         f"{result['approve_s']:.4f} / {result['approve_max_s']:.4f} s"),
        ("one member's share (mean / slowest)", f"{result['share_s']:.4f} / {result['share_max_s']:.4f} s"),
        ("combine + decode", f"{result['combine_s']:.4f} s"),
        ("shares + combine (parallel members)", f"{result['decrypt_only_s']:.4f} s"),
        ("committee incl. approval (parallel members)", f"{result['committee_s']:.4f} s"),
        ("ratio vs TenSEAL (parallel / one machine)", f"{result['ratio_vs_tenseal']:.2f} / {result['ratio_total_cpu']:.2f}"),
        ("max abs error (he_agg / TenSEAL)", f"{result['max_abs_error']:.2e} / {result['tenseal_max_abs_error']:.2e}"),
        ("documented error bound", f"{result['error_bound']:.2e}"),
        ("flooding σ", f"2^{result['flooding_sigma_log2']:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
