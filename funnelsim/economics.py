"""Unit economics: what the sales system costs, and what a new customer is worth.

* Marketing cost per channel: a ``budget_per_month`` is spent every month (a partial month
  pro rata) whatever the leads; with only a ``cost_per_lead``, spend is per realised lead.
  A channel without ``leads_per_month`` gets budget ÷ cost_per_lead leads a month.
* Sales cost: ``rep_per_month`` × the sales team's rep-months (0 without a team).
* CAC = (marketing + sales cost) ÷ new customers; marketing-only CAC; per channel, the
  channel's marketing cost ÷ its new customers plus the sales cost per new customer.
* LTV = gross margin × (the mean first purchase of the horizon's new customers + the
  expected repeat revenue of a new customer over ``ltv_years``, discounted monthly at
  ``discount_rate_per_year``), from the repeat model's closed forms.
* Payback months = CAC ÷ the gross margin a new customer brings per month over its first
  year (first purchase and expected repeat revenue of the first 12 months, ÷ 12).
* ROI = (gross margin − costs) ÷ costs, gross margin = revenue × ``gross_margin``.

Undefined ratios (no new customers, no cost) are NaN here and null in JSON. Nothing here
simulates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from funnelsim.scenario import Scenario


def costs(funnel, tally) -> dict[str, np.ndarray]:
    """Marketing cost (R, P, C) and sales cost (R, P) of every replication (currency)."""
    reps = tally.leads.shape[0]
    marketing = funnel.budget.T[None, :, :] + tally.leads * funnel.cost_per_lead[None, None, :]
    sales = np.zeros((reps, funnel.calendar.periods))
    team = funnel.team
    if team is not None and team.rep_per_month is not None:
        sales[:] = team.rep_per_month * team.rep_months[None, :]
    return {
        "marketing_cost": np.broadcast_to(marketing, tally.leads.shape).copy(),
        "sales_cost": sales,
    }


def customer_value(scenario: Scenario, funnel) -> dict[str, Any]:
    """What a new customer brings after its first purchase: the expected (discounted)
    repeat revenue over the LTV cut-off and over its first year (currency), as attributes."""
    c = scenario.costs
    months = int(round(c.ltv_years * 12))
    repeat = scenario.repeat
    lifetime = first_year = 0.0
    if repeat is not None:
        from funnelsim.customers import expected_repeat_purchases, mean_spend

        days = np.arange(months + 1) * (365.25 / 12)
        cumulative = expected_repeat_purchases(repeat, days) * mean_spend(repeat)
        per_month = np.diff(cumulative)
        discount = (1.0 + c.discount_rate_per_year) ** (-np.arange(1, months + 1) / 12.0)
        lifetime = float((per_month * discount).sum())
        first_year = float(cumulative[min(12, months)])
    return {
        "gross_margin": c.gross_margin,
        "ltv_months": months,
        "repeat_value_per_customer": lifetime,
        "repeat_first_year_per_customer": first_year,
    }


def _ratio(num, den):
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def metrics(v: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Economics per replication (and period) from summed raw counts.

    ``v`` holds arrays over (replication, period[, channel]); channel sums are taken here.
    """
    margin = float(attrs["gross_margin"])
    new_customers = v["won"].sum(axis=-1)
    marketing_c = v["marketing_cost"]
    marketing = marketing_c.sum(axis=-1)
    sales = v["sales_cost"]
    total_cost = marketing + sales
    revenue_new = v["revenue"].sum(axis=-1) + v.get("first_payment", 0 * v["revenue"]).sum(axis=-1)
    revenue = revenue_new + _repeat_revenue(v)
    first = _ratio(revenue_new, new_customers)
    cac = _ratio(total_cost, new_customers)
    ltv = margin * (first + float(attrs["repeat_value_per_customer"]))
    monthly = margin * (first + float(attrs["repeat_first_year_per_customer"])) / 12.0
    won_c = v["won"]
    return {
        "marketing_cost": marketing,
        "sales_cost": sales,
        "cac": cac,
        "cac_marketing": _ratio(marketing, new_customers),
        "ltv": ltv,
        "ltv_to_cac": _ratio(ltv, cac),
        "payback_months": _ratio(cac, monthly),
        "roi": _ratio(margin * revenue - total_cost, total_cost),
        "channel_marketing_cost": marketing_c,
        "channel_cac": _ratio(marketing_c, won_c) + _ratio(sales, new_customers)[..., None],
        "channel_cac_marketing": _ratio(marketing_c, won_c),
    }


def _repeat_revenue(v: dict[str, np.ndarray]) -> np.ndarray:
    if "repeat_revenue" not in v:
        return 0.0
    return v["repeat_revenue"].sum(axis=-1) + v["existing_revenue"]
