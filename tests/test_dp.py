"""Committee-enforced differential privacy (he_agg.dp): calibration, colluders, accounting, budget.

Each claim of docs/DP.md has its test here. Statistical tests use many independent noise
values (every released value carries independent noise) and bounds of 6 standard errors.
"""

from __future__ import annotations

import dataclasses

import math
from pathlib import Path
from typing import Any, Sequence

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import he_agg
from he_agg import stats
from he_agg.committee import Committee, combine_enrolled
from he_agg.dp import (
    DPBudgetError,
    DPPolicy,
    DPPolicyError,
    DPRelease,
    DPSensitivityError,
    DPSpec,
    coefficient_sigma,
    epsilon_spent,
    noise_multiplier_for,
)
from he_agg.errors import FormatError
from he_agg.hazmat import kernels
from he_agg.hazmat.noise import dp_noise, dp_part_variance, dp_shift
from he_agg.hazmat.sampling import KeyedStream, fresh_key
from he_agg.keyshare import Policy
from he_agg.member import EnrolledCommittee, EnrolledMember, EnrolledPolicy
from he_agg.requests import EnrolledRequest

CLIENTS = 4
WIDE = DPPolicy(epsilon=1e4, delta=1e-5, min_noise_multiplier=0.5)


def _variance_ok(samples: np.ndarray, expected: float, sigmas: float = 6.0) -> bool:
    """Sample variance within ``sigmas`` standard errors (√(2/n)) of ``expected``."""
    n = samples.size
    return abs(float(np.var(samples)) / expected - 1.0) <= sigmas * math.sqrt(2.0 / n)


@pytest.fixture(scope="module")
def committee() -> EnrolledCommittee:
    return EnrolledCommittee.generate(5, 3, policy=EnrolledPolicy(dp=WIDE), colluders=1)


@pytest.fixture(scope="module")
def clients(committee: EnrolledCommittee) -> list[Any]:
    return [committee.client(f"site-{k}") for k in range(CLIENTS)]


def _round(committee: EnrolledCommittee, clients: Sequence[Any], updates: Sequence[np.ndarray], round_id: int, *,
           spec: DPSpec | None, packing: str = "dense", clip_l2: float | None = None,
           active_sets: Any = None) -> tuple[he_agg.EnrolledAggregator, EnrolledRequest]:
    agg = he_agg.Aggregator(committee.public_context, round_id, dp=spec)
    for client, update in zip(clients, updates):
        agg.add(client.encrypt(update, round_id=round_id, clip_l2=clip_l2, packing=packing))
    return agg, agg.decryption_request(active_sets)


# -- the noise part and its calibration ---------------------------------------------------


@pytest.mark.parametrize("sigma", [1e6, 2.0**75, 2.0**100])
def test_dp_part_has_its_variance(sigma: float) -> None:
    """One member's part: 2^k·X + U has the variance dp_part_variance (≥ σ²), zero mean."""
    params = he_agg.ENROLLED
    part = dp_noise(KeyedStream(fresh_key(), b"test"), 2, sigma, params)
    kernels.ntt_inverse(part, params.data_moduli)
    values = kernels.crt_to_double(part, params.data_moduli, 1.0).reshape(-1)
    assert dp_part_variance(sigma) >= sigma**2
    assert _variance_ok(values, dp_part_variance(sigma))
    assert abs(float(values.mean())) <= 6.0 * sigma / math.sqrt(values.size)
    assert dp_shift(sigma) == max(0, math.floor(math.log2(sigma)) - 59)


def test_dp_part_is_deterministic_in_its_label() -> None:
    key = fresh_key()
    a = dp_noise(KeyedStream(key, b"label"), 1, 2.0**80, he_agg.ENROLLED)
    b = dp_noise(KeyedStream(key, b"label"), 1, 2.0**80, he_agg.ENROLLED)
    c = dp_noise(KeyedStream(key, b"other"), 1, 2.0**80, he_agg.ENROLLED)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_slot_variance_through_the_canonical_embedding() -> None:
    """Coefficient noise of variance v gives each slot's real part variance v·(N/2)/Δ² exactly."""
    from he_agg.hazmat.decryption import decode_phase

    params = he_agg.ENROLLED
    sigma = 2.0**80
    part = dp_noise(KeyedStream(fresh_key(), b"slots"), 4, sigma, params)
    slots = decode_phase(part, params).reshape(-1)
    expected = dp_part_variance(sigma) * (params.n / 2.0) / params.scale**2
    assert _variance_ok(np.real(slots), expected)


@pytest.mark.parametrize("packing", ["dense", "slots"])
def test_released_noise_has_the_calibrated_variance(committee: EnrolledCommittee, clients: list[Any],
                                                    packing: str) -> None:
    """Many values over several releases: released − exact has variance σ²·t/(t−c), as reported."""
    spec = DPSpec(1.5, clip_l2=2.0)
    rng = np.random.default_rng(5)
    errors = []
    base = 10 if packing == "dense" else 20
    for r in range(3):
        updates = [rng.uniform(-0.01, 0.01, 3000) for _ in clients]
        agg, request = _round(committee, clients, updates, base + r, spec=spec, packing=packing, clip_l2=2.0)
        released = agg.finalize(committee.shares(request))
        errors.append(np.asarray(released) - np.sum(updates, axis=0))
        result = agg.result
        assert result is not None and result.epsilon == pytest.approx(epsilon_spent([1.5], 1e-5))
        assert result.delta == 1e-5
        ctx = committee.public_context
        sigma = 1.5 * 2.0
        assert result.noise_std == pytest.approx(sigma * math.sqrt(ctx.threshold / (ctx.threshold - ctx.colluders)))
    samples = np.concatenate(errors)
    assert abs(float(samples.mean())) < 6 * result.noise_std / math.sqrt(samples.size)
    assert _variance_ok(samples, result.noise_std**2)


def test_colluder_removing_its_part_leaves_the_guaranteed_variance(committee: EnrolledCommittee,
                                                                   clients: list[Any]) -> None:
    """c = 1: the colluder subtracts its own part; the t − c honest parts still carry σ²."""
    ctx = committee.public_context
    spec = DPSpec(1.0, clip_l2=1.0)
    updates = [np.zeros(8192) for _ in clients]
    agg, request = _round(committee, clients, updates, 30, spec=spec, clip_l2=1.0)
    shares = committee.shares(request)
    colluder = committee[request.active_sets[0][0]]
    assert request.dp is not None
    part = dp_noise(KeyedStream(colluder._noise_key, b"he_agg.dp.v1\0" + colluder._label(request, request.active_sets[0])),
                    request.count, coefficient_sigma(request.dp, ctx, dense=True), ctx.params)
    mine = next(s for s in shares if s.party == colluder.index)
    kernels.sub(mine.residues, mine.residues, part, ctx.params.data_moduli)
    release = combine_enrolled(request, agg._accumulator.sum, shares)
    assert isinstance(release, DPRelease)
    honest = ctx.threshold - ctx.colluders
    remaining = request.dp.sigma**2 * (ctx.threshold - 1) / honest
    assert remaining >= request.dp.sigma**2  # what the calibration guarantees
    assert _variance_ok(release.values, remaining)
    assert float(np.var(release.values)) >= 0.9 * request.dp.sigma**2


def test_retry_returns_the_same_share_and_spends_once(committee: EnrolledCommittee, clients: list[Any]) -> None:
    agg, request = _round(committee, clients, [np.zeros(10) for _ in clients], 40, spec=DPSpec(1.0, clip_l2=1.0),
                          clip_l2=1.0)
    certificate = committee.certify(request)
    member = committee[0]
    before = member.dp_budget()
    first = member.decryption_share(request, certificate)
    second = member.decryption_share(request, certificate)
    after = member.dp_budget()
    assert np.array_equal(first.residues, second.residues)
    assert before is not None and after is not None and after.releases == before.releases + 1


# -- accounting, budget, restart --------------------------------------------------------------


def test_accountant_matches_dp_accounting(committee: EnrolledCommittee, clients: list[Any]) -> None:
    member = committee[4]  # not in the default active set {0,1,2}: releases only what we ask here
    start = member.dp_budget()
    assert start is not None
    multipliers = [1.0, 2.0, 1.0]
    for r, z in enumerate(multipliers):
        agg, request = _round(committee, clients, [np.zeros(10) for _ in clients], 50 + r, spec=DPSpec(z, clip_l2=1.0),
                              clip_l2=1.0, active_sets=[[2, 3, 4]])
        agg.finalize(committee.shares(request))
    budget = member.dp_budget()
    assert budget is not None and budget.releases == start.releases + 3
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(1.0), 2)
    accountant.compose(dp_accounting.GaussianDpEvent(2.0), 1)
    assert start.releases == 0
    assert budget.epsilon == pytest.approx(accountant.get_epsilon(WIDE.delta), rel=1e-12)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.GaussianDpEvent(1.0), 2)
    pld.compose(dp_accounting.GaussianDpEvent(2.0), 1)
    assert epsilon_spent(multipliers, 1e-5, "pld") == pytest.approx(pld.get_epsilon(1e-5), rel=1e-9)


def test_noise_multiplier_for_meets_the_target() -> None:
    z = noise_multiplier_for(2.0, 1e-5, releases=10)
    assert epsilon_spent([z] * 10, 1e-5) <= 2.0
    assert epsilon_spent([z * 0.95] * 10, 1e-5) > 2.0


def test_release_past_budget_is_refused_and_survives_restart(tmp_path: Path) -> None:
    """Budget for one release: round 0 is answered; round 1 (approved before) and round 2 are
    refused, before and after every member restarts from its files."""
    z = 1.0
    budget = 0.5 * (epsilon_spent([z], 1e-5) + epsilon_spent([z] * 2, 1e-5))
    policy = EnrolledPolicy(dp=DPPolicy(epsilon=budget, delta=1e-5, min_noise_multiplier=0.5))
    committee = EnrolledCommittee.generate(4, 2, policy=policy)
    for member in committee:
        member.save(tmp_path / f"m{member.index}", insecure_plaintext=True)
    clients = [committee.client(f"c{k}") for k in range(3)]
    spec = DPSpec(z, clip_l2=1.0)
    rounds = [_round(committee, clients, [np.zeros(4) for _ in clients], r, spec=spec, clip_l2=1.0) for r in range(2)]
    certificates = [committee.certify(request) for _, request in rounds]  # both fit the budget when approved
    agg, request = rounds[0]
    agg.finalize(committee.shares(request, certificates[0]))
    with pytest.raises(DPBudgetError, match="over its budget"):
        committee[0].decryption_share(rounds[1][1], certificates[1])
    for member in committee:  # restart every member from its files
        member._state.close()
    reopened = [EnrolledMember.load(tmp_path / f"m{i}", committee.context) for i in range(4)]
    assert reopened[0].policy.dp == policy.dp
    account = reopened[0].dp_budget()
    assert account is not None and account.releases == 1 and account.epsilon <= budget
    with pytest.raises(DPBudgetError):
        reopened[0].decryption_share(rounds[1][1], certificates[1])
    _, third = _round(committee, clients, [np.zeros(4) for _ in clients], 2, spec=spec, clip_l2=1.0)
    with pytest.raises(DPBudgetError):
        reopened[1].approve(third)
    assert reopened[3].approve(third) is not None  # member 3 answered nothing: its budget is whole


# -- the policy checks ---------------------------------------------------------------------------


def test_sigma_below_policy_is_refused(committee: EnrolledCommittee, clients: list[Any]) -> None:
    _, request = _round(committee, clients, [np.zeros(4) for _ in clients], 60, spec=DPSpec(0.1, clip_l2=1.0),
                        clip_l2=1.0)
    with pytest.raises(DPPolicyError, match="policy needs"):
        committee[0].approve(request)


def test_request_without_dp_is_refused_when_required(committee: EnrolledCommittee, clients: list[Any]) -> None:
    _, request = _round(committee, clients, [np.zeros(4) for _ in clients], 61, spec=None)
    with pytest.raises(DPPolicyError, match="only differentially private"):
        committee[0].approve(request)


def test_member_without_dp_policy_refuses_dp(clients: list[Any]) -> None:
    plain = EnrolledCommittee.generate(4, 2)
    site = [plain.client(f"p{k}") for k in range(3)]
    _, request = _round(plain, site, [np.zeros(4) for _ in site], 0, spec=DPSpec(1.0, clip_l2=1.0), clip_l2=1.0)
    with pytest.raises(DPPolicyError, match="no DP policy"):
        plain[0].approve(request)


def test_layout_without_bound_is_refused(committee: EnrolledCommittee, clients: list[Any]) -> None:
    agg = he_agg.Aggregator(committee.public_context, 62, dp=DPSpec(1.0))
    for client in clients:
        agg.add(client.encrypt(np.zeros(4), round_id=62))
    with pytest.raises(DPSensitivityError, match="no sensitivity bound"):
        agg.decryption_request()


def test_sensitivity_derivation() -> None:
    from he_agg.packing import flatten

    _, layout = flatten(np.zeros(16))
    _, weighted = flatten(np.zeros(16), weighted=True)
    assert DPSpec(1.0, clip_l2=3.0).l2_sensitivity(layout) == 3.0
    assert DPSpec(1.0, clip_value=0.5).l2_sensitivity(layout) == pytest.approx(2.0)
    assert DPSpec(1.0, clip_value=0.5, clip_l2=1.0).l2_sensitivity(layout) == 1.0
    assert DPSpec.for_statistic(stats.Count(), 2.0).statement(layout).sigma == 2.0
    assert DPSpec(1.0, clip_l2=3.0, max_weight=2.0).l2_sensitivity(weighted) == pytest.approx(2.0 * math.sqrt(10.0))
    with pytest.raises(DPSensitivityError, match="weight bound"):
        DPSpec(1.0, clip_l2=3.0).l2_sensitivity(weighted)
    with pytest.raises(ValueError):
        DPSpec(0.0, clip_l2=1.0)
    with pytest.raises(ValueError):
        DPPolicy(epsilon=-1.0, delta=1e-5)


def test_statement_travels_in_the_request_bytes(committee: EnrolledCommittee, clients: list[Any]) -> None:
    _, request = _round(committee, clients, [np.zeros(4) for _ in clients], 63, spec=DPSpec(2.0, clip_l2=1.0),
                        clip_l2=1.0)
    again = EnrolledRequest.from_bytes(request.to_bytes(), committee.public_context)
    assert again.digest == request.digest and again.dp == request.dp
    raw = request.to_bytes()
    stated = b'"sigma":2.0'
    assert stated in raw
    with pytest.raises(FormatError):  # a σ that its bounds do not give is refused
        EnrolledRequest.from_bytes(raw.replace(stated, b'"sigma":9.0'), committee.public_context)


# -- the differencing attack ---------------------------------------------------------------------


def test_differencing_attack_no_longer_recovers_the_third_site(committee: EnrolledCommittee,
                                                               clients: list[Any]) -> None:
    """Histogram over {A,B,C,D} then {A,B,C} (enrolled rounds need 3 sites): without DP the
    difference is D's histogram to 1e-6; with DP its error has the calibrated spread
    (≥ √2·σ per bin), so D's counts are not recovered."""
    histogram = stats.Histogram(tuple(np.linspace(0.0, 1.0, 401)))
    rng = np.random.default_rng(3)
    data = [histogram.encode(rng.uniform(0, 1, 300)) for _ in range(4)]
    spec = DPSpec.for_statistic(histogram, 1.0)

    def release(round_id: int, sites: int) -> np.ndarray:
        agg, request = _round(committee, clients[:sites], data[:sites], round_id, spec=spec)
        return np.asarray(agg.finalize(committee.shares(request)))

    difference = release(70, 4) - release(71, 3)
    error = difference - data[3]
    sigma = spec.noise_multiplier * histogram.sensitivity
    assert float(np.std(error)) >= 0.9 * math.sqrt(2.0) * sigma
    assert np.mean(np.rint(difference) == data[3]) < 0.5  # most bins of D are not recovered

    plain = EnrolledCommittee.generate(4, 2)
    sites = [plain.client(f"p{k}") for k in range(4)]

    def plain_release(round_id: int, n: int) -> np.ndarray:
        agg, request = _round(plain, sites[:n], data[:n], round_id, spec=None)
        return np.asarray(agg.finalize(plain.shares(request)))

    assert np.abs(plain_release(0, 4) - plain_release(1, 3) - data[3]).max() < 1e-6


# -- public-key mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("packing", ["dense", "slots"])
def test_public_key_mode_dp_release(packing: str) -> None:
    committee = Committee.generate(4, 3, policy=Policy(dp=WIDE), colluders=1)
    ctx = committee.public_context
    spec = DPSpec(2.0, clip_l2=1.0)
    agg = he_agg.Aggregator(ctx, 0, dp=spec)
    updates = [np.full(4096, 0.001 * k) for k in range(3)]
    for k, update in enumerate(updates):
        agg.add(he_agg.encrypt(ctx, update, client_id=f"c{k}", round_id=0, clip_l2=1.0, packing=packing))
    request = agg.decryption_request()
    assert request.dp is not None and request.dp.sigma == 2.0
    released = agg.finalize(committee.shares(request, contributions=agg.contributions))
    result = agg.result
    assert result is not None and result.noise_std == pytest.approx(2.0 * math.sqrt(3 / 2))
    assert _variance_ok(np.asarray(released) - np.sum(updates, axis=0), result.noise_std**2)
    assert committee[0].dp_budget().releases == 1  # type: ignore[union-attr]
    with pytest.raises(DPPolicyError):
        committee[0].approve(he_agg.requests.DecryptionRequest(ctx, 1, request.aggregate, request.contributions,
                                                                request.layout, dp=DPSpec(0.1, clip_l2=1.0)),
                             contributions=agg.contributions)


# -- DP-FedAvg in the demo -----------------------------------------------------------------------


def test_demo_dp_fedavg_spends_its_budget_over_the_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from he_agg import cli

    assert cli.main(["demo", "--json", "--dp", "3", "--rounds", "2", "--hospitals", "4", "--local-epochs", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    rounds = report["rounds"]
    z = report["dp"]["noise_multiplier"]
    assert z == pytest.approx(noise_multiplier_for(3.0, 1e-5, releases=2))
    for r, row in enumerate(rounds, 1):  # member 0's accountant: exactly dp-accounting's for r releases
        assert row["epsilon_spent"] == pytest.approx(epsilon_spent([z] * r, 1e-5), rel=1e-12)
    assert rounds[-1]["epsilon_spent"] <= 3.0
    assert rounds[-1]["epsilon_spent"] == pytest.approx(3.0, rel=1e-3)
    assert all(0.0 <= row["encrypted_accuracy"] <= 1.0 for row in rounds)


# -- laws ------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(t=st.integers(2, 7), data=st.data(), sigma=st.floats(1e-3, 1e3), dense=st.booleans())
def test_honest_parts_carry_exactly_sigma_squared(t: int, data: Any, sigma: float, dense: bool) -> None:
    """(t − c) parts of σ_c, mapped to a value (×1/Δ dense, ×√(N/2)/Δ slots), give variance σ²."""
    from types import SimpleNamespace

    c = data.draw(st.integers(0, t - 1))
    params = he_agg.ENROLLED
    context = SimpleNamespace(params=params, threshold=t, colluders=c)
    statement = DPSpec(sigma, sensitivity=1.0).statement(_layout())
    sigma_c = coefficient_sigma(statement, context, dense=dense)  # type: ignore[arg-type]
    spread = 1.0 if dense else params.n / 2.0
    assert (t - c) * sigma_c**2 * spread / params.scale**2 == pytest.approx(sigma**2, rel=1e-12)


def _layout() -> Any:
    from he_agg.packing import flatten

    return flatten(np.zeros(4))[1]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from([0.5, 0.8, 1.0, 2.0, 5.0]), min_size=1, max_size=12))
def test_accountant_is_dp_accountings_composition(multipliers: list[float]) -> None:
    accountant = dp_accounting.rdp.RdpAccountant()
    for z in multipliers:
        accountant.compose(dp_accounting.GaussianDpEvent(z))
    assert epsilon_spent(multipliers, 1e-6) == pytest.approx(accountant.get_epsilon(1e-6), rel=1e-12)


def test_key_share_file_keeps_its_dp_policy(tmp_path: Path) -> None:
    committee = Committee.generate(3, 2, policy=Policy(dp=WIDE))
    committee[0].save(tmp_path / "k0", insecure_plaintext=True)
    loaded = he_agg.KeyShare.load(tmp_path / "k0", committee.public_context)
    assert loaded.policy.dp == WIDE and loaded.dp_budget() == committee[0].dp_budget()


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["mechanism", "sigma", "sensitivity", "noise_multiplier", "delta", "bounds", "extra"]),
       value=_JSON)
def test_mangled_dp_statements_raise_only_he_agg_errors(committee: EnrolledCommittee, clients: list[Any], field: str,
                                                        value: Any) -> None:
    """A request whose DP statement a relay edited parses to the same statement or raises a he_agg error."""
    from he_agg.errors import HeAggError

    global _FUZZ_REQUEST
    if _FUZZ_REQUEST is None:
        _FUZZ_REQUEST = _round(committee, clients, [np.zeros(4) for _ in clients], 80, spec=DPSpec(1.0, clip_l2=1.0),
                               clip_l2=1.0)[1]
    request = _FUZZ_REQUEST
    assert request.dp is not None
    statement = request.dp.to_json()
    statement[field] = value
    try:
        parsed = EnrolledRequest(committee.public_context, request.epoch, request.round_id, request.tickets,
                                 request.layout, request.count, request.aggregate_digest, request.active_sets,
                                 dp=statement)
    except HeAggError:
        return
    if field == "delta":  # δ only sets where the combiner reports ε; members account at their own δ
        assert parsed.dp is not None and parsed.dp.spec.delta == value
        assert dataclasses.replace(parsed.dp.spec, delta=request.dp.spec.delta) == request.dp.spec
        return
    assert parsed.dp == request.dp  # accepted only when it says exactly what its bounds give


_FUZZ_REQUEST: Any = None


def test_several_active_sets_agree_within_the_dp_noise(committee: EnrolledCommittee, clients: list[Any]) -> None:
    """Cross-checked sets each carry their own DP noise: the agreement check allows for it, the
    mean over k sets has std σ·√(t/(t−c)/k), and each set is one release (ε of k compositions)."""
    from he_agg.committee import verification_sets

    sets = verification_sets([0, 1, 2, 3], 3)
    agg, request = _round(committee, clients, [np.zeros(8192) for _ in clients], 90, spec=DPSpec(1.0, clip_l2=1.0),
                          clip_l2=1.0, active_sets=sets)
    released = np.asarray(agg.finalize(committee.shares(request)))
    result = agg.result
    ctx = committee.public_context
    assert result is not None
    assert result.noise_std == pytest.approx(math.sqrt(ctx.threshold / (ctx.threshold - ctx.colluders) / len(sets)))
    assert result.epsilon == pytest.approx(epsilon_spent([1.0] * len(sets), 1e-5))
    assert _variance_ok(released, result.noise_std**2)
