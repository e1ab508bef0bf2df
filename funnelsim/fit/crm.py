"""The funnel fitted to a CRM stage history: transitions, times in stage, deal values.

The model (PyMC), for each stage s with outcomes k (the stages, won or lost that leads were
seen to go to from s):

* **transitions**, partially pooled across channels (hierarchical Dirichlet): the
  funnel-wide probabilities μ_s ~ Dirichlet(1, …, 1) and each channel's
  p_{s,c} ~ Dirichlet(POOLING · μ_s): a channel with few leads is drawn towards the funnel's
  mean as if by ``POOLING`` (20) leads, one with many follows its own data. (A learnt
  concentration, or a logistic-normal spread, gives a funnel-shaped posterior on which NUTS
  diverges when there are only a few channels to learn it from.);
* **time in stage** per outcome (or one for the stage where an outcome has fewer than
  ``MIN_PER_OUTCOME`` completed stays): lognormal, gamma or Weibull, the family picked by
  WAIC (ArviZ) on the completed stays (reported, with AIC beside it), parameters with
  weakly informative priors around the observed scale;
* **censoring**: a stay still open at ``as_of`` has an unknown outcome and has lasted at
  least its age a: it adds log Σ_k p_{s,c,k} S_k(a) — not dropped, not counted as lost;
* **deal values** per channel: lognormal;
* **arrivals** per channel: :mod:`funnelsim.fit.arrivals`.

Completed stays enter through sufficient statistics where these are exact (counts of each
outcome; n, Σ log d and Σ (log d)² for a lognormal; n, Σ d and Σ log d for a gamma), so the
sampler's cost grows with the open stays, not with the history's length. The model is also
written for a short compilation on a fresh machine (PyTensor compiles C for every distinct
expression): the transition priors of all stages on one vector of logits, the open stays'
terms as one gather per duration family.

Posterior variables are named as the scenario's fields, for :mod:`funnelsim.engine.common`:
``p__<stage>__<channel>__<outcome>``, ``duration__<stage>__<outcome>__<field>`` (``all``
for a single duration), ``value__<channel>__median|sigma`` (none for a channel whose won
deals are all worth the same: :func:`fixed_values`) and
``arrivals__<channel>__leads_per_month|growth_per_month|season_<m>|k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps

from funnelsim.fit.repeat import hessian, inverse

MIN_PER_OUTCOME = 10  # completed stays needed to give an outcome its own time in stage
POOLING = 20.0  # pseudo-leads drawing a channel's transition probabilities to the funnel's
FAMILIES = ("lognormal", "gamma", "weibull")


@dataclass(frozen=True)
class DurationChoice:
    """The time-in-stage model of one stage (per outcome, or one for all its outcomes)."""

    stage: int
    outcome: int | None  # None: one duration for the whole stage
    family: str
    waic: dict[str, float]  # per family, on the completed stays (deviance scale): the choice
    aic: dict[str, float]  # per family, the same stays: reported beside it
    mle: dict[str, float]  # the chosen family's parameters, as scenario fields
    n: int


WAIC_DRAWS = 200  # Laplace draws per family for WAIC (fewer for very many stays)


def _log_pdf(family: str, log_d: np.ndarray, d: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Pointwise log density of each family on (draws, 2) log-parameters θ: lognormal
    (log median, log sigma), gamma and Weibull (log shape, log scale)."""
    a, b = theta[:, :1], theta[:, 1:]
    if family == "lognormal":
        sigma = np.exp(b)
        return -log_d - b - 0.5 * np.log(2 * np.pi) - (log_d - a) ** 2 / (2 * sigma**2)
    shape = np.exp(a)
    if family == "gamma":
        return (shape - 1) * log_d - d * np.exp(-b) - special.gammaln(shape) - shape * b
    return a - b + (shape - 1) * (log_d - b) - np.exp(shape * (log_d - b))


def _fit_family(family: str, days: np.ndarray) -> tuple[float, dict[str, float], np.ndarray]:
    """Maximum likelihood of one family on positive durations: (log-likelihood, scenario
    fields, log-parameters θ̂ as in :func:`_log_pdf`)."""
    d = np.maximum(days, 1e-6)
    if family == "lognormal":
        mu, sigma = np.log(d).mean(), max(np.log(d).std(), 1e-3)
        ll = sps.lognorm.logpdf(d, sigma, scale=math.exp(mu)).sum()
        return ll, {"median": math.exp(mu), "sigma": sigma}, np.array([mu, math.log(sigma)])
    if family == "gamma":
        shape, _, scale = sps.gamma.fit(d, floc=0)
        ll = sps.gamma.logpdf(d, shape, scale=scale).sum()
        theta = np.log([shape, scale])
        return ll, {"mean": shape * scale, "shape": shape}, theta
    shape, _, scale = sps.weibull_min.fit(d, floc=0)
    ll = sps.weibull_min.logpdf(d, shape, scale=scale).sum()
    return ll, {"scale": scale, "shape": shape}, np.log([shape, scale])


def _waic(family: str, days: np.ndarray, theta: np.ndarray, seed: int = 0) -> float:
    """WAIC (ArviZ, deviance scale: lower is better) of one family on the stays, from draws
    of its posterior's Laplace approximation at the MLE θ̂ (flat prior on log-parameters:
    2 parameters and, usually, hundreds of stays, so the approximation is close)."""
    import warnings

    import arviz as az

    d = np.maximum(days, 1e-6)
    log_d = np.log(d)

    def total(t):
        return float(_log_pdf(family, log_d, d, np.asarray(t)[None, :]).sum())

    cov = inverse(hessian(lambda t: -total(t), theta))
    if np.isnan(cov).any():  # a flat or odd likelihood: a small isotropic spread
        cov = np.eye(2) * 1e-4
    draws = max(50, min(WAIC_DRAWS, 4_000_000 // max(d.size, 1)))
    rng = np.random.default_rng(seed)
    thetas = rng.multivariate_normal(theta, cov, size=draws)
    pointwise = _log_pdf(family, log_d, d, thetas)
    data = az.from_dict(posterior={"theta": thetas[None]}, log_likelihood={"days": pointwise[None]})
    with warnings.catch_warnings():  # ArviZ's advice on the spread of the terms: not ours to print
        warnings.simplefilter("ignore")
        return float(az.waic(data, scale="deviance").elpd_waic)


MIN_DISTINCT_STAYS = 3  # distinct completed stays needed to tell the families apart


def choose_durations(history) -> list[DurationChoice]:
    """Per stage, per-outcome durations where every outcome has enough completed stays,
    else one; for each, the family with the lowest WAIC (computed by ArviZ; AIC beside it).

    Stays with fewer than ``MIN_DISTINCT_STAYS`` distinct lengths (one completed stay, or all
    of them equally long) cannot tell the families apart and have a degenerate maximum
    likelihood (a spike: sigma 0, shape infinite): they get a gamma, whose shape's prior
    keeps the posterior proper, starting at their mean with shape 1 (an exponential); no
    WAIC or AIC. A family whose maximum likelihood fails is left out of the comparison."""
    return [_choose_family(s, k, history.stay_days[m]) for s, k, m in _duration_groups(history)]


def _duration_groups(history) -> list[tuple[int, int | None, np.ndarray]]:
    """The groups of completed stays that get one time in stage each: (stage, outcome or
    None for the whole stage, mask of the stays)."""
    groups = []
    done = history.stay_outcome >= 0
    for s in range(len(history.stages)):
        here = done & (history.stay_stage == s)
        outcomes = np.unique(history.stay_outcome[here])
        per_outcome = outcomes.size > 1 and all(
            (history.stay_outcome[here] == k).sum() >= MIN_PER_OUTCOME for k in outcomes
        )
        if per_outcome:
            groups += [(s, int(k), here & (history.stay_outcome == k)) for k in outcomes]
        else:
            groups.append((s, None, here))
    return groups


def constant_durations(history) -> list[tuple[int, int | None, float, int]]:
    """The groups of at least ``MIN_PER_OUTCOME`` completed stays (as :func:`choose_durations`
    groups them) that all lasted the same time, within a relative 1e-9: (stage, outcome or
    None, days, stays). No family with a spread fits them (the posterior runs off to a
    spike)."""
    out = []
    for s, k, m in _duration_groups(history):
        d = np.maximum(history.stay_days[m], 0.0)
        if d.size >= MIN_PER_OUTCOME and np.ptp(d) <= FIXED_VALUE_TOLERANCE * d.max():
            out.append((s, k, float(d.max()), int(d.size)))
    return out


def _choose_family(stage: int, outcome: int | None, days: np.ndarray) -> DurationChoice:
    """The family with the lowest WAIC on one group of completed stays (days)."""
    n = int(days.size)
    d = np.maximum(days, 1e-6)
    if np.unique(d).size < MIN_DISTINCT_STAYS:
        mean = float(d.mean()) if n else 1.0
        return DurationChoice(stage, outcome, "gamma", {}, {}, {"mean": mean, "shape": 1.0}, n)
    fits = {}
    for family in FAMILIES:
        try:
            with np.errstate(all="ignore"):
                fit = _fit_family(family, days)
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if np.isfinite(fit[0]) and np.all(np.isfinite(fit[2])):
            fits[family] = fit
    if not fits:
        return DurationChoice(
            stage, outcome, "gamma", {}, {}, {"mean": float(d.mean()), "shape": 1.0}, n
        )
    aic = {f: 4.0 - 2.0 * fit[0] for f, fit in fits.items()}
    waic = {f: _waic(f, days, fit[2]) for f, fit in fits.items()}
    best = min(fits, key=lambda f: waic[f] if np.isfinite(waic[f]) else np.inf)
    return DurationChoice(stage, outcome, best, waic, aic, fits[best][1], n)


def duration_label(history, choice: DurationChoice) -> str:
    """``<stage>__<outcome>``, or ``<stage>__all`` for one duration of the whole stage."""
    outcome = "all" if choice.outcome is None else outcome_names(history)[choice.outcome]
    return f"{history.stages[choice.stage]}__{outcome}"


SILENT_LOSS = "silent_loss"  # the outcome nothing records (see funnelsim.fit.losses)


def outcome_names(history) -> list[str]:
    """Names of the outcome codes: the stages, won, lost, then the silent loss."""
    return [*history.stages, "won", "lost", SILENT_LOSS]


def silent_code(history) -> int:
    """The outcome code of a silent loss (after won and lost)."""
    return len(history.stages) + 2


def stage_outcomes(history) -> dict[int, list[int]]:
    """Per stage, the outcomes its completed stays went to (codes: stages, won, lost)."""
    done = history.stay_outcome >= 0
    return {
        s: sorted(np.unique(history.stay_outcome[done & (history.stay_stage == s)]).tolist())
        for s in range(len(history.stages))
    }


def cohort_months(history) -> np.ndarray:
    """Per stay, its lead's arrival month relative to the latest arrival month in the
    history (0 for the latest cohort, -1 the month before, ...): what a drift is read on."""
    first = np.datetime64(history.start, "M")
    day = np.datetime64(history.start, "D") + np.floor(history.arrived).astype("timedelta64[D]")
    month = (day.astype("datetime64[M]") - first).astype(np.int64)
    return (month - month.max())[history.stay_lead]


def fitted_outcomes(history, silent: frozenset[int] = frozenset()) -> dict[int, list[int]]:
    """Per stage, the outcomes the model gives it: those recorded and, for the stages in
    ``silent``, the silent loss (last)."""
    return {
        s: ks + [silent_code(history)] if s in silent else ks
        for s, ks in stage_outcomes(history).items()
    }


# ------------------------------------------------------------------ the PyMC model
#
# Written with few, vectorised pieces (one vector of logits for every stage's transitions,
# one vector of parameters per duration family, one gather for all the open stays):
# PyTensor compiles C code for every distinct expression, and one small expression per
# stage, channel and outcome would take minutes to compile on a fresh machine.


@dataclass(frozen=True)
class TransitionLayout:
    """Where each stage's transition probabilities sit: one row per stage with two or more
    outcomes for the funnel-wide mean, then one per channel; one column per outcome,
    padded to the widest stage. ``index`` gives each cell's logit: a position in the free
    vector θ, or ``len(θ)`` (the last outcome's logit, fixed at 0) or ``len(θ) + 1``
    (padding, logit -inf)."""

    index: np.ndarray  # (rows, widest) int
    real: np.ndarray  # (rows, widest) bool: a stage's outcome, not padding
    first_row: dict[int, int]  # stage -> its mean's row; its channels follow
    channels: int
    free: int

    @classmethod
    def of(cls, history, silent: frozenset[int] = frozenset()) -> TransitionLayout:
        outcomes = fitted_outcomes(history, silent)
        fitted = {s: ks for s, ks in outcomes.items() if len(ks) >= 2}
        channels = len(history.channels)
        widest = max((len(ks) for ks in fitted.values()), default=2)
        rows = len(fitted) * (1 + channels)
        free = sum((1 + channels) * (len(ks) - 1) for ks in fitted.values())
        index = np.full((rows, widest), free + 1)
        real = np.zeros((rows, widest), dtype=bool)
        first_row, row, at = {}, 0, 0
        for s, ks in fitted.items():
            first_row[s] = row
            for r in range(row, row + 1 + channels):
                index[r, : len(ks) - 1] = np.arange(at, at + len(ks) - 1)
                index[r, len(ks) - 1] = free
                real[r, : len(ks)] = True
                at += len(ks) - 1
            row += 1 + channels
        return cls(index, real, first_row, channels, free)

    def probabilities(self, theta: np.ndarray) -> np.ndarray:
        """The (…, rows, widest) probabilities from draws of θ (…, free)."""
        ext = np.concatenate(
            [theta, np.zeros((*theta.shape[:-1], 1)), np.full((*theta.shape[:-1], 1), -np.inf)],
            axis=-1,
        )
        z = ext[..., self.index]
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def _transitions(pm, pt, layout: TransitionLayout):
    """The transition probabilities' prior, written by hand on their logits so that every
    stage shares one vector of parameters and one set of operations (PyTensor compiles C
    for each distinct expression: eight Dirichlet variables with their simplex transforms
    took 40 s to compile on a fresh machine, this takes a few). The density is the same:
    for a stage with outcomes 1…K, the mean μ ~ Dirichlet(1, …, 1) and each channel's
    p ~ Dirichlet(POOLING · μ), on additive log-ratio coordinates θ (logit of outcome K
    fixed at 0), whose Jacobian is Π x_k:

        log π(θ) = Σ_k log μ_k + Σ_channels Σ_k (POOLING μ_k log p_k − log Γ(POOLING μ_k))

    up to a constant. Returns log p as a (rows × widest) matrix, 0 in the padding."""
    if layout.free == 0:  # every stage has a single outcome: nothing to fit
        return pt.zeros(layout.index.shape)
    theta = pm.Flat("transition_logits", shape=layout.free)
    ext = pt.concatenate([theta, pt.as_tensor(np.array([0.0, -np.inf]))])
    z = ext[layout.index]
    log_x = z - pm.math.logsumexp(z, axis=1, keepdims=True)
    # padding is log 0: replaced before any product, so no 0 · ∞ reaches a gradient
    log_x = pt.where(layout.real, log_x, 0.0)
    rows = layout.index.shape[0]
    means = np.array(sorted(layout.first_row.values()), dtype=int)
    mean_of = np.repeat(means, 1 + layout.channels)
    channel_rows = np.setdiff1d(np.arange(rows), means)
    alpha = POOLING * pt.exp(log_x)[mean_of[channel_rows]]
    real = layout.real[channel_rows].astype(float)
    pm.Potential(
        "transitions_prior",
        pt.sum(log_x[means]) + pt.sum(real * (alpha * log_x[channel_rows] - pt.gammaln(alpha))),
    )
    return log_x


def build_model(
    history,
    durations: list[DurationChoice],
    arrival_fits=None,
    silent: frozenset[int] = frozenset(),
    trend: frozenset[int] = frozenset(),
):
    """The joint model of transitions, times in stage (with the open stays censored),
    deal values and (optionally) arrivals. The stages in ``silent`` have a silent loss
    among their outcomes, whose survival is 1 at every age: an open stay of age a adds
    log(q + Σ_k p_k S_k(a)) (:mod:`funnelsim.fit.losses`). The stages in ``trend`` drift:
    their logits change linearly with the lead's arrival month (:mod:`funnelsim.fit.drift`),
    and the transition probabilities are those of the latest arrival month's cohort."""
    import pymc as pm
    import pytensor.tensor as pt

    outcomes = fitted_outcomes(history, silent)
    quiet = silent_code(history)
    channels = history.channels
    open_stay = history.stay_outcome < 0
    done = ~open_stay
    stay_channel = history.channel[history.stay_lead]
    # every parameter is constrained by its transform: no bounds to check at each step
    model = pm.Model(check_bounds=False)
    layout = TransitionLayout.of(history, silent)
    stay_row = np.full(len(history.stay_stage), -1)  # each stay's row in the layout
    for s, first in layout.first_row.items():
        m = history.stay_stage == s
        stay_row[m] = first + 1 + stay_channel[m]
    with model:
        log_p = _transitions(pm, pt, layout)
        if trend & set(layout.first_row):
            # one row of probabilities per (row, arrival month) that some stay has
            log_p, stay_cell, cells = _drifting(pm, pt, model, history, layout, stay_row, trend)
        else:
            stay_cell, cells = stay_row, layout.index.shape[0]
        width_p = layout.index.shape[1]
        counts = np.zeros((cells, width_p))
        fitted = done & (stay_row >= 0)
        for s, ks in outcomes.items():
            if s not in layout.first_row:
                continue
            here = fitted & (history.stay_stage == s)
            columns = np.searchsorted(ks, history.stay_outcome[here])
            np.add.at(counts, (stay_cell[here], columns), 1)
        if counts.any():
            pm.Potential("transitions", pt.sum(counts * log_p))
        # log p as one flat vector for one gather below, with two more slots: log 1 (the
        # only outcome of a stage that has one) and log 0 (padding)
        zero, impossible = counts.size, counts.size + 1
        log_p = pt.concatenate([log_p.ravel(), pt.as_tensor(np.array([0.0, -np.inf]))])
        # open stays alike (the same probabilities, stage and age to within AGE_BIN) as one
        # term with their count: a CRM that records no loss has thousands of old open leads
        rows, count, ages = _open_groups(history, stay_cell, open_stay)
        grouped = np.zeros(open_stay.size, dtype=bool)
        grouped[rows] = True
        log_survival, where, never = _durations(pm, pt, history, durations, done, grouped, ages)
        # one more slot: log S = 0, the silent loss's (it is never recorded, at any age)
        log_survival = pt.concatenate([log_survival, pt.zeros(1)])
        if rows.size:
            # each open stay: log Σ_k p_k S_k(age) over its stage's outcomes k, as one
            # (open stays × most outcomes) matrix padded with log 0
            width = max(len(ks) for ks in outcomes.values())
            p_index = np.full((rows.size, width), impossible)
            s_index = np.zeros((rows.size, width), dtype=int)
            for i, r in enumerate(rows):
                s = history.stay_stage[r]
                ks = outcomes[s]
                for j, k in enumerate(ks):
                    p_index[i, j] = zero if len(ks) < 2 else stay_cell[r] * width_p + j
                    s_index[i, j] = never if k == quiet else where[(r, s, k)]
            terms = log_p[p_index] + log_survival[s_index]
            pm.Potential("open_stays", pt.sum(count * pm.math.logsumexp(terms, axis=1)))
        _deal_values(pm, pt, history)
        if arrival_fits:
            from funnelsim.fit.arrivals import add_arrivals

            months, arrivals, exposure = history.monthly_arrivals()
            for c, channel in enumerate(channels):
                add_arrivals(
                    arrival_fits[c],
                    arrivals[c],
                    exposure,
                    months,
                    name_prefix=f"arrival__{channel}__",
                )
    return model


AGE_BIN = 0.01  # open stays whose log ages differ by less are one term (ages within 1%)


def _open_groups(history, stay_cell, open_stay):
    """The open stays as groups alike in all but a 1% difference of age: each group's first
    stay, its count, and per stay the age its group is evaluated at (the group's mean age;
    days). S(a) moves by the hazard × 0.5% of a within a group: a relative change below
    0.5% of S where a stay's own hazard × age is below 1, and where it is larger S is so
    small that the silent loss or the other outcomes' terms dominate."""
    rows = np.flatnonzero(open_stay)
    ages = history.stay_days.astype(float).copy()
    if rows.size == 0:
        return rows, np.zeros(0), ages
    stage = history.stay_stage[rows]
    age = np.maximum(history.stay_days[rows], 1e-6)
    key = np.stack([stay_cell[rows], stage, np.round(np.log(age) / AGE_BIN)], axis=1)
    _, first, inverse, count = np.unique(
        key, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    mean_age = np.bincount(inverse, weights=age) / count
    ages[rows[first]] = mean_age
    return rows[first], count.astype(float), ages


DRIFT_PRIOR = 0.25  # sd of a drift's slope (logit per month): ±0.5 in two months is plausible


def _drifting(pm, pt, model, history, layout: TransitionLayout, stay_row, trend):
    """Log probabilities per cell (a layout row and an arrival month some stay has) for
    stages that drift: logit_k(m) = θ_k + β_{s,k}·m, m ≤ 0 the arrival month relative to
    the latest arrival month, one slope per stage and outcome shared by its channels (the last
    outcome's logit stays 0). θ, partially pooled by the Dirichlet prior, is the latest
    cohort's level. Returns the (cells × widest) log p, 0 in the padding, each stay's cell
    (-1 for stays of stages with a single outcome) and the number of cells."""
    x = np.where(np.isin(history.stay_stage, list(trend)), cohort_months(history), 0)
    span = int(-x.min()) + 1
    key = np.where(stay_row >= 0, stay_row * span - x, -1)
    cells, inverse = np.unique(key[key >= 0], return_inverse=True)
    stay_cell = np.full(key.size, -1)
    stay_cell[key >= 0] = inverse
    cell_row, cell_x = cells // span, -(cells % span)
    slope_index = np.full(layout.index.shape, 0)
    n_slopes = 0
    for s, first in sorted(layout.first_row.items()):
        if s not in trend:
            continue
        k = int(layout.real[first].sum()) - 1  # free logits of the stage
        slope_index[first : first + 1 + layout.channels, :k] = np.arange(n_slopes, n_slopes + k) + 1
        n_slopes += k
    beta = pm.Normal("drift_slopes", mu=0.0, sigma=DRIFT_PRIOR, shape=n_slopes)
    beta_ext = pt.concatenate([pt.zeros(1), beta])
    theta = model["transition_logits"]
    ext = pt.concatenate([theta, pt.as_tensor(np.array([0.0, -np.inf]))])
    z = ext[layout.index[cell_row]] + beta_ext[slope_index[cell_row]] * cell_x[:, None]
    log_p = z - pm.math.logsumexp(z, axis=1, keepdims=True)
    return pt.where(layout.real[cell_row], log_p, 0.0), stay_cell, cells.size


def _durations(pm, pt, history, durations, done, open_stay, ages):
    """Times in stage: one vector of parameters per family; the completed stays' density by
    sufficient statistics (lognormal, gamma) or per stay (Weibull); the log S(age) of the
    stays in ``open_stay`` at their ``ages`` (per stay; days), one vector for all of them
    (one call per family). Returns that vector, per (open stay, stage, outcome) the
    position of its log S in it, and its length."""
    families: dict[str, list[DurationChoice]] = {}
    for choice in durations:
        families.setdefault(choice.family, []).append(choice)
    outcomes = stage_outcomes(history)
    survival, where, size = [], {}, 0
    for family, group in families.items():
        masks = []
        for choice in group:
            m = done & (history.stay_stage == choice.stage)
            if choice.outcome is not None:
                m &= history.stay_outcome == choice.outcome
            masks.append(m)
        days = [np.maximum(history.stay_days[m], 1e-6) for m in masks]
        n = np.array([d.size for d in days], dtype=float)
        guess = np.array([np.median(d) if d.size else 1.0 for d in days])
        mean_guess = np.array([d.mean() if d.size else 1.0 for d in days])
        name = f"duration_{family}"
        count = len(group)
        if family == "lognormal":
            median = pm.LogNormal(
                f"{name}_median", mu=np.log(np.maximum(guess, 1e-3)), sigma=2.0, shape=count
            )
            sigma = pm.HalfNormal(f"{name}_sigma", sigma=2.0, shape=count)
            mu = pt.log(median)
            s1 = np.array([np.log(d).sum() for d in days])
            s2 = np.array([(np.log(d) ** 2).sum() for d in days])
            pm.Potential(
                f"times_{family}",
                pt.sum(-n * pt.log(sigma) - (s2 - 2 * mu * s1 + n * mu**2) / (2 * sigma**2)),
            )
            params, dist = (mu, sigma), pm.LogNormal
        elif family == "gamma":
            mean = pm.LogNormal(
                f"{name}_mean", mu=np.log(np.maximum(mean_guess, 1e-3)), sigma=2.0, shape=count
            )
            shape = pm.LogNormal(f"{name}_shape", mu=0.0, sigma=1.5, shape=count)
            rate = shape / mean
            s_log = np.array([np.log(d).sum() for d in days])
            s_d = np.array([d.sum() for d in days])
            pm.Potential(
                f"times_{family}",
                pt.sum(
                    n * (shape * pt.log(rate) - pt.gammaln(shape))
                    + (shape - 1) * s_log
                    - rate * s_d
                ),
            )
            params, dist = (shape, rate), pm.Gamma
        else:
            scale = pm.LogNormal(
                f"{name}_scale", mu=np.log(np.maximum(mean_guess, 1e-3)), sigma=2.0, shape=count
            )
            shape = pm.LogNormal(f"{name}_shape", mu=0.0, sigma=1.0, shape=count)
            index = np.concatenate([np.full(d.size, i) for i, d in enumerate(days)]).astype(int)
            obs = np.concatenate(days)
            pm.Potential(
                f"times_{family}",
                pt.sum(pm.logp(pm.Weibull.dist(alpha=shape[index], beta=scale[index]), obs)),
            )
            params, dist = (shape, scale), pm.Weibull
        # the open stays this family's durations apply to: (stay, which duration)
        stays, which = [], []
        for i, choice in enumerate(group):
            rows = np.flatnonzero(open_stay & (history.stay_stage == choice.stage))
            keys = [choice.outcome] if choice.outcome is not None else outcomes[choice.stage]
            for r in rows:
                for k in keys:
                    where[(r, choice.stage, k)] = size + len(stays)
                stays.append(r)
                which.append(i)
        if stays:
            which = np.array(which)
            age = np.maximum(ages[np.array(stays)], 1e-6)
            if family == "gamma":  # the first guess: each duration's completed stays' MLE
                k = np.array([group[i].mle["shape"] for i in which])
                z = age * k / np.array([group[i].mle["mean"] for i in which])
                deep = z > 2 * (k + GAMMA_TAIL_FROM)
                survival.append(
                    gamma_log_survival(pt, params[0][which], params[1][which], age, deep)
                )
            else:
                survival.append(pm.logccdf(dist.dist(params[0][which], params[1][which]), age))
            size += len(stays)
    log_survival = pt.concatenate(survival) if survival else pt.zeros(1)
    return log_survival, where, size if survival else 1


FIXED_VALUE_TOLERANCE = 1e-9  # relative spread of a channel's won values read as one price
MIN_VALUES_FOR_SPREAD = 3  # won values a channel needs to fit its own sigma
NO_VALUES_PRIOR_SIGMA = 0.5  # prior sd of log median for a channel without a won value


def won_values(history) -> list[np.ndarray]:
    """Per channel, the deal values of its won leads (finite and positive), in the log's
    currency."""
    won = (history.outcome == 1) & np.isfinite(history.value) & (history.value > 0)
    return [history.value[won & (history.channel == c)] for c in range(len(history.channels))]


def fixed_values(history) -> dict[str, float | None]:
    """Per channel, its deal value when every won deal of it is worth the same (at least two,
    equal within a relative 1e-9: a price list, no spread to fit), else None."""
    out: dict[str, float | None] = {}
    for channel, v in zip(history.channels, won_values(history), strict=True):
        same = v.size >= 2 and v.max() - v.min() <= FIXED_VALUE_TOLERANCE * v.max()
        out[channel] = float(np.median(v)) if same else None
    return out


@dataclass(frozen=True)
class ValueLayout:
    """How each channel's deal value (lognormal: median, sigma) is modelled.

    ``median_index[c]``: the channel's position in the sampled ``value_median`` vector, or -1
    when its median is a constant ``median[c]`` (a fixed value). ``sigma_index[c]``: its
    position in the sampled ``value_sigma``, or -1 when its sigma is the constant
    ``sigma[c]``: 0 for a fixed value; for a channel with fewer than
    ``MIN_VALUES_FOR_SPREAD`` won values (a funnel-shaped posterior otherwise), the pooled
    spread of the log values around their channel's mean, over the channels with two or more
    values not fixed (1 when there is none).
    ``median[c]`` is otherwise the prior's guess: the channel's median won value, or for a
    channel without one, the median of every won value (1 when there is none at all)."""

    median_index: np.ndarray
    sigma_index: np.ndarray
    median: np.ndarray
    sigma: np.ndarray
    n: np.ndarray  # won values per channel

    @classmethod
    def of(cls, history) -> ValueLayout:
        values = won_values(history)
        fixed = list(fixed_values(history).values())
        every = np.concatenate(values)
        pooled_median = float(np.median(every)) if every.size else 1.0
        spread = [
            np.log(v) - np.log(v).mean()
            for v, f in zip(values, fixed, strict=True)
            if v.size >= 2 and f is None
        ]
        squares = sum(float((r**2).sum()) for r in spread)
        dof = sum(r.size - 1 for r in spread)
        pooled_sigma = math.sqrt(squares / dof) if dof else 1.0
        n = np.array([v.size for v in values])
        median = np.array(
            [
                f if f is not None else np.median(v) if v.size else pooled_median
                for f, v in zip(fixed, values, strict=True)
            ],
            dtype=float,
        )
        sampled = np.array([f is None for f in fixed])
        median_index = np.where(sampled, np.cumsum(sampled) - 1, -1)
        own = sampled & (n >= MIN_VALUES_FOR_SPREAD)
        sigma_index = np.where(own, np.cumsum(own) - 1, -1)
        sigma = np.where(sampled, pooled_sigma, 0.0)
        return cls(median_index, sigma_index, median, sigma, n)


GAMMA_TAIL_TERMS = 8
GAMMA_TAIL_FROM = 30.0  # shape + this: where the asymptotic series takes over


def gamma_log_survival(pt, shape, rate, age, deep: np.ndarray | None = None):
    """log P(X > age) of a gamma(shape, rate), finite with a finite gradient far into the
    tail. PyMC's ``logccdf`` of a gamma is -inf from about rate·age = 40 (where a CRM that
    records no loss keeps its dead leads), which stops NUTS. Below z = rate·age = shape + 30
    this is log Q(shape, z) by PyTensor's ``gammaincc``; above, the asymptotic series of the
    upper incomplete gamma (Abramowitz and Stegun 6.5.32),
    log Γ(k, z) ≈ (k − 1) log z − z + log Σ_{n=0}^{8} (k − 1)⋯(k − n) / zⁿ, less log Γ(k)
    (relative error below 1e-8 there for shapes up to 10, 1e-5 up to 20).

    ``deep`` (per age) marks the ages known to lie far past that edge (twice it under the
    parameters' first guess): for them only the series is computed, which saves the
    incomplete gamma and its gradient in the shape, the costly part (about 200 ns an age;
    a CRM without recorded losses has thousands of old open leads)."""
    z = rate * age
    edge = shape + GAMMA_TAIL_FROM
    if deep is None or not deep.any():
        near, far = pt.minimum(z, edge), pt.maximum(z, edge)  # no NaN from the other branch
        return pt.switch(z < edge, pt.log(pt.gammaincc(shape, near)), _gamma_tail(pt, shape, far))
    deep_at, near_at = np.flatnonzero(deep), np.flatnonzero(~deep)
    out = pt.zeros(age.shape)
    out = pt.set_subtensor(
        out[deep_at], _gamma_tail(pt, shape[deep_at], pt.maximum(z[deep_at], 1.0))
    )
    return pt.set_subtensor(
        out[near_at], gamma_log_survival(pt, shape[near_at], rate[near_at], age[near_at])
    )


def _gamma_tail(pt, shape, z):
    """log Q(shape, z) by the asymptotic series (see :func:`gamma_log_survival`)."""
    term = pt.ones_like(z)
    total = pt.ones_like(z)
    for n in range(1, GAMMA_TAIL_TERMS + 1):
        term = term * (shape - n) / z
        total = total + term
    return (shape - 1.0) * pt.log(z) - z + pt.log(total) - pt.gammaln(shape)


def _deal_values(pm, pt, history) -> None:
    """Lognormal deal values per channel, by sufficient statistics of the won values (see
    :class:`ValueLayout`: a fixed value is not sampled, a channel with few values borrows the
    others' spread, one without any their median as its guess)."""
    layout = ValueLayout.of(history)
    values = won_values(history)
    sampled = np.flatnonzero(layout.median_index >= 0)
    if sampled.size == 0:
        return
    logs = [np.log(values[c]) for c in sampled]
    n = layout.n[sampled].astype(float)
    s1 = np.array([x.sum() for x in logs])
    s2 = np.array([(x**2).sum() for x in logs])
    spread = np.where(n > 0, 2.0, NO_VALUES_PRIOR_SIGMA)
    median = pm.LogNormal(
        "value_median", mu=np.log(layout.median[sampled]), sigma=spread, shape=sampled.size
    )
    sigma = pt.as_tensor(layout.sigma[sampled])
    own = layout.sigma_index[sampled] >= 0
    if own.any():
        free = pm.HalfNormal("value_sigma", sigma=2.0, shape=int(own.sum()))
        sigma = pt.set_subtensor(sigma[np.flatnonzero(own)], free)
    mu = pt.log(median)
    pm.Potential(
        "values", pt.sum(-n * pt.log(sigma) - (s2 - 2 * mu * s1 + n * mu**2) / (2 * sigma**2))
    )


def posterior_variables(
    idata, history, durations, arrival_fits, first_forecast_month, silent=frozenset()
):
    """The posterior as the scalar variables the engines read (see the module docstring)."""
    import xarray as xr

    post = idata.posterior
    names = outcome_names(history)
    outcomes = fitted_outcomes(history, silent)
    one = xr.DataArray(
        np.ones((post.sizes["chain"], post.sizes["draw"])),
        coords={"chain": post["chain"], "draw": post["draw"]},
        dims=("chain", "draw"),
    )
    out: dict[str, xr.DataArray] = {}
    layout = TransitionLayout.of(history, silent)
    if layout.free:
        theta = post["transition_logits"]
        p = layout.probabilities(theta.values)  # (chain, draw, rows, widest)
        coords = {"chain": theta["chain"], "draw": theta["draw"]}
    for s, ks in outcomes.items():
        stage = history.stages[s]
        for c, channel in enumerate(history.channels):
            for j, k in enumerate(ks):
                key = f"p__{stage}__{channel}__{names[k]}"
                if s not in layout.first_row:
                    out[key] = one
                    continue
                row = layout.first_row[s] + 1 + c
                out[key] = xr.DataArray(p[..., row, j], coords=coords, dims=("chain", "draw"))
    families: dict[str, list[DurationChoice]] = {}
    for choice in durations:
        families.setdefault(choice.family, []).append(choice)
    for family, group in families.items():
        for i, choice in enumerate(group):
            label = duration_label(history, choice)
            for field in choice.mle:
                out[f"duration__{label}__{field}"] = _element(post[f"duration_{family}_{field}"], i)
    values = ValueLayout.of(history)
    for c, channel in enumerate(history.channels):
        i, j = values.median_index[c], values.sigma_index[c]
        if i < 0:  # a fixed value: the scenario's own numbers (sigma 0), no draws
            continue
        out[f"value__{channel}__median"] = _element(post["value_median"], i)
        out[f"value__{channel}__sigma"] = (
            _element(post["value_sigma"], j) if j >= 0 else one * values.sigma[c]
        )
    if arrival_fits:
        from funnelsim.fit.arrivals import posterior_channel

        for fit, channel in zip(arrival_fits, history.channels, strict=True):
            prefix = f"arrival__{channel}__"
            draws = {k[len(prefix) :]: v for k, v in post.items() if k.startswith(prefix)}
            for field, values in posterior_channel(fit, draws, first_forecast_month).items():
                # indexing the season keeps its month as a scalar coordinate: drop it
                out[f"arrivals__{channel}__{field}"] = values.reset_coords(drop=True)
    return xr.Dataset(out)


def _element(var, *index):
    """One element of a vector (or matrix) variable: its draws over (chain, draw)."""
    extra = [d for d in var.dims if d not in ("chain", "draw")]
    return var.isel(dict(zip(extra, index, strict=True)), drop=True)
