"""The holdout check: how well the fitted model predicts repeat purchases after ``as_of``.

For each customer, the conditional expectation of its repeat purchases in
(as_of, until] given its calibration history — BG/NBD: Fader, Hardie & Lee (2005), eq. 10;
Pareto/NBD: Schmittlein et al. (1987), as in Fader & Hardie's 2005 note, eq. 25 — is set
against what it actually bought: in total, by calibration frequency (0, 1, …, 6, 7+), and as a
correlation over customers.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import numpy as np

from funnelsim.customers import bg_nbd_conditional_purchases, pareto_nbd_p_alive
from funnelsim.fit import io
from funnelsim.scenario import BGNBD, DAYS_PER_UNIT

GROUPS = 8  # frequencies 0..6 and 7+


def pareto_nbd_conditional_purchases(params: dict[str, float], t, x, t_x, age) -> np.ndarray:
    """E[Y(t) | x, t_x, T] of the Pareto/NBD: the alive customer's expected purchases
    (r + x)(β + T) / ((α + T)(s − 1)) · [1 − ((β + T)/(β + T + t))^(s − 1)] times P(alive)."""
    r, alpha, s, beta = (params[k] for k in ("r", "alpha", "s", "beta"))
    x, t_x, age = (np.asarray(v, dtype=float) for v in (x, t_x, age))
    p_alive = pareto_nbd_p_alive(SimpleNamespace(r=r, alpha=alpha, s=s, beta=beta), x, t_x, age)
    if abs(s - 1) < 1e-9:
        expected = (r + x) * (beta + age) / (alpha + age) * np.log((beta + age + t) / (beta + age))
    else:
        ratio = (beta + age) / (beta + age + t)
        expected = (r + x) * (beta + age) / ((alpha + age) * (s - 1)) * (1 - ratio ** (s - 1))
    return expected * p_alive


def holdout_check(tx, summary, fit, model: str, unit: str, until: date) -> dict[str, Any]:
    """Predicted against actual repeat purchases in (as_of, until]."""
    as_of = summary.as_of
    if until <= as_of:
        raise ValueError(f"--holdout-until {until} must be after --as-of {as_of}")
    scale = DAYS_PER_UNIT[unit]
    t = (until - as_of).days / scale
    x = summary.x.astype(float)
    t_x, age = summary.t_x_days / scale, summary.T_days / scale
    if model == "bg_nbd":
        bg = BGNBD.model_validate({"model": "bg_nbd", "unit": unit, "spend": 1, **fit.params})
        predicted = bg_nbd_conditional_purchases(bg, t, x, t_x, age)
    else:
        predicted = pareto_nbd_conditional_purchases(fit.params, t, x, t_x, age)
    actual = io.repeat_purchases_between(tx, summary, as_of, until).astype(float)
    group = np.minimum(x, GROUPS - 1).astype(int)
    rows = []
    for g in range(GROUPS):
        m = group == g
        rows.append(
            {
                "frequency": f"{g}+" if g == GROUPS - 1 else str(g),
                "customers": int(m.sum()),
                "actual_mean": _mean(actual[m]),
                "predicted_mean": _mean(predicted[m]),
                "actual_total": float(actual[m].sum()),
                "predicted_total": float(predicted[m].sum()),
            }
        )
    correlation = (
        float(np.corrcoef(predicted, actual)[0, 1])
        if predicted.std() > 0 and actual.std() > 0
        else None
    )
    return {
        "model": model,
        "parameters": "maximum likelihood",
        "as_of": as_of.isoformat(),
        "until": until.isoformat(),
        "length": t,
        "unit": unit,
        "actual_total": float(actual.sum()),
        "predicted_total": float(predicted.sum()),
        "correlation": correlation,
        "by_frequency": rows,
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None
