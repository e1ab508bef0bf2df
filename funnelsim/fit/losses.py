"""Does a CRM record a stage's losses? The silent-loss (cure) model against the recorded one.

Many CRMs never record a loss: a lead that goes nowhere simply stays "open". Read as open,
such a lead is censored, and a model whose only outcomes are those recorded concludes that
every open lead will move on or win, eventually (the fitted time in stage stretches to
absorb the dead leads). The delayed-feedback model of conversion (Chapelle, "Modeling
delayed feedback in display advertising", KDD 2014) adds the possibility that nothing is
ever recorded: in a stage with recorded outcomes k (probabilities p_k, times in stage with
survival S_k) and a silent-loss probability q, Σ p_k + q = 1,

* a completed stay to outcome k after d days adds log p_k + log f_k(d);
* a stay still open at age a adds log(q + Σ_k p_k S_k(a)).

The signal is the open leads far older than the completed stays: with q = 0 they can only
be explained by long times in stage, which the completed stays contradict.

Per stage, pooled over channels, both models are fitted by maximum likelihood over the
outcome probabilities and the stage's times in stage (the families chosen on the completed
stays); the likelihood-ratio statistic LR = 2(ℓ_silent − ℓ_recorded) is referred to its
null distribution with q on the boundary, ½χ²₀ + ½χ²₁ (Self and Liang, JASA 1987), and the
stage's losses are modelled as silent when the p-value is below ``ALPHA``. The choice is
*silent* (no loss recorded), *partly recorded* (some losses recorded, and evidence of
silent ones) or *recorded*.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from funnelsim.fit.crm import DurationChoice, stage_outcomes

# p-value below which a stage's losses are modelled as (partly) silent. The errors are not
# alike: a silent loss the fit misses makes every dead lead a future win (forecasts several
# times too high), while one it adds where there is none is estimated near 0 by the data.
ALPHA = 0.01
CHOICES = ("recorded", "silent", "auto")  # --losses


@dataclass(frozen=True)
class LossChoice:
    """How one stage's losses are modelled, and the evidence."""

    stage: str
    choice: str  # "recorded", "silent" or "partly recorded"
    how: str  # "auto" (by the test) or "--losses"
    recorded_losses: int  # completed stays that went to lost
    completed_stays: int
    open_stays: int
    longest_completed_days: float  # the longest completed stay (days)
    open_older_than_longest: int  # open stays older than that
    silent_share: float  # q at the silent model's maximum likelihood (pooled over channels)
    likelihood_ratio: float  # 2 (ℓ_silent − ℓ_recorded)
    p_value: float

    @property
    def silent(self) -> bool:
        return self.choice != "recorded"

    def as_dict(self) -> dict:
        return {k: json_number(v) for k, v in asdict(self).items()}


def json_number(v):
    """A float rounded for estimates.json, None where it is not finite (JSON has no NaN);
    anything else as it is."""
    if not isinstance(v, float):
        return v
    return round(v, 6) if math.isfinite(v) else None


def choose_losses(history, durations: list[DurationChoice], mode: str = "auto") -> list[LossChoice]:
    """Per stage, whether its losses are modelled as silent: by the likelihood-ratio test
    (``mode="auto"``), or as ``--losses`` says (``"recorded"``, ``"silent"``)."""
    outcomes = stage_outcomes(history)
    out = []
    for s, stage in enumerate(history.stages):
        here = history.stay_stage == s
        done = here & (history.stay_outcome >= 0)
        open_ = here & (history.stay_outcome < 0)
        completed = history.stay_days[done]
        longest = float(completed.max()) if completed.size else 0.0
        ll0, ll1, q = _likelihoods(history, s, outcomes[s], [d for d in durations if d.stage == s])
        lr = max(2.0 * (ll1 - ll0), 0.0)
        p_value = 0.5 * float(sps.chi2.sf(lr, 1)) if lr > 0 else 1.0
        silent = p_value < ALPHA if mode == "auto" else mode == "silent"
        recorded = int((history.stay_outcome[done] == history.lost).sum())
        choice = "recorded" if not silent else "partly recorded" if recorded else "silent"
        out.append(
            LossChoice(
                stage=stage,
                choice=choice,
                how="auto" if mode == "auto" else "--losses",
                recorded_losses=recorded,
                completed_stays=int(done.sum()),
                open_stays=int(open_.sum()),
                longest_completed_days=longest,
                open_older_than_longest=int((history.stay_days[open_] > longest).sum()),
                silent_share=q,
                likelihood_ratio=lr,
                p_value=p_value,
            )
        )
    return out


def explain(choice: LossChoice) -> str:
    """One line a planner can read: the choice and its evidence."""
    older = (
        f"{choice.open_older_than_longest:,} of {choice.open_stays:,} open leads are older than "
        f"the longest completed stay ({choice.longest_completed_days:,.0f} days)"
    )
    p = f"p {choice.p_value:.2g}" if choice.p_value >= 1e-16 else "p < 1e-16"
    test = f"LR {choice.likelihood_ratio:,.1f}, {p}"
    if choice.how != "auto":
        return f"{choice.choice} (--losses); {older}"
    if choice.silent:
        return (
            f"{choice.choice}: {older}; about {choice.silent_share:.0%} of leads leave "
            f"unrecorded ({test}; silent below p {ALPHA})"
        )
    return f"recorded: {older}; no evidence of unrecorded losses ({test})"


# ------------------------------------------------------------------ the two likelihoods


def _log_sf(family: str, d: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """log S(d) of a family at log-parameters θ (as crm._log_pdf: lognormal (log median,
    log sigma), gamma and Weibull (log shape, log scale)); θ is kept within e^±30, where
    the optimiser may wander."""
    a, b = np.clip(theta, -30.0, 30.0)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        if family == "lognormal":
            return sps.norm.logsf((np.log(d) - a) / np.exp(b))
        if family == "gamma":
            return np.log(np.maximum(special.gammaincc(np.exp(a), d / np.exp(b)), 1e-300))
        return -np.minimum((d / np.exp(b)) ** np.exp(a), 1e300)


def _log_pdf(family: str, d: np.ndarray, theta: np.ndarray) -> np.ndarray:
    from funnelsim.fit.crm import _log_pdf as log_pdf

    theta = np.clip(np.asarray(theta), -30.0, 30.0)[None, :]
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        return log_pdf(family, np.log(d), d, theta)[0]


def _start(choice: DurationChoice) -> np.ndarray:
    m = choice.mle
    if choice.family == "lognormal":
        return np.log([m["median"], m["sigma"]])
    if choice.family == "gamma":
        return np.log([m["shape"], m["mean"] / m["shape"]])
    return np.log([m["shape"], m["scale"]])


class StageLikelihood:
    """The likelihood of one stage's stays, pooled over channels: outcome probabilities (a
    logit per outcome, the last fixed at 0; with ``silent``, the silent loss is the last),
    optionally a linear trend of the logits in the lead's arrival month (``trend``: a slope
    per free logit, in months before the latest arrival month's cohort, so the intercepts are the
    latest cohort's level), and the stage's times in stage (the families chosen on the
    completed stays). Parameters: the durations' log-parameters, the logits, the slopes."""

    def __init__(self, history, s: int, ks: list[int], durations: list[DurationChoice]):
        from funnelsim.fit.crm import cohort_months

        here = history.stay_stage == s
        done = here & (history.stay_outcome >= 0)
        self.ks, self.durations = ks, durations
        self.ages = np.maximum(history.stay_days[here & (history.stay_outcome < 0)], 1e-6)
        self.outcome = history.stay_outcome[done]
        self.days = np.maximum(history.stay_days[done], 1e-6)
        cohort = cohort_months(history).astype(float)
        self.x_done, self.x_open = cohort[done], cohort[here & (history.stay_outcome < 0)]
        self.column = np.searchsorted(ks, self.outcome)
        self.counts = np.bincount(self.column, minlength=len(ks)).astype(float)
        if not durations or durations[0].outcome is None:
            self.group_of = [0] * len(ks)
        else:
            self.group_of = [next(i for i, d in enumerate(durations) if d.outcome == k) for k in ks]
        self.theta0 = np.concatenate([_start(d) for d in durations]) if durations else np.zeros(0)
        self.n_dur = self.theta0.size

    @property
    def usable(self) -> bool:
        return bool(self.ages.size and self.ks and self.durations)

    def size(self, silent: bool) -> int:
        """The number of free logits."""
        return len(self.ks) + int(silent) - 1

    def pointwise(self, params: np.ndarray, silent: bool, trend: bool) -> np.ndarray:
        """Each stay's log-likelihood: the completed stays', then the open ones'."""
        k = self.size(silent)
        theta = params[: self.n_dur].reshape(-1, 2)
        z = params[self.n_dur : self.n_dur + k]
        slope = params[self.n_dur + k : self.n_dur + 2 * k] if trend else np.zeros(k)

        def log_p(x):
            logits = np.concatenate(
                [z[None, :] + slope[None, :] * x[:, None], np.zeros((x.size, 1))], axis=1
            )
            return logits - special.logsumexp(logits, axis=1, keepdims=True)

        done = log_p(self.x_done)[np.arange(self.column.size), self.column]
        for g, d in enumerate(self.durations):
            m = np.isin(self.column, [j for j, gg in enumerate(self.group_of) if gg == g])
            if m.any():
                done[m] += _log_pdf(d.family, self.days[m], theta[g])
        open_p = log_p(self.x_open)
        terms = [
            open_p[:, j] + _log_sf(self.durations[g].family, self.ages, theta[g])
            for j, g in enumerate(self.group_of)
        ]
        if silent:
            terms.append(open_p[:, -1])
        return np.concatenate([done, special.logsumexp(np.vstack(terms), axis=0)])

    def total(self, params: np.ndarray, silent: bool, trend: bool) -> float:
        value = float(self.pointwise(params, silent, trend).sum())
        return value if math.isfinite(value) else -1e300

    def start(self, silent: bool) -> np.ndarray:
        shares = (self.counts + 0.5) / (self.counts + 0.5).sum()
        if silent:  # the recorded outcomes' logits relative to the silent one (0.1)
            return np.log(shares / 0.1)
        return np.log(shares[:-1] / shares[-1]) if len(self.ks) > 1 else np.zeros(0)

    def fit(self, silent: bool, trend: bool = False, x0: np.ndarray | None = None):
        """The maximum (scipy.optimize.OptimizeResult; ``fun`` is −ℓ)."""
        if x0 is None:
            x0 = np.concatenate([self.theta0, self.start(silent)])
        if trend and x0.size == self.n_dur + self.size(silent):
            x0 = np.concatenate([x0, np.zeros(self.size(silent))])
        return _minimise(lambda x: -self.total(x, silent, trend), x0)


def _likelihoods(history, s: int, ks: list[int], durations: list[DurationChoice]):
    """(ℓ recorded, ℓ silent, q̂) of stage ``s`` at their maxima; (0, 0, 0) when no stay is
    open (nothing can tell the models apart)."""
    stage = StageLikelihood(history, s, ks, durations)
    if not stage.usable:
        return 0.0, 0.0, 0.0
    fit0 = stage.fit(silent=False)
    start1 = np.concatenate([fit0.x[: stage.n_dur], stage.start(silent=True)])
    fit1 = stage.fit(silent=True, x0=start1)
    ll0, ll1 = -fit0.fun, max(-fit1.fun, -fit0.fun)
    z = np.concatenate([fit1.x[stage.n_dur :], [0.0]])
    q = float(np.exp(z[-1] - special.logsumexp(z)))
    return ll0, ll1, q if ll1 > ll0 else 0.0


def _minimise(f, x0):
    best = optimize.minimize(f, x0, method="Nelder-Mead" if x0.size <= 2 else "L-BFGS-B")
    # polish with Nelder-Mead from the gradient method's end (the log S terms can be flat)
    again = optimize.minimize(f, best.x, method="Nelder-Mead", options={"maxiter": 4000})
    return again if again.fun < best.fun else best


# ------------------------------------------------------------------ the stale rule


STALE_TOLERANCE_DAYS = 2 / 86_400  # a rule's close written to the second


def with_stale_rule(history, days: float):
    """The history as the model sees it under a CRM's rule that closes a lead as lost after
    ``days`` days in a stage (Pipedrive's "rotting" deals): a stay open longer, or closed
    as lost at ``days`` (the rule's own close), has lasted at least ``days`` with an
    outcome the rule hid, so it is censored at ``days``. Stays that moved on or were lost
    by hand earlier keep their outcome. The leads themselves are unchanged (the open
    pipeline still lists every open lead; the scenario's ``stale_after`` closes those
    older than ``days`` on the forecast's first day)."""
    import dataclasses

    outcome = history.stay_outcome.copy()
    stay_days = history.stay_days.copy()
    by_rule = (outcome == history.lost) & (stay_days >= days - STALE_TOLERANCE_DAYS)
    stale = (outcome < 0) & (stay_days > days)
    outcome[by_rule] = -1
    stay_days[by_rule | stale] = days
    outcome.setflags(write=False)
    stay_days.setflags(write=False)
    return dataclasses.replace(history, stay_outcome=outcome, stay_days=stay_days)
