"""Time t-of-n committee decryption against TenSEAL's single-key decryption of the same ciphertexts.

One run, the same ciphertexts for both: TenSEAL encrypts V values under a context with
a secret key; for this benchmark only, that key is Shamir-shared among n parties (as a
trusted dealer would) so that the committee decrypts exactly the ciphertexts TenSEAL
decrypts. Measured:

* ``tenseal_decrypt_s``: ``CKKSVector.decrypt()`` (what TenSEAL users call);
* ``share_s``: one party's decryption share (flooding noise, NTT, λ·s·c1 + e), per party;
* ``combine_s``: c0 + Σ shares, inverse NTT, exact CRT, decoding;
* ``committee_s`` = slowest share + combine (parties work in parallel on their own
  machines), and ``ratio_vs_tenseal`` = committee_s / tenseal_decrypt_s; also the
  single-machine total (``ratio_total_cpu``: every share and the combine, one after another).
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


def _committee_from_tenseal(ctx: Any, parties: int, threshold: int) -> tuple[Any, list[Any]]:
    """Benchmark-only trusted dealer: Shamir-share TenSEAL's own secret key."""
    from he_agg.context import PublicContext
    from he_agg.hazmat.sampling import KeyedStream, fresh_key
    from he_agg.hazmat.shamir import deal
    from he_agg.hazmat.wire import tenseal as wire
    from he_agg.keyshare import KeyShare, Policy

    data = ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    parts = wire.read_context(data)
    params = parts.params
    secret = wire.read_secret_key(data, params)
    data_secret = np.ascontiguousarray(secret[: len(params.data_moduli)])
    shares = deal(data_secret, params.data_moduli, parties, threshold, KeyedStream.fresh())
    secret.fill(0)
    data_secret.fill(0)
    assert parts.public_key is not None
    context = PublicContext(params, parts.public_key, parties=parties, threshold=threshold, secret_terms=1)
    keys = [KeyShare(context, i, share, fresh_key(), Policy(budget=1 << 30)) for i, share in enumerate(shares)]
    return context, keys


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tenseal as ts

    from he_agg.ciphertext import CiphertextBatch
    from he_agg.committee import combine
    from he_agg.requests import Contribution, DecryptionRequest

    if args.threshold > args.parties:
        raise common.BenchError("--threshold cannot exceed --parties")
    params = AGGREGATION
    common.check_memory(args.values * 64 * 8, "lower --values")
    rng = np.random.default_rng(args.seed)
    plain = rng.uniform(-1.0, 1.0, args.values)
    ctx = common.tenseal_context(params)
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("encrypting with TenSEAL", total=4)
        with common.quiet_stdout():
            vector = ts.ckks_vector(ctx, plain.tolist())
        batch = CiphertextBatch.from_tenseal(vector, params)
        context, keys = _committee_from_tenseal(ctx, args.parties, args.threshold)
        request = DecryptionRequest(context, 0, batch, [Contribution("bench-client", batch.digest)])
        active = tuple(range(args.threshold))
        bar.update(task, advance=1, description="TenSEAL decrypt")
        with common.quiet_stdout():
            tenseal_time, tenseal_values = measure(vector.decrypt, args.repeat)
        bar.update(task, advance=1, description="decryption shares")
        share_times, shares = [], []
        for party in active:
            timing, share = measure(functools.partial(keys[party].decryption_share, request, active), args.repeat)
            share_times.append(timing)
            shares.append(share)
        bar.update(task, advance=1, description="combine and decode")
        combine_time, values = measure(lambda: combine(request, shares), args.repeat)
        bar.update(task, advance=1)
    model = context.noise_model()
    coefficients = batch.count * params.n
    sigma = model.flooding_sigma(request.summed, coefficients)
    share_best = [t.best for t in share_times]
    committee = max(share_best) + combine_time.best
    return {
        "values": args.values,
        "ciphertexts": batch.count,
        "parties": args.parties,
        "threshold": args.threshold,
        "tenseal_decrypt_s": tenseal_time.best,
        "share_s": float(np.mean(share_best)),
        "share_max_s": max(share_best),
        "combine_s": combine_time.best,
        "committee_s": committee,
        "ratio_vs_tenseal": committee / tenseal_time.best,
        "ratio_total_cpu": (sum(share_best) + combine_time.best) / tenseal_time.best,
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
        ("one party's share (mean / slowest)", f"{result['share_s']:.4f} / {result['share_max_s']:.4f} s"),
        ("combine + decode", f"{result['combine_s']:.4f} s"),
        ("committee (parallel parties)", f"{result['committee_s']:.4f} s"),
        ("ratio vs TenSEAL (parallel / one machine)", f"{result['ratio_vs_tenseal']:.2f} / {result['ratio_total_cpu']:.2f}"),
        ("max abs error (he_agg / TenSEAL)", f"{result['max_abs_error']:.2e} / {result['tenseal_max_abs_error']:.2e}"),
        ("documented error bound", f"{result['error_bound']:.2e}"),
        ("flooding σ", f"2^{result['flooding_sigma_log2']:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
