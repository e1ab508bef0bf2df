"""``funnelsim fit --transactions``: repeat-purchase models from a transaction log.

Reads the log, summarises each customer as of ``as_of`` (repeat purchases x, recency t_x,
age T, mean repeat spend), fits BG/NBD and Pareto/NBD counts and Gamma-Gamma spend by
maximum likelihood (SciPy, :mod:`funnelsim.fit.repeat`) and the chosen count model and
Gamma-Gamma by NUTS (PyMC, :mod:`funnelsim.fit.bayes`), and writes:

* ``estimates.json`` — every parameter's MLE (and standard error), posterior mean, sd and
  90% interval, each model's log-likelihood at its MLE;
* ``posterior.nc`` — the posterior draws (ArviZ InferenceData) and ``diagnostics.txt``;
* ``customers.csv`` — the existing customers as of ``as_of`` for ``existing_customers``;
* ``scenario.yaml`` — a runnable scenario starting the day after ``as_of``;
* with ``holdout_until``, ``holdout.json``: predicted against actual repeat purchases.

Nothing here prints; the CLI reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from funnelsim.fit import io
from funnelsim.fit import repeat as mle
from funnelsim.fit.holdout import holdout_check
from funnelsim.forecast import write_atomically
from funnelsim.scenario import DAYS_PER_UNIT

RHAT_MAX = 1.01
NOT_SAMPLED = (
    "not sampled: NUTS runs for the count model the scenario uses (--model {model}); "
    "this one has its maximum-likelihood estimate only (fit with --model to sample it)"
)
ESS_MIN = 400


@dataclass
class FitResult:
    """What a fit produced; ``ok`` is False when the sampler's diagnostics are poor."""

    estimates: dict[str, Any]
    diagnostics: str
    ok: bool
    holdout: dict[str, Any] | None
    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    dropped_customers: int = 0
    dropped_leads: int = 0
    skipped_rows: tuple = ()  # the problems of the skipped rows (Problem), in row order


def fit_transactions(
    path: str | Path,
    out_dir: str | Path,
    *,
    as_of: date | None = None,
    model: str = "bg_nbd",
    unit: str = "week",
    columns: dict[str, str] | None = None,
    lenient: bool = False,
    allow_zero_amounts: bool = False,
    allow_duplicates: bool = False,
    holdout_until: date | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 1,
    cores: int | None = None,
    months: int = 12,
    currency: str = "USD",
) -> FitResult:
    """Fit the repeat-purchase models to a transaction log and write the outputs."""
    part = fit_repeat(
        path,
        as_of=as_of,
        model=model,
        unit=unit,
        columns=columns,
        lenient=lenient,
        allow_zero_amounts=allow_zero_amounts,
        allow_duplicates=allow_duplicates,
        holdout_until=holdout_until,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        cores=cores,
    )
    out_dir = Path(out_dir)
    part.estimates["diagnostics"] = {"ok": part.ok, "problems": diagnostic_problems(part)}
    posterior_bytes = netcdf_bytes(part.idata, out_dir)
    sha = hashlib.sha256(posterior_bytes).hexdigest()
    scenario = "\n".join(
        [
            *_poor_diagnostics_note(part),
            *_header(part, sha),
            *_placeholder_funnel(part, months, currency),
            *repeat_section(part),
            f"posterior: {{file: posterior.nc, sha256: {sha}}}",
            "",
        ]
    )
    files: dict[str, Any] = {
        "estimates.json": json.dumps(part.estimates, indent=2, allow_nan=False) + "\n",
        "diagnostics.txt": part.diagnostics + "\n",
        "posterior.nc": lambda p: p.write_bytes(posterior_bytes),
        "customers.csv": lambda p: io.write_customers_csv(part.summary, p),
        "scenario.yaml": scenario,
    }
    if part.holdout is not None:
        files["holdout.json"] = json.dumps(part.holdout, indent=2, allow_nan=False) + "\n"
    written = write_atomically(out_dir, files, stale=io.FIT_OUTPUTS)
    return FitResult(
        part.estimates,
        part.diagnostics,
        part.ok,
        part.holdout,
        written,
        skipped=part.tx.skipped,
        skipped_reasons=dict(part.tx.skipped_reasons),
        dropped_customers=part.summary.dropped_customers,
        skipped_rows=part.tx.skipped_rows,
    )


@dataclass
class RepeatFit:
    """The repeat-purchase part of a fit, before anything is written."""

    tx: Any
    summary: Any
    model: str
    unit: str
    estimates: dict[str, Any]
    idata: Any
    diagnostics: str
    ok: bool
    holdout: dict[str, Any] | None
    with_spend: bool


def fit_repeat(
    path,
    *,
    as_of=None,
    model="bg_nbd",
    unit="week",
    columns=None,
    lenient=False,
    allow_zero_amounts=False,
    allow_duplicates=False,
    holdout_until=None,
    draws=1000,
    tune=1000,
    chains=4,
    seed=1,
    cores=None,
) -> RepeatFit:
    """Read the log, fit every model by maximum likelihood and the chosen one by NUTS."""
    # every input problem at once (bad rows, dates, late customers), before sampling
    tx, summary = io.read_for_fit(
        path,
        as_of,
        holdout_until,
        columns=columns,
        lenient=lenient,
        allow_zero_amounts=allow_zero_amounts,
        allow_duplicates=allow_duplicates,
    )
    scale = DAYS_PER_UNIT[unit]
    x = summary.x.astype(float)
    t_x, age = summary.t_x_days / scale, summary.T_days / scale
    spend = summary.mean_spend
    counts = {
        "bg_nbd": mle.fit_bg_nbd(x, t_x, age),
        "pareto_nbd": mle.fit_pareto_nbd(x, t_x, age),
    }
    # Gamma-Gamma: repeat buyers with a positive mean spend (free repeat orders say nothing
    # about spend); the others count as non-buyers for it
    spend_x = np.where((x > 0) & (np.nan_to_num(spend) > 0), x, 0.0)
    spend_fit = mle.fit_gamma_gamma(spend_x, spend) if (spend_x > 0).sum() >= 3 else None
    idata = _sample(model, x, t_x, age, spend_x, spend, spend_fit, draws, tune, chains, seed, cores)
    diagnostics, ok = diagnose(idata.posterior, idata)
    if model == "pareto_nbd":
        note, accurate = _series_check(idata.posterior, x, t_x, age)
        diagnostics, ok = diagnostics + "\n" + note, ok and accurate
    fits = {**counts, **({"gamma_gamma": spend_fit} if spend_fit is not None else {})}
    unconverged = [m for m, fit in fits.items() if not fit.converged]
    if unconverged:
        diagnostics += (
            "\nWARNING: the maximum-likelihood fit of "
            + ", ".join(unconverged)
            + " did not converge (no interior maximum with a negligible Newton step): its MLE "
            "and standard errors are not trustworthy"
        )
    estimates = _estimates(counts, model, spend_fit, idata, summary, unit)
    holdout = None
    if holdout_until is not None:
        holdout = holdout_check(tx, summary, counts[model], model, unit, holdout_until)
    return RepeatFit(
        tx, summary, model, unit, estimates, idata, diagnostics, ok, holdout, spend_fit is not None
    )


def _sample(model, x, t_x, age, spend_x, spend, spend_fit, draws, tune, chains, seed, cores):
    """NUTS for the count model and (independently) Gamma-Gamma, merged into one posterior
    whose (chain, draw) pairs are joint draws of all the parameters."""
    import os

    import arviz as az
    import xarray as xr

    from funnelsim.fit import bayes

    cores = cores or min(chains, os.cpu_count() or 1)
    options = dict(draws=draws, tune=tune, chains=chains, seed=seed, cores=cores)
    counts = bayes.sample(bayes.count_model(model, x, t_x, age), **options)
    if spend_fit is None:
        return counts
    spend_idata = bayes.sample(bayes.spend_model(spend_x, spend), **{**options, "seed": seed + 1})
    posterior = xr.merge([counts.posterior, spend_idata.posterior])
    stats = xr.concat(
        [counts.sample_stats[["diverging"]], spend_idata.sample_stats[["diverging"]]],
        dim="model",
    ).any("model")
    return az.InferenceData(posterior=posterior, sample_stats=stats)


SERIES_ERROR_MAX = 1e-6


def _series_check(posterior, x, t_x, age) -> tuple[str, bool]:
    """The Pareto/NBD likelihood that NUTS used (a fixed series, exact for z ≤ 0.5) against
    SciPy's, at the draws with α and β furthest apart (where z = |α − β| / max(α, β) nears 1
    and the series falls short): the largest difference per customer."""
    from funnelsim.fit import bayes

    alpha = posterior["alpha"].values.reshape(-1)
    beta = posterior["beta"].values.reshape(-1)
    z = np.abs(alpha - beta) / np.maximum(alpha, beta)
    worst = np.argsort(z)[-3:]
    flat = {n: posterior[n].values.reshape(-1) for n in bayes.COUNT_PARAMETERS["pareto_nbd"]}
    error = max(bayes.series_error({n: v[j] for n, v in flat.items()}, x, t_x, age) for j in worst)
    if error <= SERIES_ERROR_MAX:
        return f"Pareto/NBD series: at most {error:.1e} from SciPy's log-likelihood", True
    return (
        f"WARNING: the Pareto/NBD likelihood used by NUTS is off by up to {error:.1e} per "
        "customer (α and β far apart in the posterior): do not trust its posterior",
        False,
    )


def diagnose(posterior, idata) -> tuple[str, bool]:
    """R-hat, bulk ESS and divergences of the posterior's variables, and whether they pass
    (R-hat <= 1.01, ESS >= 400, no divergences). A variable whose draws are all one number
    (a fixed deal value, the one outcome of a stage) is reported as fixed at that number; one
    whose R-hat or ESS cannot be computed (``n/a``) is poor."""
    import arviz as az

    with np.errstate(invalid="ignore", divide="ignore"):  # constants: handled below
        rhat = az.rhat(posterior)
        ess = az.ess(posterior, method="bulk")
    stats = getattr(idata, "sample_stats", None)
    divergent = int(stats["diverging"].sum()) if stats is not None else 0
    lines = ["parameter" + " " * 40 + "r_hat   ess_bulk"]
    ok = divergent == 0
    for name in posterior.data_vars:
        draws = np.asarray(posterior[name].values, dtype=float)
        if draws.size and np.all(draws == draws.flat[0]):  # a constant: nothing to converge
            lines.append(f"{name:<49}fixed at {draws.flat[0]:.6g}")
            continue
        r, e = float(rhat[name]), float(ess[name])
        flag = ""
        if not (r <= RHAT_MAX and e >= ESS_MIN):  # NaN (e.g. draws not finite) fails too
            ok = False
            flag = "  <- poor"
        lines.append(f"{name:<49}{_number(r, '.3f'):>5}{_number(e, '.0f'):>11}{flag}")
    lines.append(f"divergent transitions: {divergent}")
    verdict = (
        "diagnostics good: R-hat <= 1.01, ESS >= 400, no divergences"
        if ok
        else (
            "WARNING: the sampler did not converge well (R-hat > 1.01, ESS < 400 or "
            "divergences): do not trust the posterior; try more --draws/--tune, or check "
            "the data"
        )
    )
    return "\n".join([*lines, verdict]), ok


def _number(x: float, spec: str) -> str:
    """A diagnostic's value, or ``n/a`` when it cannot be computed (never ``nan``)."""
    return format(x, spec) if np.isfinite(x) else "n/a"


def diagnostic_problems(part: RepeatFit) -> list[str]:
    """The diagnostics' failures in words (empty when they pass)."""
    problems = []
    for line in part.diagnostics.splitlines():
        if line.endswith("<- poor"):
            name, r_hat, ess = line.removesuffix("<- poor").split()
            problems.append(f"{name}: R-hat {r_hat}, ESS {ess}")
        elif line.startswith("divergent transitions: ") and line.split()[-1] != "0":
            problems.append(line)
    return problems


def _poor_diagnostics_note(part: RepeatFit) -> list[str]:
    if part.ok:
        return []
    return [
        "# WARNING: the sampler's diagnostics were poor (see diagnostics.txt): do not trust",
        "# this posterior; refit with more --draws and --tune. Problems: "
        + "; ".join(diagnostic_problems(part)),
        "#",
    ]


def posterior_summary(values: np.ndarray) -> dict[str, float]:
    """Posterior mean, sd and 90% interval of a parameter's draws."""
    lo, hi = np.quantile(values, [0.05, 0.95])
    return {
        "posterior_mean": float(values.mean()),
        "posterior_sd": float(values.std(ddof=1)),
        "p5": float(lo),
        "p95": float(hi),
    }


def _estimates(counts, model, spend_fit, idata, summary, unit) -> dict[str, Any]:
    def block(fit, posterior: bool) -> dict[str, Any]:
        params = {}
        for name, value in fit.params.items():
            entry = {"mle": value, "se": _finite(fit.se.get(name))}
            if posterior and name in idata.posterior:
                entry.update(posterior_summary(idata.posterior[name].values.reshape(-1)))
            params[name] = entry
        out = {
            "parameters": params,
            "loglik_at_mle": fit.loglik,
            "loglik_time_unit": unit,  # the likelihood of times in this unit (a density)
            "customers": fit.n,
            "mle_converged": bool(fit.converged),
        }
        if not posterior:
            out["posterior"] = NOT_SAMPLED.format(model=model)
        return out

    out: dict[str, Any] = {
        "as_of": summary.as_of.isoformat(),
        "unit": unit,
        "customers": int(summary.x.size),
        "repeat_buyers": int((summary.x > 0).sum()),
        "model": model,
        "models": {m: block(fit, m == model) for m, fit in counts.items()},
    }
    if spend_fit is not None:
        out["models"]["gamma_gamma"] = block(spend_fit, True)
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def netcdf_bytes(idata, out_dir: Path) -> bytes:
    """The InferenceData as netCDF bytes (written through a temporary file)."""
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".nc", delete=True) as handle:
        idata.to_netcdf(handle.name, engine="h5netcdf")
        return Path(handle.name).read_bytes()


def _header(part: RepeatFit, sha: str) -> list[str]:
    e = part.estimates
    return [
        "# funnelsim scenario written by `funnelsim fit --transactions`.",
        f"# Repeat purchases fitted to {Path(part.tx.source).name} as of {part.summary.as_of} "
        f"({_count(e['customers'], 'customer')}, {_count(e['repeat_buyers'], 'repeat buyer')}).",
        "# The repeat section holds posterior means; each replication of `funnelsim run`",
        "# instead draws one joint sample from posterior.nc (so the forecast carries the",
        "# parameters' uncertainty). The existing customers are simulated from their own",
        "# histories (customers.csv). The funnel below is a placeholder that brings no new",
        "# leads: replace it with your own (or fit it from your CRM with --events).",
        "",
    ]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _placeholder_funnel(part: RepeatFit, months: int, currency: str) -> list[str]:
    start = part.summary.as_of + timedelta(days=1)
    first = _first_purchase_mean(part.tx)
    return [
        "version: 1",
        f"name: Repeat purchases fitted as of {part.summary.as_of}",
        f"start: {start.isoformat()}            # the day after the calibration period",
        f"months: {months}",
        "replications: 1000",
        "seed: 1",
        f"currency: {currency}",
        "channels:",
        "  new_customers: {leads_per_month: 0}   # placeholder: no new leads",
        "stages:",
        "  first_purchase: {duration: 0, next: {won: 1.0}}",
        f"deal_value: {first:.2f}                 # mean first purchase in the log",
    ]


def repeat_section(part: RepeatFit) -> list[str]:
    """The scenario's ``repeat`` (posterior means) and ``existing_customers`` lines."""
    model = part.model
    fitted = part.estimates["models"][model]["parameters"]

    def value(name: str, params=fitted) -> str:
        entry = params[name]
        return f"{entry.get('posterior_mean', entry['mle']):.6g}"

    lines = [
        "repeat:",
        f"  model: {model}",
        f"  unit: {part.unit}                 # the time unit of r, alpha"
        + (", s, beta" if model == "pareto_nbd" else ""),
    ]
    for name in ("r", "alpha", "a", "b") if model == "bg_nbd" else ("r", "alpha", "s", "beta"):
        lines.append(f"  {name}: {value(name)}")
    if part.with_spend:
        spend = part.estimates["models"]["gamma_gamma"]["parameters"]
        lines.append(
            "  spend: {model: gamma_gamma, "
            + ", ".join(f"{n}: {value(n, spend)}" for n in ("p", "q", "gamma"))
            + "}"
        )
    else:
        lines.append(
            f"  spend: {_first_purchase_mean(part.tx):.2f}   # too few repeat buyers to fit"
        )
    lines.append("existing_customers: {file: customers.csv}")
    return lines


def _first_purchase_mean(tx) -> float:
    ids = np.asarray(tx.customer_id)
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]  # sorted by customer, then day
    return float(np.asarray(tx.amount)[first].mean())
