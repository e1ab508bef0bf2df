"""Capacity planning: the same scenario with teams of different sizes, on the same leads.

Every team size runs on the same random numbers (each lead keeps its draws, see
:mod:`funnelsim.streams`), so the differences between sizes are the team's doing, not
chance. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from funnelsim.errors import InputError
from funnelsim.forecast import stats
from funnelsim.montecarlo import run
from funnelsim.scenario import Scenario, scenario_with


@dataclass(frozen=True)
class StaffRow:
    reps: int
    revenue: dict[str, float | None]
    won: dict[str, float | None]
    went_cold: dict[str, float | None]
    went_cold_share: dict[str, float | None]  # of the leads that reached the team
    wait_days: dict[str, float | None]  # mean wait for a slot, over the rep-worked stages
    rep_utilization: dict[str, float | None]
    rep_cost: float | None  # currency, over the horizon
    revenue_minus_rep_cost: float | None  # mean


def parse_sizes(text: str) -> list[int]:
    """``2..12``, ``2..12..2`` (a step), ``3,5,8`` or ``6`` → team sizes."""
    sizes: list[int] = []
    try:
        for part in text.split(","):
            bounds = [int(x) for x in part.strip().split("..")]
            if len(bounds) == 1:
                sizes.append(bounds[0])
            elif len(bounds) in (2, 3):
                step = bounds[2] if len(bounds) == 3 else 1
                if step < 1 or bounds[1] < bounds[0]:
                    raise ValueError
                sizes.extend(range(bounds[0], bounds[1] + 1, step))
            else:
                raise ValueError
    except ValueError:
        raise InputError(
            "--reps", f"{text!r}: expected sizes like 2..12, 2..12..2 or 3,5,8"
        ) from None
    if not sizes or min(sizes) < 0:
        raise InputError("--reps", f"{text!r}: team sizes must be whole numbers >= 0")
    return sorted(set(sizes))


def staff(
    scenario: Scenario,
    sizes: Sequence[int],
    *,
    max_wait: float | None = None,
    max_cold: float | None = None,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the scenario with a constant team of each size (hiring plans are left out).

    Returns the rows per size, the size with the most revenue minus rep cost (when
    ``costs.rep_per_month`` is set), the smallest size whose mean wait for a slot stays
    under ``max_wait`` days (when given), and the smallest size that meets every limit
    given: ``max_wait`` and ``max_cold``, the most leads gone cold as a share (0-1) of the
    leads that reached the team (new leads on reaching their first rep-worked stage, and
    open leads in a rep-worked stage). With patience a lead's wait stops when it goes
    cold, so the mean wait alone can look short while many leads go cold.
    """
    team = scenario.sales_team
    if team is None:
        raise InputError(
            str(scenario.source or "scenario"),
            "has no sales_team section; staff compares team sizes of a scenario with one",
        )
    rep_per_month = scenario.costs.rep_per_month if scenario.costs else None
    rows = []
    for n, reps in enumerate(sizes):
        sized = scenario_with(scenario, [f"sales_team.reps={reps}", "sales_team.hiring=[]"])
        forecast = run(sized, replications=replications, seed=seed, workers=workers)
        totals = forecast.totals()
        data = forecast.data
        with np.errstate(invalid="ignore", divide="ignore"):
            reached = data["reached"].sum(("period", "stage")).values
            cold_share = np.where(
                reached > 0, data["cold"].sum(("period", "stage")).values / reached, np.nan
            )
        worked = forecast.team_stages
        wait = totals["stage_wait_days"]  # mean per entry, per stage
        entered = totals["stage_entered"].sel(stage=worked).values
        waited = (wait.sel(stage=worked).fillna(0).values * entered).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_wait = np.where(entered.sum(axis=1) > 0, waited / entered.sum(axis=1), np.nan)
        rep_months = float(forecast.data.attrs.get("rep_months", 0.0))
        cost = None if rep_per_month is None else rep_per_month * rep_months
        revenue = stats(totals["revenue"].values)
        rows.append(
            StaffRow(
                reps=reps,
                revenue=revenue,
                won=stats(totals["won"].values),
                went_cold=stats(totals["went_cold"].values),
                went_cold_share=stats(cold_share),
                wait_days=stats(mean_wait),
                rep_utilization=stats(totals["rep_utilization"].values),
                rep_cost=cost,
                revenue_minus_rep_cost=None if cost is None else revenue["mean"] - cost,
            )
        )
        if progress:
            progress(n + 1, len(sizes))
    best = None
    if rep_per_month is not None:
        best = max(rows, key=lambda r: r.revenue_minus_rep_cost).reps
    limits = [("wait_days", max_wait), ("went_cold_share", max_cold)]
    given = [(name, limit) for name, limit in limits if limit is not None]
    return {
        "scenario": scenario.title,
        "scenario_sha256": scenario.sha256,
        "currency": scenario.currency,
        "replications": replications or scenario.replications,
        "seed": scenario.seed if seed is None else seed,
        "rep_per_month": rep_per_month,
        "max_wait_days": max_wait,
        "max_cold_share": max_cold,
        "best_reps": best,
        "smallest_reps_within_max_wait": _smallest(rows, limits[:1])
        if max_wait is not None
        else None,
        "smallest_reps_within_limits": _smallest(rows, given) if given else None,
        "rows": [vars(r) for r in rows],
    }


def _smallest(rows: list[StaffRow], limits: list[tuple[str, float]]) -> int | None:
    """The smallest team size whose mean of each named statistic is at most its limit."""
    meeting = [
        r.reps
        for r in rows
        if all(
            getattr(r, name)["mean"] is not None and getattr(r, name)["mean"] <= limit
            for name, limit in limits
        )
    ]
    return min(meeting) if meeting else None


def write_staff(result: dict[str, Any], out_dir) -> list:
    """Write staff.json and staff.csv (one row per team size) into ``out_dir``, atomically."""
    import json
    from pathlib import Path

    from funnelsim.forecast import csv_text, write_atomically

    rows = []
    for r in result["rows"]:
        flat = {"reps": r["reps"]}
        for name in (
            "revenue",
            "won",
            "went_cold",
            "went_cold_share",
            "wait_days",
            "rep_utilization",
        ):
            for stat, value in r[name].items():
                flat[f"{name}_{stat}"] = value
        flat["rep_cost"] = r["rep_cost"]
        flat["revenue_minus_rep_cost"] = r["revenue_minus_rep_cost"]
        rows.append(flat)
    files = {
        "staff.json": json.dumps(result, indent=2, allow_nan=False) + "\n",
        "staff.csv": csv_text(rows),
    }
    return write_atomically(Path(out_dir), files)
