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
    tx = io.read_transactions(
        path,
        columns=columns,
        lenient=lenient,
        allow_zero_amounts=allow_zero_amounts,
        allow_duplicates=allow_duplicates,
    )
    summary = io.summarize(tx, as_of, lenient=lenient)
    scale = DAYS_PER_UNIT[unit]
    x = summary.x.astype(float)
    t_x, age = summary.t_x_days / scale, summary.T_days / scale
    spend = summary.mean_spend
    counts = {"bg_nbd": mle.fit_bg_nbd(x, t_x, age), "pareto_nbd": mle.fit_pareto_nbd(x, t_x, age)}
    buyers = x > 0
    spend_fit = mle.fit_gamma_gamma(x, spend) if buyers.sum() >= 3 else None

    idata = _sample(model, x, t_x, age, spend, spend_fit, draws, tune, chains, seed, cores)
    diagnostics, ok = _diagnostics(idata)
    estimates = _estimates(counts, model, spend_fit, idata, summary, unit)
    holdout = None
    if holdout_until is not None:
        holdout = holdout_check(tx, summary, counts[model], model, unit, holdout_until)

    out_dir = Path(out_dir)
    posterior_bytes = _netcdf_bytes(idata, out_dir)
    sha = hashlib.sha256(posterior_bytes).hexdigest()
    files: dict[str, Any] = {
        "estimates.json": json.dumps(estimates, indent=2, allow_nan=False) + "\n",
        "diagnostics.txt": diagnostics + "\n",
        "posterior.nc": lambda p: p.write_bytes(posterior_bytes),
        "customers.csv": lambda p: io.write_customers_csv(summary, p),
        "scenario.yaml": _scenario_text(
            estimates, model, unit, summary, tx, sha, months, currency, spend_fit is not None
        ),
    }
    if holdout is not None:
        files["holdout.json"] = json.dumps(holdout, indent=2, allow_nan=False) + "\n"
    written = write_atomically(out_dir, files)
    return FitResult(
        estimates,
        diagnostics,
        ok,
        holdout,
        written,
        skipped=tx.skipped,
        skipped_reasons=dict(tx.skipped_reasons),
        dropped_customers=summary.dropped_customers,
    )


def _sample(model, x, t_x, age, spend, spend_fit, draws, tune, chains, seed, cores):
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
    spend_idata = bayes.sample(bayes.spend_model(x, spend), **{**options, "seed": seed + 1})
    posterior = xr.merge([counts.posterior, spend_idata.posterior])
    stats = xr.concat(
        [counts.sample_stats[["diverging"]], spend_idata.sample_stats[["diverging"]]],
        dim="model",
    ).any("model")
    return az.InferenceData(posterior=posterior, sample_stats=stats)


def _diagnostics(idata) -> tuple[str, bool]:
    import arviz as az

    rhat = az.rhat(idata)
    ess = az.ess(idata, method="bulk")
    divergent = int(idata.sample_stats["diverging"].sum()) if "sample_stats" in idata else 0
    lines = ["parameter     r_hat   ess_bulk"]
    ok = divergent == 0
    for name in idata.posterior.data_vars:
        r, e = float(rhat[name]), float(ess[name])
        flag = ""
        if r > RHAT_MAX or e < ESS_MIN:
            ok = False
            flag = "  <- poor"
        lines.append(f"{name:<12}{r:>7.3f}{e:>11.0f}{flag}")
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


def _interval(values: np.ndarray) -> dict[str, float]:
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
                entry.update(_interval(idata.posterior[name].values.reshape(-1)))
            params[name] = entry
        return {"parameters": params, "loglik_at_mle": fit.loglik, "customers": fit.n}

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


def _netcdf_bytes(idata, out_dir: Path) -> bytes:
    """The InferenceData as netCDF bytes (written through a temporary file)."""
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".nc", delete=True) as handle:
        idata.to_netcdf(handle.name, engine="h5netcdf")
        return Path(handle.name).read_bytes()


def _scenario_text(estimates, model, unit, summary, tx, sha, months, currency, with_spend) -> str:
    fitted = estimates["models"][model]["parameters"]

    def value(name: str, params=fitted) -> str:
        entry = params[name]
        return f"{entry.get('posterior_mean', entry['mle']):.6g}"

    start = summary.as_of + timedelta(days=1)
    first = _first_purchase_mean(tx)
    lines = [
        "# funnelsim scenario written by `funnelsim fit --transactions`.",
        f"# Repeat purchases fitted to {Path(tx.source).name} as of {summary.as_of} "
        f"({estimates['customers']:,} customers, {estimates['repeat_buyers']:,} repeat buyers).",
        "# The repeat section holds posterior means; each replication of `funnelsim run`",
        "# instead draws one joint sample from posterior.nc (so the forecast carries the",
        "# parameters' uncertainty). The existing customers are simulated from their own",
        "# histories (customers.csv). The funnel below is a placeholder that brings no new",
        "# leads: replace it with your own (or fit it from your CRM with --events).",
        "",
        "version: 1",
        f"name: Repeat purchases fitted as of {summary.as_of}",
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
        "repeat:",
        f"  model: {model}",
        f"  unit: {unit}                 # the time unit of r, alpha"
        + (", s, beta" if model == "pareto_nbd" else ""),
    ]
    for name in ("r", "alpha", "a", "b") if model == "bg_nbd" else ("r", "alpha", "s", "beta"):
        lines.append(f"  {name}: {value(name)}")
    if with_spend:
        spend = estimates["models"]["gamma_gamma"]["parameters"]
        lines.append(
            "  spend: {model: gamma_gamma, "
            + ", ".join(f"{n}: {value(n, spend)}" for n in ("p", "q", "gamma"))
            + "}"
        )
    else:
        lines.append(f"  spend: {first:.2f}   # too few repeat buyers to fit Gamma-Gamma")
    lines += [
        "existing_customers: {file: customers.csv}",
        f"posterior: {{file: posterior.nc, sha256: {sha}}}",
        "",
    ]
    return "\n".join(lines)


def _first_purchase_mean(tx) -> float:
    ids = np.asarray(tx.customer_id)
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]  # sorted by customer, then day
    return float(np.asarray(tx.amount)[first].mean())
