"""Drift: do a stage's outcome probabilities change with the leads' arrival month?

Conversion changes over time: new campaigns, new reps, a price change. The drifting
variant of a stage gives each of its outcome logits a linear trend in the lead's arrival
month (its cohort): logit_{s,c,k}(m) = θ_{s,c,k} + β_{s,k}·m, with m ≤ 0 the months before
the latest arrival month's cohort, one slope per stage and outcome shared by the channels (each
channel keeps its own level θ, partially pooled as in the stationary model). θ is then the
latest cohort's level, and the fitted scenario forecasts from it: the trend is not
extrapolated past the history.

The choice (``--drift auto``), per stage with outcomes to choose between and completed
stays from at least ``MIN_MONTHS`` arrival months: both variants of the stage's likelihood
(pooled over channels, with its times in stage and, where chosen, its silent loss:
:class:`funnelsim.fit.losses.StageLikelihood`) at their maxima, and their WAIC computed by
ArviZ on every stay's log-likelihood under draws from the Laplace approximation there (as
for the duration families). The trend is kept when it raises the expected log predictive
density by more than ``SE_MULTIPLE`` standard errors of the difference (the pointwise
differences' spread, as ``arviz.compare`` computes it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from funnelsim.fit.crm import DurationChoice, cohort_months, fitted_outcomes
from funnelsim.fit.losses import StageLikelihood, json_number
from funnelsim.fit.repeat import hessian, inverse

CHOICES = ("auto", "none", "trend")  # --drift
MIN_MONTHS = 3  # arrival months with completed stays needed to consider a trend
SE_MULTIPLE = 2.0
DRAWS = 200  # Laplace draws for WAIC (fewer for very many stays)


@dataclass(frozen=True)
class DriftChoice:
    """Whether one stage's outcome probabilities drift, and the evidence."""

    stage: str
    drift: bool
    how: str  # "auto", "--drift" or why it was not considered
    months: int  # arrival months with completed stays
    elpd_gain: float  # WAIC's elpd of the trend less the stationary one's (0 if not fitted)
    elpd_gain_se: float
    slopes: dict[str, float]  # per outcome: the logit's change per month (trend's maximum)

    def as_dict(self) -> dict:
        out = {k: json_number(v) for k, v in asdict(self).items()}
        out["slopes"] = {k: json_number(v) for k, v in self.slopes.items()}
        return out


def explain(choice: DriftChoice) -> str:
    """One line a planner can read."""
    slopes = ", ".join(f"{k} {v:+.3f}" for k, v in choice.slopes.items())
    if choice.how not in ("auto", "--drift"):
        return f"stationary ({choice.how})"
    gain = f"elpd {choice.elpd_gain:+,.1f} ± {choice.elpd_gain_se:,.1f} (WAIC)"
    if choice.drift:
        return (
            f"drifts over {choice.months} arrival months: logit per month {slopes}; "
            f"{gain}; the forecast starts from the latest cohort's level"
            + (" (--drift)" if choice.how == "--drift" else "")
        )
    return f"stationary: no trend in {choice.months} arrival months ({gain})" + (
        " (--drift)" if choice.how == "--drift" else ""
    )


def choose_drift(
    history,
    durations: list[DurationChoice],
    silent: frozenset[int],
    mode: str = "auto",
) -> list[DriftChoice]:
    """Per stage, whether its outcome probabilities drift with the arrival month."""
    outcomes = fitted_outcomes(history, silent)
    names = [*history.stages, "won", "lost", "silent_loss"]
    cohort = cohort_months(history)
    out = []
    for s, stage in enumerate(history.stages):
        ks = outcomes[s]
        done = (history.stay_stage == s) & (history.stay_outcome >= 0)
        months = int(np.unique(cohort[done]).size)
        if mode == "none" or len(ks) < 2 or months < MIN_MONTHS:
            why = (
                "--drift none"
                if mode == "none"
                else "a single outcome"
                if len(ks) < 2
                else f"completed stays from {months} arrival month(s); {MIN_MONTHS} needed"
            )
            out.append(DriftChoice(stage, False, why, months, 0.0, 0.0, {}))
            continue
        recorded = [k for k in ks if k != len(history.stages) + 2]
        likelihood = StageLikelihood(history, s, recorded, [d for d in durations if d.stage == s])
        gain, se, slopes = _compare(likelihood, silent=s in silent)
        drift = gain > SE_MULTIPLE * se if mode == "auto" else True
        labels = [names[k] for k in ks[:-1]]
        out.append(
            DriftChoice(
                stage,
                drift,
                "auto" if mode == "auto" else "--drift",
                months,
                gain,
                se,
                dict(zip(labels, slopes.tolist(), strict=True)),
            )
        )
    return out


def _compare(likelihood: StageLikelihood, *, silent: bool) -> tuple[float, float, np.ndarray]:
    """(elpd gain of the trend, its standard error, the trend's slopes at its maximum)."""
    stationary = likelihood.fit(silent)
    trend = likelihood.fit(silent, trend=True, x0=stationary.x)
    k = likelihood.size(silent)
    slopes = trend.x[likelihood.n_dur + k :]
    elpd = {}
    for name, fit, with_trend in (("none", stationary, False), ("trend", trend, True)):
        elpd[name] = _waic_pointwise(likelihood, fit.x, silent, with_trend)
    difference = elpd["trend"] - elpd["none"]
    gain = float(difference.sum())
    se = float(math.sqrt(difference.size * difference.var()))
    return gain, se, slopes


def _waic_pointwise(likelihood, x, silent, trend, seed=0) -> np.ndarray:
    """Each stay's elpd under WAIC (ArviZ), from draws of the Laplace approximation at the
    maximum ``x`` (a small isotropic spread where the curvature is not usable)."""
    import arviz as az

    def total(t):
        return likelihood.total(t, silent, trend)

    cov = inverse(hessian(lambda t: -total(t), x))
    if np.isnan(cov).any():
        cov = np.eye(x.size) * 1e-4
    n = likelihood.column.size + likelihood.ages.size
    draws = max(50, min(DRAWS, 4_000_000 // max(n, 1)))
    rng = np.random.default_rng(seed)
    thetas = rng.multivariate_normal(x, cov, size=draws)
    pointwise = np.array([likelihood.pointwise(t, silent, trend) for t in thetas])
    data = az.from_dict(
        posterior={"theta": thetas[None]}, log_likelihood={"stays": pointwise[None]}
    )
    with warnings.catch_warnings():  # ArviZ's advice on the terms' spread: not ours to print
        warnings.simplefilter("ignore")
        result = az.waic(data, pointwise=True)
    return np.asarray(result.waic_i.values, dtype=float)
