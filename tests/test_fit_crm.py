"""`funnelsim fit --events`: recovery of a known funnel from a history simulated with the
project's own engine, the naive estimators' failure on the same checks, the forecast of the
months after --as-of against the truth's, and wider intervals from a shorter history.

The truth: two channels growing 10% a month, a loop (nurture back to qualified), durations
per outcome in three families, and won deals that take five times longer to close from a
proposal than lost ones; about half of the last month's leads are still open at --as-of,
so an estimator that drops them or counts them lost is visibly wrong.
"""

from __future__ import annotations

import json
import textwrap
from datetime import date

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy import stats

from funnelsim import load_scenario, scenario_from_dict
from funnelsim import run as run_forecast
from funnelsim.cli import main
from funnelsim.fit import crm, events
from funnelsim.fit.funnel_fit import fit_events
from funnelsim.fit.synthetic import write_history

pytest.importorskip("pymc")

TRUTH = textwrap.dedent(
    """\
    version: 1
    name: recovery truth
    start: 2026-01-01
    months: 9
    seed: 11
    currency: EUR
    channels:
      web:
        leads_per_month: 400
        growth_per_month: 0.1
        deal_value: {dist: lognormal, median: 5000, sigma: 0.5}
      events:
        leads_per_month: 150
        growth_per_month: 0.1
        deal_value: {dist: lognormal, median: 9000, sigma: 0.4}
    stages:
      new:
        duration:
          qualified: {dist: lognormal, median: 5, sigma: 0.5}
          lost: {dist: gamma, mean: 3, shape: 2}
        next: {qualified: 0.5, lost: 0.5}
        channels: {events: {next: {qualified: 0.7, lost: 0.3}}}
      qualified:
        duration:
          proposal: {dist: lognormal, median: 15, sigma: 0.5}
          nurture: {dist: gamma, mean: 10, shape: 3}
          lost: {dist: weibull, scale: 8, shape: 1.5}
        next: {proposal: 0.5, nurture: 0.2, lost: 0.3}
      nurture:
        duration: {dist: gamma, mean: 30, shape: 2}
        next: {qualified: 0.4, lost: 0.6}
      proposal:
        duration:
          won: {dist: lognormal, median: 50, sigma: 0.4}
          lost: {dist: lognormal, median: 8, sigma: 0.6}
        next: {won: 0.4, lost: 0.6}
        channels: {events: {next: {won: 0.6, lost: 0.4}}}
    """
)
AS_OF = date(2026, 5, 31)  # five months of history
SHORT_AS_OF = date(2026, 3, 31)  # three
GROWTH = 1.1  # the truth's monthly growth factor of both channels


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truth")
    (folder / "truth.yaml").write_text(TRUTH, encoding="utf-8")
    scenario = load_scenario(folder / "truth.yaml")
    write_history(scenario, folder / "events.csv", seed=3)
    return scenario, folder / "events.csv"


def _fit(truth, tmp_path_factory, as_of, name):
    out = tmp_path_factory.mktemp(name)
    result = fit_events(truth[1], out, as_of=as_of, currency="EUR", seed=2)  # default NUTS
    posterior = xr.open_dataset(out / "posterior.nc", group="posterior", engine="h5netcdf")
    return result, out, posterior.load()


@pytest.fixture(scope="module")
def fitted(truth, tmp_path_factory):
    return _fit(truth, tmp_path_factory, AS_OF, "fitted")


@pytest.fixture(scope="module")
def history(truth):
    return events.read_events(truth[1], as_of=AS_OF)


# ------------------------------------------------------------------ the truth's parameters


def _true_probabilities(scenario):
    """{p__<stage>__<channel>__<outcome>: probability}."""
    out = {}
    for stage, spec in scenario.stages.items():
        for channel in scenario.channels:
            override = spec.channels.get(channel)
            nxt = override.next if override is not None and override.next else spec.next
            for outcome, p in nxt.items():
                out[f"p__{stage}__{channel}__{outcome}"] = p
    return out


def _true_duration(scenario, stage, outcome):
    duration = scenario.stages[stage].duration
    return duration[outcome] if isinstance(duration, dict) else duration


def _interval(values, level):
    tail = (1 - level) / 2
    return np.quantile(np.asarray(values).reshape(-1), [tail, 1 - tail])


def _misses(scenario, posterior, estimates, level=0.99):
    """The true parameters outside their posterior interval, [(name, truth, (lo, hi))], and
    the number of parameters checked.

    Durations are compared field by field where the chosen family is the truth's, and by
    their mean otherwise (a family chosen by WAIC can differ from the truth's)."""
    misses, checked = [], []

    def check(name, true, draws):
        checked.append(name)
        lo, hi = _interval(draws, level)
        if not lo <= true <= hi:
            misses.append((name, true, (float(lo), float(hi))))

    for name, true in _true_probabilities(scenario).items():
        check(name, true, posterior[name].values)
    for d in estimates["durations"]:
        true = _true_duration(scenario, d["stage"], d["outcome"])
        prefix = f"duration__{d['stage']}__{d['outcome']}__"
        fields = {f[len(prefix) :]: posterior[f].values for f in posterior if f.startswith(prefix)}
        if d["family"] == true.dist:
            for field, draws in fields.items():
                check(prefix + field, getattr(true, field), draws)
        else:
            check(prefix + "mean", true.expected_value(), _mean_days(d["family"], fields))
    for channel, spec in scenario.channels.items():
        for field in ("median", "sigma"):
            name = f"value__{channel}__{field}"
            check(name, getattr(spec.deal_value, field), posterior[name].values)
        # the arrival rate of the first forecast month (June: 5 months of 10% growth)
        name = f"arrivals__{channel}__leads_per_month"
        check(name, spec.leads_per_month * GROWTH**5, posterior[name].values)
        name = f"arrivals__{channel}__growth_per_month"
        check(name, spec.growth_per_month, posterior[name].values)
    return misses, len(checked)


def _mean_days(family, fields):
    if family == "lognormal":
        return fields["median"] * np.exp(fields["sigma"] ** 2 / 2)
    if family == "gamma":
        return fields["mean"]
    from scipy.special import gamma

    return fields["scale"] * gamma(1 + 1 / fields["shape"])


# ------------------------------------------------------------------ recovery


def test_the_history_has_many_open_leads(history):
    """The premise: 30-50% of the last month's leads are still open at --as-of."""
    recent = history.arrived > history.arrived.max() - 30
    share = (history.outcome[recent] == events.OPEN_OUTCOME).mean()
    assert 0.3 <= share <= 0.6


def test_every_true_parameter_lies_in_its_99_interval(truth, fitted):
    result, out, posterior = fitted
    assert result.ok, result.diagnostics
    misses, checked = _misses(truth[0], posterior, result.estimates)
    assert checked >= 40
    assert misses == []


def test_the_duration_families_are_the_truths(fitted):
    """WAIC on the completed stays picks the family the truth used where stays are many."""
    chosen = {(d["stage"], d["outcome"]): d["family"] for d in fitted[0].estimates["durations"]}
    assert chosen[("new", "qualified")] == "lognormal"
    assert chosen[("new", "lost")] == "gamma"
    assert chosen[("qualified", "proposal")] == "lognormal"
    assert chosen[("qualified", "lost")] == "weibull"
    assert chosen[("proposal", "lost")] == "lognormal"


# ------------------------------------------------------------------ the naive estimators


def _naive_probabilities(history, open_as):
    """Transition probabilities from counts of completed stays, the open ones dropped
    (``open_as="dropped"``) or counted as lost (``"lost"``), with Jeffreys 99% intervals."""
    names = crm.outcome_names(history)
    channel = history.channel[history.stay_lead]
    out = {}
    for s, ks in crm.stage_outcomes(history).items():
        for c, cname in enumerate(history.channels):
            here = (history.stay_stage == s) & (channel == c)
            counts = {k: int((here & (history.stay_outcome == k)).sum()) for k in ks}
            if open_as == "lost":
                counts[history.lost] += int((here & (history.stay_outcome < 0)).sum())
            n = sum(counts.values())
            for k in ks:
                name = f"p__{history.stages[s]}__{cname}__{names[k]}"
                beta = stats.beta(counts[k] + 0.5, n - counts[k] + 0.5)
                out[name] = (counts[k] / n, beta.ppf(0.005), beta.ppf(0.995))
    return out


@pytest.mark.parametrize("open_as", ["dropped", "lost"])
def test_the_naive_estimators_miss_the_truth(truth, history, fitted, open_as):
    """The same check on the proposal stage: its win probabilities fall outside the naive
    99% intervals, biased down, while funnelsim's intervals hold them."""
    naive = _naive_probabilities(history, open_as)
    true = _true_probabilities(truth[0])
    posterior = fitted[2]
    for channel in ("web", "events"):
        name = f"p__proposal__{channel}__won"
        estimate, lo, hi = naive[name]
        assert hi < true[name], (name, naive[name], true[name])
        flo, fhi = _interval(posterior[name].values, 0.99)
        assert flo <= true[name] <= fhi


def test_dropping_open_stays_biases_the_time_to_win_down(truth, history, fitted):
    """Completed won stays in proposal are the short ones: their lognormal median (a 99%
    interval from the t distribution of the mean log) misses the truth's 50 days."""
    s = history.stages.index("proposal")
    done = (history.stay_stage == s) & (history.stay_outcome == history.won)
    logs = np.log(history.stay_days[done])
    half = stats.t.ppf(0.995, logs.size - 1) * logs.std(ddof=1) / np.sqrt(logs.size)
    assert np.exp(logs.mean() + half) < 50
    lo, hi = _interval(fitted[2]["duration__proposal__won__median"].values, 0.99)
    assert lo <= 50 <= hi


# ------------------------------------------------------------------ the forecast


def _won(scenario, replications=3000):
    return run_forecast(scenario, replications=replications, workers=1).totals()["won"].values


def _as_data(scenario, out, months, pipeline_only):
    """The scenario as a dict, ``months`` long from the day after --as-of, with the open
    leads as its pipeline; with ``pipeline_only``, no new leads."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    data.update(start="2026-06-01", months=months, pipeline={"file": str(out / "open_leads.csv")})
    for channel in data["channels"].values():
        if pipeline_only:
            channel.update(leads_per_month=0, growth_per_month=0)
    return data


@pytest.fixture(scope="module")
def forecasts(truth, fitted):
    """{kind: forecasts} for both kinds (see :func:`_forecasts`)."""
    return {kind: _forecasts(truth, fitted, kind) for kind in ("all", "pipeline")}


def _forecasts(truth, fitted, kind):
    """Wins in the months after --as-of under the truth (its parameters and its lead
    volumes five months on, the same open leads), the fitted scenario (posterior draws)
    and the fitted scenario with each naive estimator's probabilities (posterior means, no
    draws). ``all``: the open leads and new ones, June and July (whose wins come mostly from
    the open leads); ``pipeline``: the open leads alone until they have all but closed."""
    scenario, _ = truth
    _, out, posterior = fitted
    pipeline_only = kind == "pipeline"
    months = 6 if pipeline_only else 2
    data = _as_data(scenario, out, months, pipeline_only)
    if not pipeline_only:
        for channel in data["channels"].values():
            channel["leads_per_month"] *= GROWTH**5
    true = _won(scenario_from_dict(data, source=out / "truth.yaml"))
    fitted_scenario = load_scenario(out / "scenario.yaml")
    data = _as_data(fitted_scenario, out, months, pipeline_only)
    if pipeline_only:  # the posterior's arrivals would replace the zero volumes
        kept = posterior.drop_vars([v for v in posterior if v.startswith("arrivals__")])
        kept.to_netcdf(out / "pipeline.nc", group="posterior", engine="h5netcdf")
        data["posterior"] = {"file": str(out / "pipeline.nc")}
    fit = _won(scenario_from_dict(data, source=out / "fit.yaml"))
    naive = {}
    history = events.read_events(truth[1], as_of=AS_OF)
    for open_as in ("dropped", "lost"):
        data = _as_data(fitted_scenario, out, months, pipeline_only)
        del data["posterior"]
        for name, (p, _, _) in _naive_probabilities(history, open_as).items():
            _, stage, channel, outcome = name.split("__")
            data["stages"][stage]["channels"][channel]["next"][outcome] = p
        naive[open_as] = _won(scenario_from_dict(data, source=out / "naive.yaml"))
    return true, fit, naive


def _tolerance(forecast, true):
    """4 standard errors of the difference of the mean wins: the Monte Carlo errors of both
    means and the posterior spread of the fitted expectation, Var(E[won | θ]) ≈ the fitted
    forecast's variance less the truth's (the law of total variance)."""
    n_f, n_t = forecast.size, true.size
    parameter = max(forecast.var(ddof=1) - true.var(ddof=1), 0.0)
    return 4 * np.sqrt(parameter + forecast.var(ddof=1) / n_f + true.var(ddof=1) / n_t)


@pytest.mark.parametrize("kind", ["all", "pipeline"])
def test_the_forecast_matches_the_truths_expectation(forecasts, kind):
    true, fit, _ = forecasts[kind]
    assert abs(fit.mean() - true.mean()) < _tolerance(fit, true)


@pytest.mark.parametrize(
    ("kind", "open_as"), [("pipeline", "dropped"), ("pipeline", "lost"), ("all", "lost")]
)
def test_the_naive_forecasts_fail_the_same_check(forecasts, kind, open_as):
    """With the same tolerance as funnelsim's forecast, the naive ones are too low. (On
    ``all``, dropping the open leads is 12% low, but the tolerance there is dominated by the
    uncertain growth of the lead flow and is wider than that; the pipeline's wins isolate
    the conversion, and there it fails.)"""
    true, fit, naive = forecasts[kind]
    assert true.mean() - naive[open_as].mean() > _tolerance(fit, true)


@pytest.mark.parametrize("kind", ["all", "pipeline"])
def test_parameter_uncertainty_widens_the_forecast(forecasts, kind):
    """The posterior draws add their spread: the fitted forecast's variance exceeds the
    truth's (fixed parameters) by more than the sampling error of the two variances
    (4 standard errors, each ≈ σ²·sqrt(2/(n−1)))."""
    true, fit, _ = forecasts[kind]
    se = np.sqrt(
        2 * fit.var(ddof=1) ** 2 / (fit.size - 1) + 2 * true.var(ddof=1) ** 2 / (true.size - 1)
    )
    assert fit.var(ddof=1) - true.var(ddof=1) > 4 * se


def test_intervals_widen_as_history_shrinks(truth, fitted, tmp_path_factory):
    """Three months of history instead of five: every transition probability's 90%
    interval is wider, and the forecast of the months after each as-of date spreads
    more (coefficient of variation of the wins, 4 standard errors)."""
    short = _fit(truth, tmp_path_factory, SHORT_AS_OF, "short")
    for name in _true_probabilities(truth[0]):
        wide = np.diff(_interval(short[2][name].values, 0.9))[0]
        narrow = np.diff(_interval(fitted[2][name].values, 0.9))[0]
        assert wide > narrow, name
    spread = {}
    for label, (_, out, _) in (("long", fitted), ("short", short)):
        won = _won(load_scenario(out / "scenario.yaml", overrides=["months=2"]))
        cv = won.std(ddof=1) / won.mean()
        spread[label] = (cv, cv * np.sqrt(1 / (2 * (won.size - 1))))  # the cv's standard error
    (cv_long, se_long), (cv_short, se_short) = spread["long"], spread["short"]
    assert cv_short - cv_long > 4 * np.hypot(se_long, se_short)


# ------------------------------------------------------------------ outputs and the CLI


def test_the_fitted_scenario_is_complete_and_runs_in_both_engines(fitted):
    result, out, _ = fitted
    scenario = load_scenario(out / "scenario.yaml")
    assert scenario.start == date(2026, 6, 1)
    assert scenario.posterior is not None and scenario.posterior.sha256
    assert len(scenario.open_leads) == result.estimates["open_leads"]
    for engine in ("vectorized", "des"):
        t = run_forecast(scenario, replications=50, workers=1, engine=engine).totals()
        assert (t["won"].values > 0).all()
    estimates = json.loads((out / "estimates.json").read_text())
    assert estimates["as_of"] == "2026-05-31"
    assert {a["channel"] for a in estimates["arrivals"]} == {"web", "events"}
    assert all(a["trend"] for a in estimates["arrivals"])  # 10% a month is found
    assert "R-hat" in (out / "diagnostics.txt").read_text()


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("lead_id,stage,entered_at\nA,new,2026-01-01\n", "channel"),
        ("lead_id,channel,stage,entered_at\nA,web,new,2026-13-01\n", "row 2"),
        (
            "lead_id,channel,stage,entered_at,value\nA,web,new,2026-01-01,\n"
            "A,web,won,2026-01-05,100\nA,web,lost,2026-01-06,\n",
            "A",
        ),
        (
            "lead_id,channel,stage,entered_at,value\nA,web,new,2026-01-01,\n"
            "A,web,won,2026-01-05,-100\n",
            "negative",
        ),
    ],
)
def test_bad_history_exits_2_naming_the_rows(tmp_path, csv, message):
    path = tmp_path / "events.csv"
    path.write_text(csv, encoding="utf-8")
    result = CliRunner().invoke(main, ["fit", "--events", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and str(path) in result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --events"),
        (["--events", "x.csv", "--columns", "lead=Deal"], "'lead' is not a column"),
        (["--transactions", "x.csv", "--stages", "a,b"], "--stages: only with --events"),
        (["--transactions", "x.csv", "--columns", "lead_id=Deal"], "a column of --events"),
    ],
)
def test_bad_fit_options_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, ["fit", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in result.output


# ------------------------------------------------------------------ calibration (slow)


@pytest.mark.slow
def test_90_intervals_cover_the_truth_in_80_to_97_percent_of_cases(truth, tmp_path_factory):
    """Ten more histories of the truth (other seeds), each fitted as of the same day: the
    90% posterior intervals hold the true parameter in 80-97% of parameter × history cases
    (the issue's band; 90% ± 4 binomial standard errors of ~440 cases is 84-96%)."""
    scenario, _ = truth
    cases = misses = 0
    for seed in range(101, 111):
        folder = tmp_path_factory.mktemp(f"history{seed}")
        write_history(scenario, folder / "events.csv", seed=seed)
        result = fit_events(folder / "events.csv", folder / "out", as_of=AS_OF, seed=seed)
        posterior = xr.open_dataset(
            folder / "out" / "posterior.nc", group="posterior", engine="h5netcdf"
        ).load()
        missed, checked = _misses(scenario, posterior, result.estimates, level=0.9)
        cases += checked
        misses += len(missed)
    coverage = 1 - misses / cases
    assert cases >= 400
    assert 0.80 <= coverage <= 0.97, (coverage, cases)


def test_events_and_transactions_fit_into_one_scenario(truth, tmp_path):
    """--events with --transactions: one scenario with the funnel, the repeat model and the
    existing customers, and one posterior file holding both (short chains: the structure is
    checked here, not the estimates)."""
    rng = np.random.default_rng(4)
    rows = ["customer_id,date,amount"]
    for c in range(300):
        day = np.datetime64("2026-01-01") + int(rng.integers(0, 90))
        rate = rng.gamma(0.5, 1 / 20)  # purchases per day
        while day <= np.datetime64("2026-05-31"):
            rows.append(f"C{c},{day},{rng.lognormal(4, 0.5):.2f}")
            day = day + max(1, int(rng.exponential(1 / rate)))
    (tmp_path / "tx.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["fit", "--events", str(truth[1]), "--transactions", str(tmp_path / "tx.csv")]
    args += ["--as-of", "2026-05-31", "--draws", "100", "--tune", "100", "--chains", "2"]
    result = CliRunner().invoke(main, [*args, "--accept-warnings", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Repeat purchases as of 2026-05-31" in result.output
    assert "Funnel as of 2026-05-31" in result.output
    scenario = load_scenario(out / "scenario.yaml")
    assert scenario.repeat is not None and scenario.repeat.model == "bg_nbd"
    assert len(scenario.customer_history.customer_id) == 300
    assert len(scenario.open_leads) > 0
    draws = scenario.posterior_draws
    assert {"r", "alpha", "a", "b", "p__proposal__web__won"} <= set(draws)
    assert "repeat" in json.loads((out / "estimates.json").read_text())
    t = run_forecast(scenario, replications=20, workers=1).totals()
    assert (t["revenue_repeat"].values > 0).all()


def test_with_events_a_bad_transactions_date_is_refused_before_sampling(
    truth, tmp_path, monkeypatch
):
    from funnelsim.fit import bayes

    def fail(*args, **kwargs):
        raise AssertionError("sampled before the transactions' dates were checked")

    monkeypatch.setattr(bayes, "sample", fail)
    (tmp_path / "tx.csv").write_text(
        "customer_id,date,amount\nC1,2026-01-05,10\nC1,2026-03-05,12\n", encoding="utf-8"
    )
    args = ["fit", "--events", str(truth[1]), "--transactions", str(tmp_path / "tx.csv")]
    args += ["--as-of", "2026-05-31", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--as-of: 2026-05-31 is after the last purchase" in result.output
    assert "the log spans 2026-01-05 to 2026-03-05" in result.output
    assert not (tmp_path / "out").exists()


def test_the_crms_own_names_of_won_and_lost(truth, tmp_path):
    """HubSpot says "Closed Won": --won/--lost name the terminal stages (any case); the
    history read is the same as with won/lost."""
    text = truth[1].read_text(encoding="utf-8")
    renamed = text.replace(",won,", ",Closed Won,").replace(",lost,", ",closed lost,")
    (tmp_path / "crm.csv").write_text(renamed, encoding="utf-8")
    plain = events.read_events(truth[1], as_of=AS_OF)
    named = events.read_events(
        tmp_path / "crm.csv", as_of=AS_OF, won="closed won", lost="Closed Lost"
    )
    assert named.stages == plain.stages
    assert np.array_equal(named.stay_outcome, plain.stay_outcome)
    assert np.array_equal(named.outcome, plain.outcome)
    # without the names, the "stages" nobody leaves are refused with the hint
    result = CliRunner().invoke(
        main, ["fit", "--events", str(tmp_path / "crm.csv"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no lead has left stage" in result.output and "--won and --lost" in result.output


def test_won_rows_without_a_value_column_are_one_clear_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "lead_id,channel,stage,entered_at\nA,web,new,2026-01-01\nA,web,won,2026-01-09\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["fit", "--events", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no column 'value', but the 1 won rows need the deal's value" in result.output
