"""Paired experiments: compare scenarios, improve levers one at a time, targets and goals.

Planners simulate to decide what to change. Two forecasts with overlapping bands cannot say
whether a change helps; the distribution of the *paired difference* can. Everything here
runs the scenarios it compares with the same seed and replication count, and replication i
of the base is paired with replication i of each variant.

Common random numbers (the scheme of :mod:`funnelsim.streams`)
-------------------------------------------------------------
Every random number belongs to a replication, a purpose (arrivals, outcome, duration, deal
value, uncertain input, pipeline, patience, repeat purchases) and a part of the scenario (a
channel, a stage, a lead). A variant that changes one part leaves every other part's draws
unchanged, so the paired difference carries only the change's own effect and the noise of
what the change touches. Per kind of change (the levers of :func:`levers`):

* **a channel's volume** (``leads_per_month`` as a number, a distribution, a monthly plan, or
  a budget ÷ cost per lead): in each month, lead j of a channel arrives at ``Γ_j / rate``
  after the month's start, with ``Γ_j`` the cumulative sum of Exp(1) gaps drawn from lead
  j's own key. A higher rate keeps every existing lead — same index, same outcome, duration
  and value draws, arriving a little earlier (``Γ_j / rate`` shrinks) — and adds new leads
  with new indices. An uncertain volume is scaled after its draw (same key). Other channels
  are untouched.
* **a stage's advance probability**: a lead's outcome is the slot its outcome uniform falls
  in, among the outcomes' cumulative probabilities. Raising the advance outcomes and scaling
  the others down in proportion widens the advance interval around the old one, so every
  lead that advanced still advances and only leads that did not advance can switch to it.
  Weaker: with two or more non-advancing outcomes after the advance one in the stage's
  order, a few leads also switch between those (e.g. lost → nurture); with uncertain
  (Dirichlet) probabilities the per-replication probabilities are redrawn from the same
  keys with the new concentrations (strongly correlated, not exact multiples).
* **a stage's duration, the deal value, patience, spend (a distribution, Gamma-Gamma's γ, a
  subscription price)**: every family is scaled by multiplying its scale parameter
  (fixed ``value``, exponential and gamma ``mean``, lognormal ``median``, Weibull ``scale``,
  uniform ``low`` and ``high``, empirical ``values``), which multiplies each draw from the
  same key exactly: every stay is exactly that much shorter, every deal exactly that much
  larger. Weaker: an opening-pipeline lead already aged in a stage whose duration changes
  draws its outcome from p_k·S_k(age), which changes with the durations.
* **purchase rate** (BG/NBD, Pareto/NBD: α ÷ factor): a new customer's rate and first repeat
  purchase scale exactly (same uniforms); its later purchases are a Poisson count drawn by
  inverting the same uniform, so never fewer, at the same fractions of the rest of the
  horizon. **Churn** (Pareto/NBD: β ÷ factor, exact; a fixed subscription churn: exact, a
  customer renews while its uniform allows; BG/NBD's dropout: mean × factor with a + b kept,
  the dropout count J inverted from the same uniform; a subscription's Beta churn: the beta
  draws redrawn from the same keys with new shapes: correlated, not exact).
* **existing customers** draw from one NumPy generator per replication (see
  :mod:`funnelsim.customers`): untouched by funnel changes (identical), but under a repeat
  lever the number of draws changes and their pairing is weaker.
* **the sales team** (one more rep, patience): every lead keeps its draws, but which rep
  serves a lead and when depends on the queue, so pairing is weaker than for a funnel
  without reps. With posterior draws (fitted scenarios) each replication keeps its joint
  draw, and levers scale the draws of the parameters they act on.

Nothing here prints; the writers write only where they are told to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from funnelsim.errors import InputError, Problem, did_you_mean
from funnelsim.forecast import csv_text, stats, write_atomically
from funnelsim.scenario import (
    AT_MOST_METRICS,
    LOST,
    SILENT_LOSS,
    WON,
    Scenario,
    Target,
    lever_names,
    scenario_from_dict,
    scenario_with,
    total_metrics,
    with_posterior_draws,
)

DIFF_METRICS = (
    "revenue",
    "won",
    "revenue_new",
    "revenue_repeat",
    "marketing_cost",
    "sales_cost",
    "roi",
)
"""Total metrics whose paired differences compare and levers report (where present)."""

ELEMENTS = {
    "volume": "lead generation",
    "advance": "conversion",
    "duration": "conversion",
    "deal_value": "conversion",
    "reps": "sales team",
    "patience": "sales team",
    "purchase_rate": "repeat sales",
    "churn": "repeat sales",
    "spend": "repeat sales",
}
LOWER_IS_BETTER = ("duration", "churn")
"""Levers improved by making their quantity smaller (× (1 − step))."""

SCALE_FIELDS = ("value", "mean", "median", "scale", "low", "high", "values")
"""The parameters that scale a distribution (the others, shape and sigma, keep its form)."""

DIRICHLET_MARGIN = 1e-6
"""Uncertain (Dirichlet) probabilities of advancing are capped at 1 − this (concentrations
must stay positive)."""

FACTOR_BOUNDS = (0.25, 4.0)
"""Default search range of ``goal`` over a lever's multiplier."""

Progress = Callable[[int, int], None] | None


# ------------------------------------------------------------------ paired runs


def _totals(scenario: Scenario, replications: int, seed: int, workers: int | None):
    from funnelsim.montecarlo import EngineError, run

    try:
        forecast = run(scenario, replications=replications, seed=seed, workers=workers)
    except EngineError as exc:
        raise InputError(str(scenario.source or scenario.title), str(exc)) from None
    return forecast.totals()


def _values(totals, metric: str) -> np.ndarray | None:
    return totals[metric].values.astype(float) if metric in totals else None


def difference(base: np.ndarray, variant: np.ndarray) -> dict[str, Any]:
    """The distribution of the paired difference variant − base over replications.

    Pairs where either value is undefined (NaN, e.g. an ROI without costs) are left out.
    ``se`` is the Monte Carlo standard error of the mean difference.
    """
    base, variant = np.asarray(base, dtype=float), np.asarray(variant, dtype=float)
    keep = ~(np.isnan(base) | np.isnan(variant))
    d = variant[keep] - base[keep]
    s = stats(d)
    n = int(d.size)
    return {
        "base_mean": _mean(base[keep]),
        "variant_mean": _mean(variant[keep]),
        "mean": s["mean"],
        "se": None if n < 2 else float(np.std(d, ddof=1) / math.sqrt(n)),
        "sd": s["sd"],
        "p5": s["p5"],
        "p50": s["p50"],
        "p95": s["p95"],
        "p_greater": None if n == 0 else float(np.mean(d > 0)),
        "p_less": None if n == 0 else float(np.mean(d < 0)),
        "pairs": n,
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _unit(metric: str, currency: str) -> str:
    from funnelsim.forecast import UNITS

    unit = UNITS.get(metric, "")
    return currency if unit == "currency" else unit


def _differences(base_totals, variant_totals, currency: str) -> dict[str, Any]:
    out = {}
    for metric in DIFF_METRICS:
        b, v = _values(base_totals, metric), _values(variant_totals, metric)
        if b is None or v is None:
            continue
        out[metric] = {"unit": _unit(metric, currency), **difference(b, v)}
    return out


# ------------------------------------------------------------------ compare


@dataclass(frozen=True)
class Variant:
    """A scenario to compare with the base: from a file, or the base with changes."""

    name: str
    scenario: Scenario
    source: str  # the file, or "--variant"
    changes: tuple[str, ...] = ()


def parse_variant_options(items: Sequence[str]) -> dict[str, list[str]]:
    """``NAME:PATH=VALUE`` items → the changes of each named variant, in the order given."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, colon, change = item.partition(":")
        if not colon or not name.strip() or "=" not in change or not change.split("=")[0]:
            raise InputError(
                "--variant",
                f"{item!r}: expected NAME:PATH=VALUE, e.g. more_search:"
                "channels.paid_search.leads_per_month=160",
            )
        out.setdefault(name.strip(), []).append(change.strip())
    return out


def variant_of(base: Scenario, name: str, changes: Sequence[str]) -> Variant:
    """The base with ``--set``-style changes (paths through names must exist)."""
    try:
        scenario = scenario_with(base, list(changes))
    except InputError as exc:
        source = f"--variant {name}" if exc.source == "--set" else exc.source
        problems = [
            Problem(p.where, p.message.replace("[from --set ", f"[from --variant {name}:"))
            for p in exc.problems
        ]
        raise InputError(source, problems) from None
    return Variant(name, scenario, "--variant", tuple(changes))


def check_comparable(base: Scenario, variant: Variant) -> None:
    """A paired comparison needs the same horizon and currency."""
    for what in ("start", "months", "currency"):
        b, v = getattr(base, what), getattr(variant.scenario, what)
        if b != v:
            raise InputError(
                variant.source if variant.source != "--variant" else f"--variant {variant.name}",
                f"{what} is {v} but the base's is {b}; a paired comparison needs the same "
                "start, months and currency",
            )


def compare(
    base: Scenario,
    variants: Sequence[Variant],
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Run the base and each variant on common random numbers; the paired differences.

    Every scenario runs with the base's seed and replication count (or those given), so
    replication i of a variant differs from replication i of the base only by what the
    variant changes. Per variant and metric: the mean, sd, standard error, P5, P50, P95 of
    variant − base, and P(variant > base), P(variant < base).
    """
    if not variants:
        raise InputError("compare", "no variant given: name VARIANT.yaml files or --variant")
    names = [v.name for v in variants]
    for name in names:
        if names.count(name) > 1:
            raise InputError("compare", f"two variants are named {name!r}; names must differ")
    for v in variants:
        check_comparable(base, v)
    reps = base.replications if replications is None else int(replications)
    seed = base.seed if seed is None else int(seed)
    total = 1 + len(variants)
    base_totals = _totals(base, reps, seed, workers)
    if progress:
        progress(1, total)
    rows = []
    for i, v in enumerate(variants):
        totals = _totals(v.scenario, reps, seed, workers)
        rows.append(
            {
                "name": v.name,
                "source": v.source,
                "changes": list(v.changes),
                "scenario_sha256": v.scenario.sha256,
                "metrics": _differences(base_totals, totals, base.currency),
            }
        )
        if progress:
            progress(i + 2, total)
    return {
        "base": {
            "name": base.title,
            "file": str(base.source) if base.source else None,
            "scenario_sha256": base.sha256,
        },
        "replications": reps,
        "seed": seed,
        "currency": base.currency,
        "start": base.start.isoformat(),
        "end": base.end.isoformat(),
        "pairing": "common random numbers: replication i of every scenario uses stream i of "
        f"SeedSequence({seed}); differences are variant minus base, replication by replication",
        "variants": rows,
    }


_DIFF_COLUMNS = ["mean", "se", "sd", "p5", "p50", "p95", "p_greater", "p_less", "pairs"]


def write_compare(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """compare.json and compare.csv (one row per variant and metric), written atomically."""
    rows = []
    for v in result["variants"]:
        for metric, d in v["metrics"].items():
            rows.append(
                {
                    "variant": v["name"],
                    "metric": metric,
                    "unit": d["unit"],
                    "base_mean": d["base_mean"],
                    "variant_mean": d["variant_mean"],
                    **{f"difference_{k}": d[k] for k in _DIFF_COLUMNS},
                }
            )
    files = {
        "compare.json": _json(result),
        "compare.csv": _csv(rows),
    }
    return write_atomically(Path(out_dir), files)


# ------------------------------------------------------------------ levers: changing one thing


@dataclass(frozen=True)
class Change:
    """A lever applied to a scenario: the changed scenario and what changed, or why not."""

    lever: str
    kind: str
    description: str
    scenario: Scenario | None = None
    reason: str | None = None  # why the lever does not apply

    @property
    def element(self) -> str:
        return ELEMENTS[self.kind]


def lever_kind(name: str) -> str:
    if name.startswith("channels."):
        return "volume"
    if name.startswith("stages."):
        return name.rsplit(".", 1)[1]
    return {
        "deal_value": "deal_value",
        "sales_team.reps": "reps",
        "sales_team.patience": "patience",
        "repeat.purchase_rate": "purchase_rate",
        "repeat.churn": "churn",
        "repeat.spend": "spend",
    }[name]


def improvement_factor(kind: str, step: float) -> float:
    """The multiplier that improves a lever by ``step`` (a share, e.g. 0.1)."""
    return 1.0 - step if kind in LOWER_IS_BETTER else 1.0 + step


def check_step(step: float, option: str = "--step") -> float:
    if not (isinstance(step, int | float) and math.isfinite(step) and 0 < step < 1):
        raise InputError(
            option,
            f"{_pct(step) if isinstance(step, int | float) else step!r}: expected a share "
            "above 0% and below 100%, e.g. 10% or 0.1",
        )
    return float(step)


def parse_step(text: str) -> float:
    """``10%`` or ``0.1`` → 0.1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InputError("--step", f"{text!r}: expected a share like 10% or 0.1") from None
    return check_step(value)


def change_lever(scenario: Scenario, name: str, factor: float) -> Change:
    """``scenario`` with lever ``name`` multiplied by ``factor`` (one more rep per unit of
    ``factor − 1`` rounded, for ``sales_team.reps``). Inapplicable levers come back with a
    reason instead of a scenario."""
    kind = lever_kind(name)
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    draws = dict(scenario.posterior_draws) if scenario.posterior_draws is not None else None
    try:
        description = _APPLY[kind](scenario, data, draws, name, factor)
    except _NotApplicable as exc:
        return Change(name, kind, "", reason=str(exc))
    try:
        changed = scenario_from_dict(data, source=scenario.source)
    except InputError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        return Change(
            name, kind, description, reason=f"the changed scenario is invalid: {problems}"
        )
    if draws is not None and any(draws[k] is not scenario.posterior_draws[k] for k in draws):
        changed = with_posterior_draws(changed, draws)
    return Change(name, kind, description, scenario=changed)


def improve(scenario: Scenario, name: str, step: float) -> Change:
    """Lever ``name`` improved by ``step``: volumes, probabilities of advancing, deal values,
    patience, purchase rates and spend × (1 + step); durations and churn × (1 − step); the
    sales team one more rep."""
    kind = lever_kind(name)
    factor = 2.0 if kind == "reps" else improvement_factor(kind, step)
    return change_lever(scenario, name, factor)


class _NotApplicable(Exception):
    pass


def scale_distribution(dist: dict[str, Any], factor: float) -> dict[str, Any]:
    """A distribution (as a dict) with every draw multiplied by ``factor`` (> 0)."""
    out = dict(dist)
    for key in SCALE_FIELDS:
        if key in out:
            out[key] = [x * factor for x in out[key]] if key == "values" else out[key] * factor
    return out


def _mean_of(dist: dict[str, Any]) -> float:
    from funnelsim.distributions import as_distribution

    return as_distribution(dist).expected_value()


def _scale_draws(draws, prefix: str, factor: float, fields=SCALE_FIELDS) -> int:
    """Multiply the posterior draws named ``prefix<field>`` for scale fields; how many."""
    if draws is None:
        return 0
    count = 0
    for key in list(draws):
        if key.startswith(prefix) and key[len(prefix) :].split("__")[-1] in fields:
            draws[key] = draws[key] * factor
            count += 1
    return count


def _volume(scenario, data, draws, name, factor) -> str:
    channel = name.split(".")[1]
    ch = data["channels"][channel]
    volume = ch.get("leads_per_month")
    posterior = _scale_draws(draws, f"arrivals__{channel}__", factor, ("leads_per_month",))
    note = " (and its posterior draws)" if posterior else ""
    mouth = ch.get("leads_per_active_customer_per_month")  # word of mouth, where supported
    if mouth is not None:
        ch["leads_per_active_customer_per_month"] = mouth * factor
        return f"leads per active customer a month {mouth:.4g} → {mouth * factor:.4g}{note}"
    if volume is None:
        cost = data.get("costs", {}).get("channels", {}).get(channel)
        if not cost or "budget_per_month" not in cost:
            raise _NotApplicable("the channel has no volume this lever knows how to change")
        before = cost["budget_per_month"]
        cost["budget_per_month"] = before * factor
        return (
            f"budget_per_month {before:,.0f} → {before * factor:,.0f} {scenario.currency} "
            f"(leads = budget ÷ cost_per_lead {cost['cost_per_lead']:g}){note}"
        )
    if isinstance(volume, int | float):
        ch["leads_per_month"] = volume * factor
        return f"leads_per_month {volume:,.4g} → {volume * factor:,.4g}{note}"
    if "dist" in volume:
        ch["leads_per_month"] = scale_distribution(volume, factor)
        before = _mean_of(volume)
        return (
            f"leads_per_month ({volume['dist']}) mean {before:,.4g} → {before * factor:,.4g}{note}"
        )
    ch["leads_per_month"] = {month: v * factor for month, v in volume.items()}
    before = sum(volume.values())
    return f"monthly plan × {factor:.4g}: {before:,.0f} → {before * factor:,.0f} leads{note}"


def _win_chances(scenario: Scenario) -> dict[str, dict[str, float]]:
    """Per channel: P(eventually won) of a lead in each stage, won (1) and lost (0), from the
    funnel's mean probabilities as an absorbing Markov chain."""
    from funnelsim.analytic import transition_matrices
    from funnelsim.funnel import compile_funnel

    funnel = compile_funnel(scenario)
    n = len(funnel.stages)
    out = {}
    for c, channel in enumerate(funnel.channels):
        P, _, N = transition_matrices(funnel, c)
        p_won = N @ P[:, n]
        chances = {s: float(p_won[i]) for i, s in enumerate(funnel.stages)}
        chances.update({WON: 1.0, LOST: 0.0, SILENT_LOSS: 0.0})
        out[channel] = chances
    return out


def advancing(probs: Mapping[str, float], chances: Mapping[str, float]) -> list[str]:
    """The outcomes of a stage that advance a lead: those after which it is more likely to be
    won than on entering the stage (the next stage, won; not lost, not a nurture loop)."""
    here = sum(p * chances[k] for k, p in probs.items())
    return [k for k, p in probs.items() if chances[k] > here + 1e-12]


def _raise_advance(probs: dict[str, float], advance: list[str], factor: float, cap: float = 1.0):
    """Outcome probabilities with the advancing ones × factor (their total capped at ``cap``)
    and the others scaled to fill the rest; None when nothing can change."""
    p_adv = sum(probs[k] for k in advance)
    if not advance or p_adv <= 0 or (p_adv >= cap and factor >= 1):
        return None
    new = min(cap, p_adv * factor)
    up = new / p_adv
    down = (1.0 - new) / (1.0 - p_adv) if p_adv < 1 else 0.0
    return {k: v * (up if k in advance else down) for k, v in probs.items()}, p_adv, new


def _advance(scenario, data, draws, name, factor) -> str:
    stage = name.split(".")[1]
    chances = _win_chances(scenario)
    spec = data["stages"][stage]
    overrides = spec.get("channels", {})
    uses_base = [c for c in scenario.channels if "next" not in overrides.get(c, {})]
    changed: list[tuple[str, str, float, float]] = []

    def apply(holder: dict, channel: str, label: str) -> None:
        nxt = holder["next"]
        probs = nxt["dirichlet"] if "dirichlet" in nxt else nxt
        total = sum(probs.values())
        means = {k: v / total for k, v in probs.items()}
        advance = advancing(means, chances[channel])
        # Dirichlet concentrations must stay positive: just below 100% at most
        cap = 1.0 - DIRICHLET_MARGIN if "dirichlet" in nxt else 1.0
        result = _raise_advance(means, advance, factor, cap)
        if result is None:
            return
        new, before, after = result
        scaled = {k: new[k] * total for k in probs}
        holder["next"] = {"dirichlet": scaled} if "dirichlet" in nxt else scaled
        changed.append((label, "/".join(advance), before, after))

    apply(spec, (uses_base or list(scenario.channels))[0], "")
    for channel, override in overrides.items():
        if "next" in override:
            apply(override, channel, channel)
    posterior = 0
    if draws is not None:
        for channel in scenario.channels:
            keys = {k: f"p__{stage}__{channel}__{k}" for k in _outcomes(scenario, stage, channel)}
            if not all(v in draws for v in keys.values()):
                continue
            matrix = np.stack([draws[v] for v in keys.values()], axis=1)
            means = dict(zip(keys, matrix.mean(axis=0), strict=True))
            advance = advancing(means, chances[channel])
            if not advance:
                continue
            cols = np.array([k in advance for k in keys])
            p_adv = matrix[:, cols].sum(axis=1)
            new = np.minimum(1.0, p_adv * factor)
            with np.errstate(invalid="ignore", divide="ignore"):
                up = np.where(p_adv > 0, new / np.where(p_adv > 0, p_adv, 1), 1.0)
                down = np.where(p_adv < 1, (1 - new) / np.where(p_adv < 1, 1 - p_adv, 1), 0.0)
            matrix = matrix * np.where(cols[None, :], up[:, None], down[:, None])
            for j, v in enumerate(keys.values()):
                draws[v] = matrix[:, j]
            posterior += 1
    if not changed and not posterior:
        raise _NotApplicable(
            "no outcome advances a lead, or the advancing outcomes already have probability 1"
        )
    parts = []
    for _label, outcomes, before, after in changed[:1]:
        parts.append(f"P({outcomes}) {_pct(before)} → {_pct(after)}")
    if len(changed) > 1:
        parts.append(f"and in {len(changed) - 1} channel override(s)")
    if posterior:
        parts.append(f"posterior draws of {posterior} channel(s)")
    text = ", ".join(parts)
    if any(after >= 1.0 - DIRICHLET_MARGIN for *_, after in changed):
        text += " (capped at 100%)"
    return text + "; other outcomes scaled down in proportion"


def _outcomes(scenario: Scenario, stage: str, channel: str) -> list[str]:
    from funnelsim.scenario import outcome_probabilities, stage_next

    return list(outcome_probabilities(stage_next(scenario, stage, channel)))


def _scale_duration(value: dict[str, Any], factor: float) -> dict[str, Any]:
    if "dist" in value:
        return scale_distribution(value, factor)
    return {k: scale_distribution(d, factor) for k, d in value.items()}


def _duration(scenario, data, draws, name, factor) -> str:
    stage = name.split(".")[1]
    spec = data["stages"][stage]
    before = scenario.stages[stage].duration
    spec["duration"] = _scale_duration(spec["duration"], factor)
    overrides = 0
    for override in spec.get("channels", {}).values():
        if "duration" in override:
            override["duration"] = _scale_duration(override["duration"], factor)
            overrides += 1
    posterior = _scale_draws(draws, f"duration__{stage}__", factor)
    if isinstance(before, dict):
        means = ", ".join(
            f"{k} {d.expected_value():,.3g} → {d.expected_value() * factor:,.3g}"
            for k, d in before.items()
        )
    else:
        mean = before.expected_value()
        means = f"{mean:,.3g} → {mean * factor:,.3g}"
    text = f"every stay × {factor:.4g}: mean days {means}"
    if overrides:
        text += f"; {overrides} channel override(s) alike"
    return text + (" (and the posterior draws)" if posterior else "")


def _deal_value(scenario, data, draws, name, factor) -> str:
    means = []
    if "deal_value" in data:
        means.append(_mean_of(data["deal_value"]))
        data["deal_value"] = scale_distribution(data["deal_value"], factor)
    for channel, ch in data["channels"].items():
        if "deal_value" in ch:
            ch["deal_value"] = scale_distribution(ch["deal_value"], factor)
        _scale_draws(draws, f"value__{channel}__", factor)
    first = scenario.deal_value_of(next(iter(scenario.channels)))
    mean = first.expected_value() if first is not None else (means[0] if means else 0.0)
    return (
        f"every deal value × {factor:.4g}: mean {mean:,.0f} → {mean * factor:,.0f} "
        f"{scenario.currency} (first channel; open deals with a known value keep it)"
    )


def _reps(scenario, data, draws, name, factor) -> str:
    extra = int(round(factor - 1.0))
    team = data["sales_team"]
    before = team["reps"]
    team["reps"] = before + extra
    for hire in team.get("hiring", []):
        hire["reps"] += extra
    skill = team.get("skill", [])
    if len(skill) > before:
        team["skill"] = skill[:before] + [1.0] * extra + skill[before:]
    what = "rep" if abs(extra) == 1 else "reps"
    return (
        f"{extra:+d} {what} all year: {before} → {before + extra} at the start (skill 1.0; "
        "hiring plan moved up alike)"
    )


def _patience(scenario, data, draws, name, factor) -> str:
    team = data["sales_team"]
    before = _mean_of(team["patience"])
    team["patience"] = scale_distribution(team["patience"], factor)
    return f"patience × {factor:.4g}: mean days {before:,.3g} → {before * factor:,.3g}"


def _purchase_rate(scenario, data, draws, name, factor) -> str:
    repeat = data["repeat"]
    before = repeat["r"] / repeat["alpha"]
    repeat["alpha"] = repeat["alpha"] / factor
    if draws is not None and "alpha" in draws:
        draws["alpha"] = draws["alpha"] / factor
    return (
        f"purchase rate × {factor:.4g}: mean {before:.3g} → {before * factor:.3g} a "
        f"{repeat['unit']} (alpha ÷ factor)"
    )


def _beta_mean(a: float, b: float, factor: float) -> tuple[float, float]:
    total = a + b
    mean = min(1.0, a / total * factor)
    return mean * total, (1.0 - mean) * total


def _churn(scenario, data, draws, name, factor) -> str:
    repeat = data["repeat"]
    model = repeat["model"]
    if model == "bg_nbd":
        before = repeat["a"] / (repeat["a"] + repeat["b"])
        repeat["a"], repeat["b"] = _beta_mean(repeat["a"], repeat["b"], factor)
        if draws is not None and "a" in draws and "b" in draws:
            draws["a"], draws["b"] = _beta_mean(draws["a"], draws["b"], factor)
        return (
            f"dropout after a purchase × {factor:.4g}: mean {_pct(before)} → "
            f"{_pct(before * factor)} (Beta(a, b) with a + b kept)"
        )
    if model == "pareto_nbd":
        before = repeat["s"] / repeat["beta"]
        repeat["beta"] = repeat["beta"] / factor
        if draws is not None and "beta" in draws:
            draws["beta"] = draws["beta"] / factor
        return (
            f"dropout rate × {factor:.4g}: mean {before:.3g} → {before * factor:.3g} a "
            f"{repeat['unit']} (beta ÷ factor)"
        )
    churn = repeat["churn"]
    if isinstance(churn, dict):
        a, b = churn["beta"]
        before = a / (a + b)
        repeat["churn"] = {"beta": list(_beta_mean(a, b, factor))}
    else:
        before = churn
        repeat["churn"] = min(1.0, churn * factor)
    return (
        f"churn per {repeat['billing']} × {factor:.4g}: mean {_pct(before)} → "
        f"{_pct(min(1.0, before * factor))}"
    )


def _spend(scenario, data, draws, name, factor) -> str:
    repeat = data["repeat"]
    cur = scenario.currency
    if repeat["model"] == "subscription":
        before = repeat["price"]
        repeat["price"] = before * factor
        after = before * factor
        return f"price × {factor:.4g}: {before:,.2f} → {after:,.2f} {cur} a {repeat['billing']}"
    spend = repeat["spend"]
    if spend.get("model") == "gamma_gamma":
        before = spend["p"] * spend["gamma"] / (spend["q"] - 1)
        spend["gamma"] = spend["gamma"] * factor
        if draws is not None and "gamma" in draws:
            draws["gamma"] = draws["gamma"] * factor
        how = "Gamma-Gamma's gamma × factor"
    else:
        before = _mean_of(spend)
        repeat["spend"] = scale_distribution(spend, factor)
        how = "every purchase × factor"
    return (
        f"spend per repeat purchase × {factor:.4g}: mean {before:,.2f} → "
        f"{before * factor:,.2f} {cur} ({how})"
    )


_APPLY = {
    "volume": _volume,
    "advance": _advance,
    "duration": _duration,
    "deal_value": _deal_value,
    "reps": _reps,
    "patience": _patience,
    "purchase_rate": _purchase_rate,
    "churn": _churn,
    "spend": _spend,
}


# ------------------------------------------------------------------ levers: the ranking


def lever_cost(scenario: Scenario, name: str) -> float | None:
    """The cost of improving lever ``name`` by ``levers.step``, over the horizon (currency),
    as the scenario's ``levers.costs`` gives it; None when not given."""
    if scenario.levers is None or name not in scenario.levers.costs:
        return None
    cost = scenario.levers.costs[name]
    if isinstance(cost, int | float):
        return float(cost)
    return cost.once + cost.per_month * scenario.months


def levers(
    scenario: Scenario,
    *,
    step: float | None = None,
    rank_by: str = "revenue",
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Improve each lever of the scenario by ``step`` alone and rank them by revenue uplift.

    ``step`` defaults to ``levers.step`` of the scenario, else 10%. Each lever's uplift is
    the paired difference (improved − base) over the same replications: mean, standard
    error, P5, P50, P95 and P(uplift > 0). A lever's cost is ``levers.costs`` (for the step
    it was given for) plus the mean change of the scenario's own costs (marketing and
    reps); ``rank_by="return"`` ranks by mean revenue uplift ÷ that cost.
    """
    if rank_by not in ("revenue", "return"):
        raise InputError("--rank", f"{rank_by!r}: expected revenue or return")
    settings = scenario.levers
    step = check_step(settings.step if step is None and settings else 0.1 if step is None else step)
    reps = scenario.replications if replications is None else int(replications)
    seed = scenario.seed if seed is None else int(seed)
    costs_apply = settings is not None and math.isclose(settings.step, step)
    changes = [improve(scenario, name, step) for name in lever_names(scenario)]
    applicable = [c for c in changes if c.scenario is not None]
    total = 1 + len(applicable)
    base = _totals(scenario, reps, seed, workers)
    if progress:
        progress(1, total)
    rows = []
    for i, change in enumerate(applicable):
        totals = _totals(change.scenario, reps, seed, workers)
        diffs = _differences(base, totals, scenario.currency)
        own = None
        if "marketing_cost" in diffs:
            own = diffs["marketing_cost"]["mean"] + diffs["sales_cost"]["mean"]
        given = lever_cost(scenario, change.lever) if costs_apply else None
        cost = None if given is None and not own else (given or 0.0) + (own or 0.0)
        uplift = diffs["revenue"]["mean"]
        rows.append(
            {
                "lever": change.lever,
                "element": change.element,
                "change": change.description,
                "revenue": diffs["revenue"],
                "metrics": diffs,
                "cost_given": given,
                "cost_in_scenario": own,
                "cost": cost,
                "revenue_per_cost": uplift / cost if cost and cost > 0 else None,
            }
        )
        if progress:
            progress(i + 2, total)
    order = sorted(rows, key=lambda r: -r["revenue"]["mean"])
    if rank_by == "return":
        order = sorted(
            order,
            key=lambda r: (r["revenue_per_cost"] is None, -(r["revenue_per_cost"] or 0.0)),
        )
    for rank, row in enumerate(order, 1):
        row["rank"] = rank
    notes = []
    if settings is not None and settings.costs and not costs_apply:
        notes.append(
            f"levers.costs are for a step of {_pct(settings.step)}, not {_pct(step)}: "
            "they are left out (run with that --step to rank by return on them)"
        )
    return {
        "scenario": scenario.title,
        "scenario_sha256": scenario.sha256,
        "currency": scenario.currency,
        "start": scenario.start.isoformat(),
        "end": scenario.end.isoformat(),
        "replications": reps,
        "seed": seed,
        "step": step,
        "rank_by": rank_by,
        "base": {m: stats(base[m].values) for m in DIFF_METRICS if m in base},
        "levers": [{"rank": r.pop("rank"), **r} for r in order],
        "not_applicable": [{"lever": c.lever, "reason": c.reason} for c in changes if c.reason],
        "notes": notes,
    }


def write_levers(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """levers.json and levers.csv (one row per lever, in rank order), written atomically."""
    rows = []
    for r in result["levers"]:
        row = {"rank": r["rank"], "lever": r["lever"], "element": r["element"]}
        row["change"] = r["change"]
        for k in ("mean", "se", "p5", "p50", "p95", "p_greater"):
            row[f"revenue_uplift_{k}"] = r["revenue"][k]
        won = r["metrics"].get("won", {})
        row["won_uplift_mean"] = won.get("mean")
        for k in ("cost_given", "cost_in_scenario", "cost", "revenue_per_cost"):
            row[k] = r[k]
        rows.append(row)
    files = {"levers.json": _json(result), "levers.csv": _csv(rows)}
    return write_atomically(Path(out_dir), files)


# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class TargetSpec:
    """A target on a total metric: reached when metric ≥ value (or ≤ value if at_most)."""

    metric: str
    value: float
    at_most: bool

    @property
    def sign(self) -> str:
        return "<=" if self.at_most else ">="

    def reached(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"):
            hit = values <= self.value if self.at_most else values >= self.value
        return hit & ~np.isnan(values)


def target_specs(scenario: Scenario) -> list[TargetSpec]:
    """The scenario's ``targets``, with a bare number read as at least (at most for costs,
    CAC, payback, days to win, lost and leads gone cold)."""
    out = []
    for metric, spec in (scenario.targets or {}).items():
        if isinstance(spec, Target):
            at_most = spec.at_most is not None
            value = spec.at_most if at_most else spec.at_least
        else:
            at_most, value = metric in AT_MOST_METRICS, float(spec)
        out.append(TargetSpec(metric, float(value), at_most))
    return out


def target_report(totals, specs: Sequence[TargetSpec], currency: str) -> dict[str, Any]:
    """P(target reached) of each target over the replications, with its standard error."""
    out = {}
    for spec in specs:
        values = totals[spec.metric].values
        hit = spec.reached(values)
        p = float(hit.mean())
        out[spec.metric] = {
            "at_most" if spec.at_most else "at_least": spec.value,
            "unit": _unit(spec.metric, currency),
            "probability": p,
            "se": math.sqrt(p * (1 - p) / hit.size),
            "mean": stats(values)["mean"],
        }
    return out


def parse_target(text: str, scenario: Scenario) -> TargetSpec:
    """``revenue=2e6`` (at least; at most for cost-like metrics), ``revenue>=2e6`` or
    ``cac<=400``; the metric must be a total metric of the scenario."""
    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*(>=|<=|=)\s*([^=<>]+?)\s*", text)
    if match is None:
        raise InputError(
            "--target", f"{text!r}: expected METRIC=VALUE, e.g. revenue=2e6 (or cac<=400)"
        )
    metric, op, raw = match.groups()
    valid = total_metrics(scenario)
    if metric not in valid:
        raise InputError(
            "--target",
            f"unknown metric '{metric}'{did_you_mean(metric, valid)}; expected a total metric "
            f"of this scenario: {', '.join(valid)}",
        )
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise InputError("--target", f"{text!r}: {raw!r} is not a number")
    at_most = metric in AT_MOST_METRICS if op == "=" else op == "<="
    return TargetSpec(metric, value, at_most)


# ------------------------------------------------------------------ goal seeking


@dataclass
class _Lever:
    """What goal searches over: a number at a path, or a lever's multiplier."""

    name: str
    kind: str  # "path" or "factor"
    current: float
    integer: bool = False
    lever_kind: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


def resolve_lever(scenario: Scenario, name: str) -> _Lever:
    """A number in the scenario at a dotted path (as ``--set`` names it), or a lever of
    ``funnelsim levers`` (searched as a multiplier)."""
    parts = name.split(".")
    if "next" in parts[:-1] and parts[0] == "stages" and "dirichlet" not in parts:
        stage = parts[1] if len(parts) > 1 else "<stage>"
        raise InputError(
            "--lever",
            f"'{name}': one outcome probability cannot change alone (they must sum to 1); "
            f"expected the lever stages.{stage}.advance, which scales the other outcomes",
        )
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    node: Any = data
    found = True
    for part in name.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"\d+", part) and int(part) < len(node):
            node = node[int(part)]
        else:
            found = False
            break
    if found and isinstance(node, int | float) and not isinstance(node, bool):
        return _Lever(name, "path", float(node), integer=isinstance(node, int))
    levers_ = lever_names(scenario)
    if name in levers_:
        return _Lever(name, "factor", 1.0, lever_kind=lever_kind(name))
    hint = ""
    if found and isinstance(node, dict):
        hint = " (it is a section or a distribution: name one of its numbers, e.g. .mean)"
    raise InputError(
        "--lever",
        f"'{name}' is neither a number in the scenario nor a lever{hint}"
        f"{did_you_mean(name, levers_)}; expected a path to a number, e.g. "
        f"{levers_[0]}, or a lever: {', '.join(levers_)}",
    )


def _at(scenario: Scenario, lever: _Lever, value: float) -> Scenario:
    if lever.kind == "factor":
        change = change_lever(scenario, lever.name, value)
        if change.scenario is None:
            raise InputError("--lever", str(change.reason))
        return change.scenario
    text = str(int(round(value))) if lever.integer else repr(float(value))
    return scenario_with(scenario, [f"{lever.name}={text}"])


def goal(
    scenario: Scenario,
    target: TargetSpec,
    lever_name: str,
    *,
    probability: float,
    low: float | None = None,
    high: float | None = None,
    precision: float | None = None,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """The least change of a lever that reaches ``target`` with ``probability``.

    A bisection over the lever's value on common random numbers (every value runs the same
    replications, so P(target reached) moves only because of the lever). Which way is better
    is read off the two bounds (more leads help, longer durations hurt): the result is the
    smallest value that reaches the target when larger is better, the largest when smaller is
    better, to within ``precision`` (default: 1 for whole numbers, else 1% of the current
    value, or 0.01 for a lever's multiplier). Bounds default to 0 and 4 × the current value
    (whole numbers: at least 4), or a multiplier of 0.25 to 4.
    """
    if not 0 < probability < 1:
        raise InputError("--probability", f"{probability:g}: expected a probability in (0, 1)")
    lever = resolve_lever(scenario, lever_name)
    reps = scenario.replications if replications is None else int(replications)
    seed = scenario.seed if seed is None else int(seed)
    if lever.kind == "factor":
        lo, hi = FACTOR_BOUNDS
        default_precision = 0.01
    else:
        lo = 0.0
        hi = max(4.0 * lever.current, 4.0) if lever.integer else 4.0 * lever.current
        default_precision = 1.0 if lever.integer else 0.01 * lever.current
    lo = lo if low is None else float(low)
    hi = hi if high is None else float(high)
    if lever.integer:
        lo, hi = float(math.ceil(lo)), float(math.floor(hi))
    if not hi > lo:
        raise InputError(
            "--max",
            f"the search range {lo:g} to {hi:g} of {lever_name} is empty"
            + (" (its current value is 0: give --max)" if lever.current == 0 else "")
            + "; expected --min below --max",
        )
    precision = default_precision if precision is None else float(precision)
    if lever.integer:
        precision = max(1.0, round(precision))
    if not precision > 0:
        precision = (hi - lo) / 100.0
    runs = [0]
    expected = 2 + max(0, math.ceil(math.log2(max((hi - lo) / precision, 1.0))))

    def evaluate(value: float) -> dict[str, Any]:
        try:
            changed = _at(scenario, lever, value)
        except InputError as exc:
            option = "--min" if value == lo else "--max" if value == hi else "--lever"
            detail = "; ".join(str(p) for p in exc.problems)
            shown = f"× {value:g}" if lever.kind == "factor" else f"= {value:g}"
            raise InputError(
                option,
                f"{lever_name} {shown} cannot be simulated ({detail}); expected --min and "
                "--max within the range where the scenario is valid",
            ) from None
        values = _totals(changed, reps, seed, workers)[target.metric].values
        hit = target.reached(values)
        step = {
            "value": value,
            "probability": float(hit.mean()),
            "mean": stats(values)["mean"],
        }
        lever.steps.append(step)
        runs[0] += 1
        if progress:
            progress(runs[0], max(expected, runs[0] + 1))
        return step

    at_lo, at_hi = evaluate(lo), evaluate(hi)
    sign = -1.0 if target.at_most else 1.0
    increasing = (at_hi["probability"], sign * (at_hi["mean"] or 0.0)) >= (
        at_lo["probability"],
        sign * (at_lo["mean"] or 0.0),
    )
    good, bad = (at_hi, at_lo) if increasing else (at_lo, at_hi)
    found = reached = None
    if good["probability"] < probability:
        status = "unreachable"
    elif bad["probability"] >= probability:
        status = "at_bound"
        found = bad
    else:
        status = "found"
        while abs(good["value"] - bad["value"]) > precision * (1 + 1e-9):
            mid = 0.5 * (good["value"] + bad["value"])
            if lever.integer:
                mid = float(math.floor(mid) if increasing else math.ceil(mid))
                if mid in (good["value"], bad["value"]):
                    break
            step = evaluate(mid)
            if step["probability"] >= probability:
                good = step
            else:
                bad = step
        found, reached = good, bad
    if progress:
        progress(runs[0], runs[0])
    return {
        "scenario": scenario.title,
        "scenario_sha256": scenario.sha256,
        "currency": scenario.currency,
        "start": scenario.start.isoformat(),
        "end": scenario.end.isoformat(),
        "replications": reps,
        "seed": seed,
        "target": {
            "metric": target.metric,
            "at_most" if target.at_most else "at_least": target.value,
            "unit": _unit(target.metric, scenario.currency),
            "probability": probability,
        },
        "lever": {
            "name": lever_name,
            "kind": "value" if lever.kind == "path" else "multiplier",
            "current": lever.current,
            "integer": lever.integer,
            "better": "larger" if increasing else "smaller",
            "min": lo,
            "max": hi,
            "precision": precision,
        },
        "status": status,
        "value": None if found is None else found["value"],
        "probability": None if found is None else found["probability"],
        "probability_se": None
        if found is None
        else math.sqrt(found["probability"] * (1 - found["probability"]) / reps),
        "change": None
        if found is None or lever.kind != "factor"
        else change_lever(scenario, lever_name, found["value"]).description,
        "just_short": reached,
        "best_within_bounds": good,
        "steps": lever.steps,
    }


def write_goal(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """goal.json and goal.csv (every value tried, in the order tried), written atomically."""
    files = {"goal.json": _json(result), "goal.csv": _csv(result["steps"])}
    return write_atomically(Path(out_dir), files)


# ------------------------------------------------------------------ helpers


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _json(result: dict[str, Any]) -> str:
    return json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _csv(rows: list[dict[str, Any]]) -> str:
    return csv_text([_finite(row) for row in rows])


__all__ = [
    "DIFF_METRICS",
    "Change",
    "TargetSpec",
    "Variant",
    "change_lever",
    "compare",
    "difference",
    "goal",
    "improve",
    "levers",
    "parse_step",
    "parse_target",
    "parse_variant_options",
    "target_report",
    "target_specs",
    "variant_of",
    "write_compare",
    "write_goal",
    "write_levers",
]
