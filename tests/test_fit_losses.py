"""Silent losses and stale deals in a CRM history: the per-stage choice between the
recorded and the silent-loss (cure) model, and the stale rule.

The histories are the recovery truth of ``test_fit_crm`` (two channels, a loop, every loss
recorded) and two exports a real CRM would give of the same leads: every ``lost`` row
removed, and half of them removed.
"""

from __future__ import annotations

import csv
import random
from datetime import date

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_fit_crm import AS_OF, TRUTH

from funnelsim import scenario_from_dict
from funnelsim.cli import main
from funnelsim.fit import crm, events, losses
from funnelsim.fit.synthetic import history_rows

HEADER = ["lead_id", "channel", "stage", "entered_at", "value"]


def write_rows(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def exports(folder, truth_text=TRUTH, seed=3):
    """{"full", "silent", "half"}: the truth's history as recorded, without its lost rows,
    and without a random half of them."""
    scenario = scenario_from_dict(yaml.safe_load(truth_text), source=folder / "truth.yaml")
    rows = history_rows(scenario, seed=seed)
    rng = random.Random(seed)
    paths = {}
    for kind, keep in (
        ("full", lambda r: True),
        ("silent", lambda r: r[2] != "lost"),
        ("half", lambda r: r[2] != "lost" or rng.random() < 0.5),
    ):
        paths[kind] = folder / f"{kind}.csv"
        write_rows(paths[kind], [r for r in rows if keep(r)])
    return paths


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    paths = exports(tmp_path_factory.mktemp("losses"))
    return {kind: events.read_events(path, as_of=AS_OF) for kind, path in paths.items()}


@pytest.fixture(scope="module")
def choices(histories):
    return {kind: losses.choose_losses(h, crm.choose_durations(h)) for kind, h in histories.items()}


def test_recorded_losses_are_recognised(choices):
    """Every loss has its row: no stage shows silent losses (a false alarm would add a
    silent loss to a funnel that has none)."""
    assert [c.choice for c in choices["full"]] == ["recorded"] * 4
    assert all(c.p_value > losses.ALPHA for c in choices["full"])


def test_a_crm_that_records_no_loss_is_recognised(choices):
    assert [c.choice for c in choices["silent"]] == ["silent"] * 4
    assert all(c.recorded_losses == 0 for c in choices["silent"])


def test_half_recorded_losses_are_partly_recorded(choices):
    assert [c.choice for c in choices["half"]] == ["partly recorded"] * 4
    assert all(c.recorded_losses > 0 for c in choices["half"])


def test_the_silent_share_is_the_truths_loss_rate(histories, choices):
    """At the first stage (the most data: ~3,000 leads, ~1,600 open) the pooled silent
    share is the truth's loss probability, weighted by the channels' leads: 0.5 for web's
    and 0.3 for the events channel's. Tolerance: 4 binomial standard errors of a share
    estimated from the stage's leads."""
    h = histories["silent"]
    web = (h.channel == h.channels.index("web")).mean()
    truth = 0.5 * web + 0.3 * (1 - web)
    n = (h.stay_stage == 0).sum()
    q = choices["silent"][0].silent_share
    assert abs(q - truth) < 4 * np.sqrt(truth * (1 - truth) / n)


def test_open_leads_older_than_every_completed_stay_are_the_evidence(choices):
    silent, full = choices["silent"][0], choices["full"][0]
    assert silent.open_older_than_longest > 0.5 * silent.open_stays
    assert full.open_older_than_longest == 0
    assert "older than the longest completed stay" in losses.explain(silent)


def test_losses_option_forces_the_choice(histories):
    h = histories["full"]
    durations = crm.choose_durations(h)
    forced = losses.choose_losses(h, durations, "silent")
    assert [c.choice for c in forced] == ["partly recorded"] * 4
    assert all(c.how == "--losses" for c in forced)
    h = histories["silent"]
    kept = losses.choose_losses(h, crm.choose_durations(h), "recorded")
    assert [c.choice for c in kept] == ["recorded"] * 4


def test_the_silent_outcome_joins_the_model_only_where_chosen(histories):
    h = histories["half"]
    recorded = crm.fitted_outcomes(h)
    with_silent = crm.fitted_outcomes(h, frozenset({0}))
    assert with_silent[0] == recorded[0] + [crm.silent_code(h)]
    assert with_silent[1] == recorded[1]
    layout = crm.TransitionLayout.of(h, frozenset({0}))
    assert layout.free == crm.TransitionLayout.of(h).free + 1 + len(h.channels)


# ------------------------------------------------------------------ the stale rule


def test_the_stale_rule_censors_old_and_rule_closed_stays(tmp_path):
    rows = [
        ("A", "web", "new", "2026-01-01", ""),  # open 150 days at as-of: censored at 90
        ("B", "web", "new", "2026-01-01", ""),
        ("B", "web", "lost", "2026-04-01", ""),  # closed by the rule at 90 days: censored
        ("C", "web", "new", "2026-01-01", ""),
        ("C", "web", "lost", "2026-01-11", ""),  # lost by hand after 10 days: kept
        ("D", "web", "new", "2026-05-01", ""),  # open 30 days: unchanged
        ("E", "web", "new", "2026-01-01", ""),
        ("E", "web", "won", "2026-06-01", "100"),  # won after 151 days: kept
    ]
    write_rows(tmp_path / "h.csv", rows)
    h = events.read_events(tmp_path / "h.csv", as_of=date(2026, 5, 31))
    seen = losses.with_stale_rule(h, 90)
    by_lead = {h.lead_id[lead]: i for i, lead in enumerate(h.stay_lead)}
    assert seen.stay_outcome[by_lead["A"]] == -1 and seen.stay_days[by_lead["A"]] == 90
    assert seen.stay_outcome[by_lead["B"]] == -1 and seen.stay_days[by_lead["B"]] == 90
    assert seen.stay_outcome[by_lead["C"]] == h.lost and seen.stay_days[by_lead["C"]] == 10
    assert seen.stay_days[by_lead["D"]] == h.stay_days[by_lead["D"]]
    assert seen.stay_outcome[by_lead["E"]] == -1  # as-of is before the win
    # the leads themselves are unchanged: the opening pipeline comes from the history
    assert list(seen.outcome) == list(h.outcome)


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--losses", "sometimes"], "'sometimes' is not one of 'auto', 'recorded', 'silent'"),
        (["--stale-after", "0"], "0 is not in the range x>0"),
        (["--stale-after", "soon"], "'soon' is not a valid float"),
    ],
)
def test_bad_loss_options_exit_2(tmp_path, args, message):
    write_rows(tmp_path / "h.csv", [("A", "web", "new", "2026-01-01", "")])
    result = CliRunner().invoke(
        main, ["fit", "--events", str(tmp_path / "h.csv"), "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_loss_options_need_events(tmp_path):
    (tmp_path / "t.csv").write_text("customer_id,date,amount\nA,2026-01-01,5\n")
    result = CliRunner().invoke(
        main,
        ["fit", "--transactions", str(tmp_path / "t.csv"), "--losses", "silent"]
        + ["--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "--losses: only with --events" in result.output


# ------------------------------------------------------------------ the gamma's far tail


@pytest.mark.parametrize("shape", [0.4, 1.0, 3.0, 10.0])
def test_the_gamma_log_survival_is_exact_and_finite_far_into_the_tail(shape):
    """Old open leads sit far in a duration's tail once losses are silent: the gamma's
    log S must stay finite with a finite gradient (PyMC's is -inf from rate·age ≈ 40),
    and equal SciPy's log Q (1e-6 relative, the series' error for shapes up to 10)."""
    import pytensor
    import pytensor.tensor as pt
    from scipy import stats

    k, rate = pt.dscalar("k"), pt.dscalar("rate")
    ages = np.array([0.5, 5.0, 20.0, 39.0, 41.0, 45.0, 80.0, 200.0, 600.0])
    expr = crm.gamma_log_survival(pt, k, rate, ages)
    f = pytensor.function([k, rate], [expr, *pt.grad(expr.sum(), [k, rate])])
    value, d_shape, d_rate = f(shape, 1.0)
    assert np.isfinite(value).all() and np.isfinite(d_shape) and np.isfinite(d_rate)
    expected = stats.gamma.logsf(ages, shape)
    assert np.allclose(value, expected, rtol=1e-6, atol=0)
    # ages known to lie deep in the tail take the series alone: the same numbers
    shapes, rates = pt.dvector("shapes"), pt.dvector("rates")
    deep = ages > 2 * (shape + crm.GAMMA_TAIL_FROM)
    split = crm.gamma_log_survival(pt, shapes, rates, ages, deep)
    g = pytensor.function([shapes, rates], [split, *pt.grad(split.sum(), [shapes, rates])])
    value, d_shapes, d_rates = g(np.full(ages.size, shape), np.ones(ages.size))
    assert deep.any() and np.isfinite(d_shapes).all() and np.isfinite(d_rates).all()
    assert np.allclose(value, expected, rtol=1e-6, atol=0)
