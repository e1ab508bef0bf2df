"""``funnelsim fit --events``: a runnable scenario from a CRM stage history.

Reads the history (:mod:`funnelsim.fit.events`), picks each stage's time-in-stage family,
fits the lead arrivals of each channel (:mod:`funnelsim.fit.arrivals`), samples the joint
model of transitions, times in stage (open stays censored), deal values and arrivals with
NUTS (:mod:`funnelsim.fit.crm`) and writes ``estimates.json``, ``posterior.nc``,
``diagnostics.txt``, ``open_leads.csv`` and a complete ``scenario.yaml`` starting the day
after ``as_of``, whose every replication draws one joint posterior sample. With a
transaction log too, the repeat-purchase fit joins the same scenario and posterior.
Nothing here prints.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from funnelsim.fit import crm, drift, events, io, losses
from funnelsim.fit.arrivals import fit_arrivals, scenario_channel
from funnelsim.fit.transactions import (
    FitResult,
    diagnose,
    fit_repeat,
    netcdf_bytes,
    posterior_summary,
    repeat_section,
)
from funnelsim.forecast import write_atomically

# NUTS per chain by default for a funnel (4 chains). Warmup is short: the chains start at
# the posterior mode with the mass matrix from the curvature there (bayes.sample). The draws
# are many because a funnel has ~70 parameters and R-hat must stay <= 1.01 for
# every one: with 500 draws per chain the largest R-hat of well-mixed chains sits at that
# threshold by chance alone, and a third of the fits of the shipped sample failed it.
DRAWS = 1000
TUNE = 300


def fit_events(
    path: str | Path,
    out_dir: str | Path,
    *,
    as_of: date | None = None,
    columns: dict[str, str] | None = None,
    stages: list[str] | None = None,
    won: str = events.WON,
    lost: str = events.LOST,
    lenient: bool = False,
    draws: int = DRAWS,
    tune: int = TUNE,
    chains: int = 4,
    seed: int = 1,
    cores: int | None = None,
    months: int = 12,
    currency: str = "USD",
    transactions: dict[str, Any] | None = None,
    losses_mode: str = "auto",
    stale_after: float | None = None,
    drift_mode: str = "auto",
) -> FitResult:
    """Fit the funnel to a stage history and write the outputs.

    ``losses_mode`` says whether the stages' losses are recorded, silent (never recorded:
    the cure model of :mod:`funnelsim.fit.losses`) or, by default, decided per stage from
    the evidence. ``drift_mode`` says whether the stages' outcome probabilities may change
    with the leads' arrival month (:mod:`funnelsim.fit.drift`): ``"auto"`` (by WAIC, per
    stage), ``"none"`` or ``"trend"``. ``stale_after`` (days) is the CRM's rule that a
    lead open longer than that in a stage is lost then: the fit censors such stays there,
    and the scenario carries the rule. ``transactions``, when given, holds the options of
    :func:`fit_repeat` (path and all), whose fit joins the scenario.
    """
    if losses_mode not in losses.CHOICES:
        raise ValueError(f"--losses {losses_mode!r}: expected one of {', '.join(losses.CHOICES)}")
    if drift_mode not in drift.CHOICES:
        raise ValueError(f"--drift {drift_mode!r}: expected one of {', '.join(drift.CHOICES)}")
    if stale_after is not None and not (0 < stale_after < 1e6):
        raise ValueError(f"--stale-after {stale_after!r}: expected a number of days > 0")
    history = events.read_events(
        path, columns=columns, stages=stages, as_of=as_of, lenient=lenient, won=won, lost=lost
    )
    _check_fittable(history)
    if transactions is not None:  # a bad log or bad dates: refused before any sampling
        t = transactions
        io.read_for_fit(
            t["path"],
            t.get("as_of"),
            t.get("holdout_until"),
            lenient=t.get("lenient", False),
            columns=t.get("columns"),
            allow_zero_amounts=t.get("allow_zero_amounts", False),
            allow_duplicates=t.get("allow_duplicates", False),
        )
    seen = history if stale_after is None else losses.with_stale_rule(history, stale_after)
    durations = crm.choose_durations(seen)
    loss_choices = losses.choose_losses(seen, durations, losses_mode)
    silent = frozenset(s for s, c in enumerate(loss_choices) if c.silent)
    drift_choices = drift.choose_drift(seen, durations, silent, drift_mode)
    trend = frozenset(s for s, c in enumerate(drift_choices) if c.drift)
    month_labels, counts, exposure = history.monthly_arrivals()
    arrivals = [
        fit_arrivals(channel, counts[c], exposure, month_labels)
        for c, channel in enumerate(history.channels)
    ]
    import os

    from funnelsim.fit import bayes

    cores = cores or min(chains, os.cpu_count() or 1)
    model = crm.build_model(seen, durations, arrivals, silent, trend)
    idata = bayes.sample(
        model, draws=draws, tune=tune, chains=chains, seed=seed, cores=cores, from_mode=True
    )
    start = history.as_of + timedelta(days=1)
    first_month = f"{start.year:04d}-{start.month:02d}"
    posterior = crm.posterior_variables(idata, seen, durations, arrivals, first_month, silent)
    diagnostics, ok = diagnose(posterior, idata)
    notes = _fixed_value_notes(history) + _history_notes(history, modelled_silent=bool(silent))
    diagnostics = "".join(notes) + diagnostics
    estimates = _estimates(history, durations, arrivals, posterior)
    estimates["losses"] = [{**c.as_dict(), "explanation": losses.explain(c)} for c in loss_choices]
    estimates["stale_after_days"] = stale_after
    estimates["drift"] = [{**c.as_dict(), "explanation": drift.explain(c)} for c in drift_choices]
    if trend:
        estimates["drift_slopes"] = _drift_slopes(idata, seen, silent, trend)

    repeat = None
    if transactions is not None:
        options = {"draws": draws, "tune": tune, "chains": chains, "seed": seed, "cores": cores}
        repeat = fit_repeat(**{**options, **transactions})
        posterior = _join(posterior, repeat.idata.posterior)
        diagnostics += "\n\nRepeat purchases:\n" + repeat.diagnostics
        ok = ok and repeat.ok
        estimates["repeat"] = repeat.estimates

    import arviz as az

    out_dir = Path(out_dir)
    data = netcdf_bytes(
        az.InferenceData(posterior=posterior, sample_stats=idata.sample_stats[["diverging"]]),
        out_dir,
    )
    sha = hashlib.sha256(data).hexdigest()
    files: dict[str, Any] = {
        "estimates.json": json.dumps(estimates, indent=2, allow_nan=False) + "\n",
        "diagnostics.txt": diagnostics + "\n",
        "posterior.nc": lambda p: p.write_bytes(data),
        "open_leads.csv": lambda p: events.write_open_leads_csv(history, p),
        "scenario.yaml": _scenario_text(
            history,
            durations,
            arrivals,
            estimates,
            sha,
            months,
            currency,
            repeat,
            silent=silent,
            stale_after=stale_after,
        ),
    }
    skipped_reasons = {f"{why} (events)": n for why, n in history.skipped_reasons.items()}
    dropped_customers = 0
    if repeat is not None:
        files["customers.csv"] = lambda p: io.write_customers_csv(repeat.summary, p)
        if repeat.holdout is not None:
            files["holdout.json"] = json.dumps(repeat.holdout, indent=2, allow_nan=False) + "\n"
        skipped_reasons.update(
            {f"{why} (transactions)": n for why, n in repeat.tx.skipped_reasons.items()}
        )
        dropped_customers = repeat.summary.dropped_customers
    written = write_atomically(out_dir, files, stale=io.FIT_OUTPUTS)
    return FitResult(
        estimates,
        diagnostics,
        ok,
        None if repeat is None else repeat.holdout,
        written,
        skipped=sum(skipped_reasons.values()),
        skipped_reasons=skipped_reasons,
        dropped_customers=dropped_customers,
        dropped_leads=history.dropped_leads,
        skipped_rows=repeat.tx.skipped_rows if repeat is not None else (),
    )


def _drift_slopes(idata, history, silent, trend) -> dict[str, Any]:
    """The posterior of each drifting stage's slopes (logit per arrival month), by the
    names ``<stage>__<outcome>``, in the order :func:`crm._drifting` lays them out."""
    draws = np.asarray(idata.posterior["drift_slopes"].values)
    draws = draws.reshape(-1, draws.shape[-1])
    names = crm.outcome_names(history)
    out, at = {}, 0
    for s, ks in sorted(crm.fitted_outcomes(history, silent).items()):
        if s not in trend or len(ks) < 2:
            continue
        for k in ks[:-1]:
            out[f"{history.stages[s]}__{names[k]}"] = posterior_summary(draws[:, at])
            at += 1
    return out


def _check_fittable(history) -> None:
    outcomes = crm.stage_outcomes(history)
    empty = [history.stages[s] for s, ks in outcomes.items() if not ks]
    if empty:
        raise ValueError(
            f"no lead has left stage {', '.join(empty)} before --as-of "
            f"{history.as_of}: its outcomes cannot be fitted (give a later --as-of; if the "
            "CRM calls its won and lost stages otherwise, name them with --won and --lost)"
        )
    names = crm.outcome_names(history)
    for s, k, days, n in crm.constant_durations(history):
        which = f"stage {history.stages[s]}" + ("" if k is None else f" (to {names[k]})")
        raise ValueError(
            f"every one of the {n:,} completed stays in {which} lasted exactly {days:g} "
            "days: a time in stage without any spread cannot be fitted (lognormal, gamma or "
            "Weibull; the sampler would run off to a spike). Check that the export keeps the "
            "real times a stage was entered"
        )


def _fixed_value_notes(history) -> list[str]:
    """A line per channel whose won deals are all worth the same: said, not sampled."""
    return [
        f"deal value of channel {channel}: every won deal is worth {value:,.6g}, a fixed "
        f"value (value__{channel}__sigma 0), not sampled\n"
        for channel, value in crm.fixed_values(history).items()
        if value is not None
    ]


def _history_notes(history, *, modelled_silent: bool) -> list[str]:
    """Lines on what the history lacks: months of the export without any lead (gaps), and
    losses when no lead was ever recorded lost and none is modelled as silent."""
    notes = [
        f"arrivals: no lead at all in {month}: read as a gap in the export, that month is "
        "left out of the arrivals' fit\n"
        for month in history.export_gaps()
    ]
    closed = history.outcome != events.OPEN_OUTCOME
    if closed.any() and not modelled_silent and not (history.outcome == events.LOST_OUTCOME).any():
        notes.append(
            f"no lead in the history is lost: if the CRM does not record losses (leads that "
            f"go nowhere just stop), the {int((~closed).sum()):,} open leads include them and "
            "this fit counts them as still open (--losses silent models them; name the lost "
            "stage with --lost if it has another name)\n"
        )
    return notes


def _join(posterior, other):
    """Two independent posteriors as one: draw i of each, together."""
    import xarray as xr

    chains = min(posterior.sizes["chain"], other.sizes["chain"])
    n = min(posterior.sizes["draw"], other.sizes["draw"])
    pick = {"chain": slice(0, chains), "draw": slice(0, n)}
    return xr.merge(
        [posterior.isel(pick), other.isel(pick).assign_coords(posterior.isel(pick).coords)],
        compat="override",
    )


def _estimates(history, durations, arrivals, posterior) -> dict[str, Any]:
    """The fit's numbers for estimates.json: a number that is not finite (the WAIC of a
    family that cannot fit a stage's stays, the log rate of a channel without leads) is
    written null, never NaN or Infinity."""
    names = crm.outcome_names(history)
    fixed = crm.fixed_values(history)
    return _finite(
        {
            "fixed_deal_values": {c: v for c, v in fixed.items() if v is not None},
            "as_of": history.as_of.isoformat(),
            "history_start": history.start.isoformat(),
            "leads": int(len(history)),
            "open_leads": int((history.outcome == 0).sum()),
            "open_by_stage": {
                stage: int(((history.stay_outcome < 0) & (history.stay_stage == s)).sum())
                for s, stage in enumerate(history.stages)
            },
            "stages": list(history.stages),
            "channels": list(history.channels),
            "durations": [
                {
                    "stage": history.stages[d.stage],
                    "outcome": "all" if d.outcome is None else names[d.outcome],
                    "family": d.family,
                    "waic": d.waic,
                    "aic": d.aic,
                    "completed_stays": d.n,
                }
                for d in durations
            ],
            "arrivals": [
                {
                    "channel": a.channel,
                    "family": a.family,
                    "trend": a.trend,
                    "seasonal": a.seasonal,
                    "choice": a.choice,
                    "mle": a.params,
                }
                for a in arrivals
            ],
            "parameters": {
                **{
                    name: posterior_summary(np.asarray(var.values).reshape(-1))
                    for name, var in posterior.data_vars.items()
                },
                **_fixed_value_parameters(fixed),
            },
        }
    )


def _fixed_value_parameters(fixed: dict[str, float | None]) -> dict[str, dict[str, float]]:
    """The deal values that are fixed (no draws: the posterior leaves them to the scenario),
    summarised as the sampled parameters are: median the value, sigma 0."""
    out = {}
    for channel, value in fixed.items():
        if value is not None:
            for field, x in (("median", value), ("sigma", 0.0)):
                out[f"value__{channel}__{field}"] = posterior_summary(np.full(2, x))
    return out


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite, at any depth, replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _mean(estimates, name: str) -> float:
    return estimates["parameters"][name]["posterior_mean"]


def _probabilities(values: dict[str, float]) -> str:
    """Outcome probabilities that sum to exactly 1 as written (the last takes the rest)."""
    keys = list(values)
    rounded = {k: round(values[k], 6) for k in keys[:-1]}
    rounded[keys[-1]] = round(1.0 - sum(rounded.values()), 6)
    return "{" + ", ".join(f"{k}: {v:.6f}" for k, v in rounded.items()) + "}"


def _dist(family: str, params: dict[str, float]) -> str:
    fields = ", ".join(f"{k}: {v:.6g}" for k, v in params.items())
    return f"{{dist: {family}, {fields}}}"


def _scenario_text(
    history,
    durations,
    arrivals,
    estimates,
    sha,
    months,
    currency,
    repeat,
    *,
    silent=frozenset(),
    stale_after=None,
) -> str:
    names = crm.outcome_names(history)
    outcomes = crm.fitted_outcomes(history, silent)
    start = history.as_of + timedelta(days=1)
    first_month = f"{start.year:04d}-{start.month:02d}"
    lines = [
        "# funnelsim scenario written by `funnelsim fit --events`.",
        f"# The funnel fitted to {Path(history.source).name} as of {history.as_of}: "
        f"{len(history):,} leads since {history.start}, {estimates['open_leads']:,} still open.",
        "# Numbers below are posterior means; each replication of `funnelsim run` instead draws",
        "# one joint sample from posterior.nc, so the forecast carries the parameters'",
        "# uncertainty. The opening pipeline is every lead open on the fit's as-of date.",
        *(
            [
                "# silent_loss: the share of leads that leave a stage with nothing recorded (the",
                "# CRM never records these losses); an open lead of age a is presumed silently",
                "# lost with weight q / (q + sum of p_k S_k(a)).",
            ]
            if silent
            else []
        ),
        "",
        "version: 1",
        f"name: Funnel fitted as of {history.as_of}",
        f"start: {start.isoformat()}            # the day after --as-of",
        f"months: {months}",
        "replications: 1000",
        "seed: 1",
        f"currency: {currency}",
        "channels:",
    ]
    for fit, channel in zip(arrivals, history.channels, strict=True):
        entry = scenario_channel(fit, first_month)
        lines.append(f"  {channel}:                # arrivals: {fit.choice}")
        lines.append(
            f"    leads_per_month: {_mean(estimates, f'arrivals__{channel}__leads_per_month'):.6g}"
        )
        if "growth_per_month" in entry:
            growth = _mean(estimates, f"arrivals__{channel}__growth_per_month")
            lines.append(f"    growth_per_month: {growth:.6g}")
        if "seasonality" in entry:
            season = [_mean(estimates, f"arrivals__{channel}__season_{m}") for m in range(1, 13)]
            lines.append("    seasonality: [" + ", ".join(f"{x:.4f}" for x in season) + "]")
        value = {f: _mean(estimates, f"value__{channel}__{f}") for f in ("median", "sigma")}
        lines.append(f"    deal_value: {_dist('lognormal', value)}")
    lines.append("stages:                  # new leads enter the first stage")
    by_stage: dict[int, list] = {}
    for d in durations:
        by_stage.setdefault(d.stage, []).append(d)
    for s, stage in enumerate(history.stages):
        ks = outcomes[s]
        lines.append(f"  {stage}:")
        chosen = by_stage[s]
        if chosen[0].outcome is None:
            d = chosen[0]
            params = {f: _mean(estimates, f"duration__{stage}__all__{f}") for f in d.mle}
            lines.append(f"    duration: {_dist(d.family, params)}   # days")
        else:
            lines.append("    duration:                # days, per outcome")
            for d in chosen:
                label = names[d.outcome]
                params = {f: _mean(estimates, f"duration__{stage}__{label}__{f}") for f in d.mle}
                lines.append(f"      {label}: {_dist(d.family, params)}")
        pooled = {
            names[k]: float(
                np.mean(
                    [_mean(estimates, f"p__{stage}__{c}__{names[k]}") for c in history.channels]
                )
            )
            for k in ks
        }
        lines.append(f"    next: {_probabilities(pooled)}   # the channels' average")
        if stale_after is not None:
            lines.append(f"    stale_after: {stale_after:g}   # days, then lost (--stale-after)")
        lines.append("    channels:")
        for channel in history.channels:
            mine = {names[k]: _mean(estimates, f"p__{stage}__{channel}__{names[k]}") for k in ks}
            lines.append(f"      {channel}: {{next: {_probabilities(mine)}}}")
    lines += ["pipeline: {file: open_leads.csv}   # the leads open on the as-of date"]
    if repeat is not None:
        lines += repeat_section(repeat)
    lines += [f"posterior: {{file: posterior.nc, sha256: {sha}}}", ""]
    return "\n".join(lines)
