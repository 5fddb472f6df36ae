"""Ten hospitals train a model and query statistics; only encrypted aggregates leave a hospital.

Enrolled-client mode (the default, ``--mode enrolled``):

1. A 3-of-5 committee of members with Ed25519 identities publishes its context; every
   hospital enrolls once for the key epoch: it sends one signed dealing (its own secret,
   replicated-shared among the members), every member answers with a signed ack, and each
   member accepts the hospital once all n acks agree. Every message is bytes.
2. Federated feature standardisation: every hospital uploads the moments of its 30
   features (c0 only, 32 bytes per value, plus a ticket signed by its enrolled key); the
   committee releases only the pooled means and variances.
3. Federated logistic regression (FedAvg): each round, every hospital trains locally
   from the global model and uploads its weights, weighted by its number of patients; the
   server sums the uploads; the committee releases only the weighted mean. Each release
   takes two steps: a quorum of members checks the request τ_r (contributors enrolled,
   tickets signed) and approves it, then the request's active set answers with decryption
   shares against that quorum certificate.
   Plaintext FedAvg runs on the same partitions beside it, for comparison.
   With ``--dp EPS`` the training is DP-FedAvg instead: each hospital clips its model
   update (local − global) to L2 norm ``--dp-clip``, the request asks for a Gaussian
   release with the noise multiplier that keeps all rounds within (EPS, 1e-5), and each
   member adds its part of the noise inside its decryption share and refuses past its
   budget (he_agg.dp). The demo prints ε spent after each round (member 0's accountant)
   and the accuracy against non-private FedAvg.
4. A federated statistics query: mean, variance and histogram of one feature.

Public-key mode (``--mode public-key``, for unmodified TenSEAL clients) runs the same
story after dealer-free key generation (three rounds of signed messages); there members
recompute the aggregate from the submissions before approving.

Data: the Wisconsin breast-cancer dataset shipped with scikit-learn (569 patients).

``he-agg demo survival`` runs the federated registry query instead (see
:mod:`he_agg.demo_survival`): pooled Kaplan–Meier curves, incidence and a log-rank test.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats
from .aggregator import Aggregator
from .committee import Committee
from .client import encrypt
from .dp import DPPolicy, DPSpec, noise_multiplier_for
from .context import EnrolledContext, PublicContext
from .enrolled import EnrolledClient
from .errors import UsageError
from .hazmat.replicated import MAX_MEMBERS
from .identity import PartyIdentity
from .keygen import KeygenConfig, KeygenParty
from .keyshare import Policy
from .member import EnrolledMember, EnrolledPolicy
from .params import AGGREGATION, ENROLLED
from .quorum import QuorumCertificate, quorum_size
from .requests import DecryptionRequest, EnrolledRequest

__all__ = ["MODES", "STORIES", "add_arguments", "check_committee", "open_session", "plot", "render", "run",
           "split_rows"]

MODES = ("enrolled", "public-key")
#: The stories `he-agg demo` tells: FedAvg and a statistics query (default), the survival registry query.
STORIES = ("fedavg", "survival")
EPOCH = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("story", nargs="?", choices=STORIES, default=STORIES[0],
                        help="fedavg (default): FedAvg and a statistics query on breast-cancer data; "
                             "survival: pooled Kaplan–Meier, incidence and log-rank across registry sites")
    parser.add_argument("--mode", choices=MODES, default="enrolled",
                        help="enrolled clients (default) or public-key mode for unmodified TenSEAL clients")
    parser.add_argument("--hospitals", type=int, default=10, help="simulated hospitals / sites (default 10)")
    parser.add_argument("--rounds", type=int, default=6, help="federated training rounds (default 6)")
    parser.add_argument("--local-epochs", type=int, default=20, help="gradient steps per hospital per round")
    parser.add_argument("--parties", type=int, default=5, help="committee size n (default 5)")
    parser.add_argument("--threshold", type=int, default=3, help="committee threshold t (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="seed for the data split only (never for keys)")
    parser.add_argument("--dp", type=float, default=None, metavar="EPS",
                        help="differential privacy enforced by the committee: total budget ε (δ = 1e-5); "
                             "fedavg trains with DP-FedAvg, survival releases noisy counts")
    parser.add_argument("--dp-clip", type=float, default=1.0, metavar="C",
                        help="DP-FedAvg: L2 clip of each hospital's model update (default 1.0)")
    from . import demo_survival

    demo_survival.add_arguments(parser)


@dataclass
class _Timer:
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds


def _load_partitions(hospitals: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, list[str]]:
    try:
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("the demo needs scikit-learn: pip install 'he_agg[demo]'") from None
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target)
    parts = [(x_train[idx], y_train[idx]) for idx in split_rows(len(x_train), hospitals, seed, margin=10)]
    return parts, x_test, y_test, list(data.feature_names)


def split_rows(count: int, parts: int, seed: int, margin: int) -> list[np.ndarray]:
    """Row indices 0…count−1 split at random into ``parts`` non-empty sites, the first and last
    holding at least ``margin`` rows. Plaintext demo data only: the seed never touches keys."""
    if parts < 1 or parts - 1 > count - 2 * margin:
        raise UsageError(f"cannot split {count} rows into {parts} sites")
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    cuts = np.sort(rng.choice(np.arange(margin, count - margin), parts - 1, replace=False))
    return np.split(order, cuts)


# -- public-key mode -----------------------------------------------------------------------


class _PublicKeyRounds:
    """Dealer-free key generation, then rounds of TenSEAL-style encryption under the collective key."""

    setup_phase = "key generation"
    budget_unit = "shares"

    def __init__(self, parties: int, threshold: int, hospitals: int, dp_policy: DPPolicy | None = None) -> None:
        self.hospitals = hospitals
        self.committee, self.setup_bytes = _keygen(parties, threshold, dp_policy)
        self.last: Any = None

    def round(self, updates: list[Any], round_id: int, timer: _Timer, weights: list[float] | None = None,
              dp: DPSpec | None = None) -> tuple[Any, int]:
        value, sent, self.last = _encrypted_round(self.committee, updates, round_id, timer, weights, dp)
        return value, sent

    def budget_used(self) -> int:
        return self.committee[0].used

    def dp_budget(self) -> Any:
        return self.committee[0].dp_budget()


def _keygen(parties: int, threshold: int, dp_policy: DPPolicy | None = None) -> tuple[Committee, int]:
    """Dealer-free key generation, every message as bytes; returns the committee and the
    bytes member 0 broadcast over the three rounds."""
    identities = [PartyIdentity.generate() for _ in range(parties)]
    config = KeygenConfig.new(AGGREGATION, threshold, [i.public_key for i in identities])
    members = [KeygenParty(config, i, ident) for i, ident in enumerate(identities)]
    first = [m.round1() for m in members]  # commitments + seeds sealed to each member
    second = [m.round2(first) for m in members]  # commitments to the public-key pieces
    third = [m.round3(second) for m in members]  # the pieces revealed
    key_shares = [m.finish(third, Policy(min_clients=3, budget=64, dp=dp_policy)) for m in members]
    if len({k.context.committee_id for k in key_shares}) != 1:
        raise UsageError("the members ended key generation with different committees")
    return Committee(key_shares[0].context, key_shares), len(first[0]) + len(second[0]) + len(third[0])


def _encrypted_round(committee: Committee, updates: list[Any], round_id: int, timer: _Timer,
                     weights: list[float] | None = None, dp: DPSpec | None = None) -> tuple[Any, int, Any]:
    """One round: every hospital encrypts, the server sums, t parties decrypt the aggregate."""
    context: PublicContext = committee.public_context
    start = time.perf_counter()
    clip = None if dp is None else dp.clip_l2
    blobs = [encrypt(context, u, weight=None if weights is None else weights[i], client_id=f"hospital-{i}",
                     round_id=round_id, clip_l2=clip).to_bytes() for i, u in enumerate(updates)]
    timer.add("client encrypt", time.perf_counter() - start)
    start = time.perf_counter()
    aggregator = Aggregator(context, round_id, min_clients=3, dp=dp)
    for blob in blobs:
        aggregator.add(blob)
    active = list(range(committee.context.threshold))
    request_bytes = aggregator.decryption_request(active_sets=[active]).to_bytes()
    timer.add("server aggregate", time.perf_counter() - start)
    # Every member receives the request and the submissions as bytes and recomputes the sum.
    submissions = aggregator.contributions
    start = time.perf_counter()
    quorum = range(quorum_size(context.parties, context.colluders))
    received = {p: DecryptionRequest.from_bytes(request_bytes, context) for p in quorum}
    approvals = [committee[p].approve(received[p], contributions=submissions).to_bytes() for p in quorum]
    timer.add("committee approve", time.perf_counter() - start)
    start = time.perf_counter()
    request = received[0]
    certificate = QuorumCertificate.collect(request.round_id, request.digest, approvals).to_bytes()
    shares = [committee[p].decryption_share(received[p], certificate).to_bytes() for p in active]
    value = aggregator.finalize(shares)
    timer.add("committee decrypt", time.perf_counter() - start)
    return value, len(blobs[0]), aggregator.result


# -- enrolled-client mode ------------------------------------------------------------------


class _EnrolledRounds:
    """Members publish an enrolled context; every hospital enrolls (dealing → acks) once for the
    epoch; each round moves uploads, τ_r, approvals, the certificate and shares as bytes."""

    setup_phase = "enrollment"
    budget_unit = "coefficients"

    def __init__(self, parties: int, threshold: int, hospitals: int, dp_policy: DPPolicy | None = None) -> None:
        identities = [PartyIdentity.generate() for _ in range(parties)]
        context = EnrolledContext(ENROLLED, tuple(i.public_key for i in identities), threshold)
        wire = context.to_bytes()  # what the hospitals and the server receive
        self.context = EnrolledContext.from_bytes(wire, ENROLLED)
        # Each member floods for this policy's whole epoch: at most every hospital in one release,
        # 2^24 coefficients answered (about 2,000 single-ciphertext releases) before re-enrollment.
        policy = EnrolledPolicy(min_clients=3, max_clients=max(hospitals, 3), epoch_coefficients=1 << 24, dp=dp_policy)
        self.last: Any = None
        self.members = [EnrolledMember.create(EnrolledContext.from_bytes(wire, ENROLLED), i, identity, policy)
                        for i, identity in enumerate(identities)]
        self.hospitals = hospitals
        self.clients = [self._enroll(f"hospital-{k}") for k in range(hospitals)]
        self.setup_bytes = len(wire) + self._dealing_bytes + parties * self._ack_bytes

    def _enroll(self, client_id: str) -> EnrolledClient:
        client = EnrolledClient.create(self.context, client_id, EPOCH)
        for member in self.members:  # each member's operator admits the hospital's key
            member.enrollment.admit(client_id, client.public_key)
        dealing = client.dealing()  # one signed message, the same bytes to every member
        acks = [member.enrollment.receive(dealing) for member in self.members]
        for member in self.members:
            member.enrollment.accept(acks)  # all n acks "ok" on one dealing → enrolled
        client.confirm(acks)
        self._dealing_bytes, self._ack_bytes = len(dealing), max(len(a) for a in acks)
        return client

    def round(self, updates: list[Any], round_id: int, timer: _Timer, weights: list[float] | None = None,
              dp: DPSpec | None = None) -> tuple[Any, int]:
        context = self.context
        start = time.perf_counter()
        clip = None if dp is None else dp.clip_l2
        blobs = [client.encrypt(u, round_id=round_id, weight=None if weights is None else weights[i], clip_l2=clip,
                                max_clients=self.hospitals) for i, (client, u) in enumerate(zip(self.clients, updates))]
        timer.add("client encrypt", time.perf_counter() - start)
        start = time.perf_counter()
        aggregator = Aggregator(context, round_id, epoch=EPOCH, min_clients=3, dp=dp)
        for blob in blobs:
            aggregator.add(blob)
        active = list(range(context.threshold))
        request_bytes = aggregator.decryption_request(active_sets=[active]).to_bytes()
        timer.add("server aggregate", time.perf_counter() - start)
        # Each member receives τ_r as bytes, checks contributors and tickets, and signs it.
        start = time.perf_counter()
        quorum = range(quorum_size(context.parties, context.colluders))
        received = {p: EnrolledRequest.from_bytes(request_bytes, self.members[p].context) for p in quorum}
        approvals = [self.members[p].approve(received[p]).to_bytes() for p in quorum]
        timer.add("committee approve", time.perf_counter() - start)
        start = time.perf_counter()
        request = received[0]
        certificate = QuorumCertificate.collect(request.round_id, request.digest, approvals).to_bytes()
        shares = [self.members[p].decryption_share(received[p], certificate).to_bytes() for p in active]
        value = aggregator.finalize(shares)
        timer.add("committee decrypt", time.perf_counter() - start)
        self.last = aggregator.result
        return value, len(blobs[0])

    def budget_used(self) -> int:
        return self.members[0].spent(EPOCH)

    def dp_budget(self) -> Any:
        return self.members[0].dp_budget()


DP_DELTA = 1e-5


def _dp_setup(args: argparse.Namespace) -> tuple[DPSpec | None, DPPolicy | None]:
    """``--dp EPS``: the noise multiplier keeping ``--rounds`` Gaussian releases within (EPS, δ),
    the request's spec, and the members' policy (budget EPS; the demo's statistics rounds
    stay non-DP, so the policy does not require DP on every release)."""
    epsilon = getattr(args, "dp", None)
    if epsilon is None:
        return None, None
    if not epsilon > 0 or not getattr(args, "dp_clip", 1.0) > 0:
        raise UsageError("--dp and --dp-clip must be positive")
    z = noise_multiplier_for(epsilon, DP_DELTA, releases=args.rounds)
    spec = DPSpec(z, clip_l2=float(args.dp_clip), delta=DP_DELTA)
    return spec, DPPolicy(epsilon=epsilon, delta=DP_DELTA, min_noise_multiplier=z, require=False)


def _reference_ranges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of a range enclosing every value, widened to round numbers."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    unit = 10.0 ** np.floor(np.log10(np.maximum(hi - lo, 1e-12)))
    lo, hi = np.floor(lo / unit) * unit, np.ceil(hi / unit) * unit
    return (lo + hi) / 2.0, (hi - lo) / 2.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _local_train(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, np.ndarray]:
    w, b = model["w"].copy(), float(model["b"][0])
    for _ in range(epochs):
        p = _sigmoid(x @ w + b)
        w -= 0.5 * (x.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * float(np.mean(p - y))
    return {"w": w, "b": np.array([b])}


def _accuracy(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((_sigmoid(x @ model["w"] + model["b"][0]) > 0.5) == y))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo story; returns every number it reports (``--json`` prints this)."""
    from .bench import common

    if getattr(args, "story", STORIES[0]) == "survival":
        from . import demo_survival

        return demo_survival.run(args)
    if getattr(args, "plot", None) is not None:
        raise UsageError("--plot draws the pooled survival curves: use it with `he-agg demo survival`")

    steps = args.rounds + 3
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("demo", total=steps)

        def step(message: str) -> None:
            bar.update(task, description=message[:28])
            bar.advance(task)

        return _run(args, step)


def check_committee(args: argparse.Namespace, min_sites: int = 3) -> None:
    """Refuse (UsageError) a committee or site count the demo cannot run."""
    if not 2 <= args.threshold <= args.parties <= MAX_MEMBERS or args.hospitals < min_sites or args.rounds < 1:
        raise UsageError(f"the demo needs 2 <= --threshold <= --parties <= {MAX_MEMBERS}, --hospitals >= {min_sites} "
                         "and --rounds >= 1")


def open_session(mode: str, parties: int, threshold: int, clients: int, timer: _Timer,
                 dp_policy: DPPolicy | None = None) -> _EnrolledRounds | _PublicKeyRounds:
    """The committee and its clients, ready for rounds: enrollment (enrolled mode) or
    dealer-free key generation (public-key mode), timed as the setup phase. With
    ``dp_policy`` every member enforces it (budget, σ floor) on the releases asking for DP."""
    kind = _EnrolledRounds if mode == "enrolled" else _PublicKeyRounds
    start = time.perf_counter()
    session = kind(parties, threshold, clients, dp_policy)
    timer.add(kind.setup_phase, time.perf_counter() - start)
    return session


def _run(args: argparse.Namespace, step: Any) -> dict[str, Any]:
    check_committee(args)
    timer = _Timer()
    parts, x_test, y_test, names = _load_partitions(args.hospitals, args.seed)
    features = x_test.shape[1]
    report: dict[str, Any] = {"mode": args.mode, "hospitals": args.hospitals, "patients": [len(y) for _, y in parts],
                              "committee": f"{args.threshold}-of-{args.parties}", "rounds": []}

    dp_spec, dp_policy = _dp_setup(args)
    if dp_spec is not None:
        report["dp"] = {"epsilon": args.dp, "delta": DP_DELTA, "clip_l2": dp_spec.clip_l2,
                        "noise_multiplier": dp_spec.noise_multiplier}
    step("client enrollment" if args.mode == "enrolled" else "dealer-free key generation")
    session = open_session(args.mode, args.parties, args.threshold, args.hospitals, timer, dp_policy)
    if args.mode == "enrolled":
        report["enrollment_message_bytes"] = session.setup_bytes
    else:
        report["keygen_message_bytes"] = session.setup_bytes

    step("federated standardisation (encrypted moments of every feature)")
    # Public reference ranges (in practice: published clinical ranges). Each hospital
    # encodes moments of (x - centre) / half_width in [-1, 1], so every slot stays small.
    centre, half = _reference_ranges(np.concatenate([x for x, _ in parts] + [x_test]))
    unit = stats.Moments(-1.0, 1.0)
    encodings = [np.concatenate([unit.encode((x[:, j] - centre[j]) / half[j]) for j in range(features)])
                 for x, _ in parts]
    summed, _ = session.round(encodings, 0, timer)
    pooled = [unit.decode(summed[3 * j : 3 * j + 3]) for j in range(features)]
    mean = centre + half * np.array([p.mean for p in pooled])
    std = half * np.array([p.std for p in pooled])
    train_all = np.concatenate([x for x, _ in parts])
    report["standardisation_max_error"] = float(max(np.abs(mean - train_all.mean(0)).max(),
                                                    np.abs(std - train_all.std(0)).max()))
    scaled = [((x - mean) / std, y) for x, y in parts]
    x_test_scaled = (x_test - mean) / std

    encrypted = {"w": np.zeros(features), "b": np.zeros(1)}
    plain = {"w": np.zeros(features), "b": np.zeros(1)}
    sizes = [float(len(y)) for _, y in scaled]
    for round_id in range(1, args.rounds + 1):
        step(f"federated training round {round_id}/{args.rounds}")
        local = [_local_train(encrypted, x, y, args.local_epochs) for x, y in scaled]
        dp_row: dict[str, Any] = {}
        if dp_spec is None:
            encrypted, sent = session.round(local, round_id, timer, sizes)
        else:  # DP-FedAvg: clipped updates, unweighted, noised by the committee; global += Σ / hospitals
            deltas = [{k: m[k] - encrypted[k] for k in encrypted} for m in local]
            summed_delta, sent = session.round(deltas, round_id, timer, dp=dp_spec)
            encrypted = {k: encrypted[k] + summed_delta[k] / len(scaled) for k in encrypted}
            account = session.dp_budget()
            dp_row = {"epsilon_spent": account.epsilon, "noise_std": session.last.noise_std / len(scaled)}
        plain_local = [_local_train(plain, x, y, args.local_epochs) for x, y in scaled]
        plain = {k: np.average([m[k] for m in plain_local], axis=0, weights=sizes) for k in plain}
        report["rounds"].append({
            "round": round_id,
            "encrypted_accuracy": _accuracy(encrypted, x_test_scaled, y_test),
            "plaintext_accuracy": _accuracy(plain, x_test_scaled, y_test),
            "max_weight_difference": float(max(np.abs(encrypted[k] - plain[k]).max() for k in plain)),
            "bytes_per_client": sent,
            **dp_row,
        })

    step("federated statistics query")
    feature = names.index("mean radius")
    column = [x[:, feature] for x, _ in parts]
    moment, histogram = stats.Moments(0.0, 40.0), stats.Histogram(tuple(np.arange(5.0, 31.0, 2.5).tolist()))
    query = [np.concatenate([moment.encode(c), histogram.encode(c)]) for c in column]
    summed, _ = session.round(query, args.rounds + 1, timer)
    m, h = moment.decode(summed[: moment.length]), histogram.decode(summed[moment.length :])
    report["query"] = {
        "feature": "mean radius", "count": m.count, "mean": m.mean, "variance": m.sample_variance,
        "histogram_edges": h.edges.tolist(), "histogram_counts": h.counts.tolist(),
        "plaintext_mean": float(np.concatenate(column).mean()),
        "plaintext_variance": float(np.concatenate(column).var(ddof=1)),
    }
    report["seconds_per_phase"] = timer.phases
    report["decryption_budget_used"] = session.budget_used()
    report["decryption_budget_unit"] = session.budget_unit
    return report


def plot(report: dict[str, Any], path: str) -> None:
    """Save the story's chart (the survival story's pooled curves) as a PNG."""
    from . import demo_survival

    demo_survival.plot(report, path)


def phase_table(seconds_per_phase: dict[str, float]) -> Any:
    """A rich table of the seconds each phase took (both stories print it)."""
    from rich.table import Table

    table = Table(title="Seconds per phase (every party simulated in this process)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in seconds_per_phase.items():
        table.add_row(name, f"{seconds:.3f}")
    return table


def render(report: dict[str, Any]) -> Any:
    """A human-readable account of the report (a rich renderable)."""
    from rich.console import Group
    from rich.table import Table

    if report.get("story") == "survival":
        from . import demo_survival

        return demo_survival.render(report)

    if report["mode"] == "enrolled":
        setup = (f"{report['committee']} in enrolled-client mode (each hospital enrolled once: a dealing to "
                 f"every member and their acks, {report['enrollment_message_bytes'] / 1e3:.1f} kB per hospital)")
    else:
        setup = (f"{report['committee']} in public-key mode, by dealer-free key generation "
                 f"({report['keygen_message_bytes'] / 1e3:.0f} kB broadcast per party over three rounds)")
    lines: list[Any] = [
        f"[bold]{report['hospitals']} hospitals[/] ({sum(report['patients'])} training patients), committee "
        f"{setup}; each release approved by a quorum certificate",
        f"Federated standardisation: pooled means/stds of 30 features within "
        f"{report['standardisation_max_error']:.1e} of the plaintext values",
    ]
    dp = report.get("dp")
    if dp is None:
        table = Table(title="Federated logistic regression (weighted FedAvg)")
        for column in ("round", "encrypted FedAvg acc.", "plaintext FedAvg acc.", "max |Δ weight|", "bytes / client"):
            table.add_column(column, justify="right")
        for r in report["rounds"]:
            table.add_row(str(r["round"]), f"{r['encrypted_accuracy']:.3f}", f"{r['plaintext_accuracy']:.3f}",
                          f"{r['max_weight_difference']:.1e}", f"{r['bytes_per_client']:,}")
    else:
        table = Table(title=f"DP-FedAvg (ε = {dp['epsilon']:g}, δ = {dp['delta']:g}, clip {dp['clip_l2']:g}, noise "
                            f"multiplier {dp['noise_multiplier']:.3f}) vs non-private FedAvg")
        for column in ("round", "ε spent", "noise std / weight", "DP-FedAvg acc.", "non-private acc.", "accuracy cost"):
            table.add_column(column, justify="right")
        for r in report["rounds"]:
            table.add_row(str(r["round"]), f"{r['epsilon_spent']:.3f}", f"{r['noise_std']:.3g}",
                          f"{r['encrypted_accuracy']:.3f}", f"{r['plaintext_accuracy']:.3f}",
                          f"{r['plaintext_accuracy'] - r['encrypted_accuracy']:+.3f}")
    lines.append(table)
    q = report["query"]
    lines.append(f"Query '{q['feature']}': n={q['count']}, mean {q['mean']:.4f} (plaintext {q['plaintext_mean']:.4f}), "
                 f"variance {q['variance']:.4f} (plaintext {q['plaintext_variance']:.4f})")
    lines.append("  histogram " + " ".join(f"[{a:g},{b:g}):{c}" for a, b, c in
                                           zip(q["histogram_edges"], q["histogram_edges"][1:], q["histogram_counts"])))
    lines.append(phase_table(report["seconds_per_phase"]))
    lines.append(f"Decryption budget used by committee member 0: {report['decryption_budget_used']:,} "
                 f"{report['decryption_budget_unit']}")
    return Group(*lines)
