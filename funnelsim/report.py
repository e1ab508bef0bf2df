"""Forecast reports for consultants: one self-contained HTML file, and a PDF of it.

:func:`build_report` turns a scenario and its forecast (and, optionally, ranked levers and
compared variants from :mod:`funnelsim.experiments`) into one HTML document: no network
requests, no scripts, no external fonts; the charts are inline SVG drawn by matplotlib with
its glyphs as paths, so the file looks the same on any machine and prints cleanly.
:func:`print_pdf` prints that file with headless Chromium (Debian's ``chromium``).

Nothing here prints to the terminal; :func:`write_report` writes only where it is told to,
atomically (a report is complete or absent).
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from funnelsim.forecast import Forecast
from funnelsim.scenario import Scenario

SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "CNY": "CN¥",
    "KRW": "₩",
    "AUD": "A$",
    "CAD": "CA$",
    "NZD": "NZ$",
    "BRL": "R$",
    "MXN": "MX$",
}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SECTIONS = (
    "summary",
    "revenue",
    "funnel",
    "repeat",
    "economics",
    "team",
    "levers",
    "variants",
    "assumptions",
    "method",
)
_INK, _ACCENT, _SOFT, _GREY = "#1f2937", "#2563eb", "#93c5fd", "#9ca3af"
_GREEN, _ORANGE = "#059669", "#d97706"


class ReportError(RuntimeError):
    """The report cannot be made on this machine (e.g. no browser for the PDF)."""


# ------------------------------------------------------------------ formatting for people


class Numbers:
    """Numbers as a reader expects them: the currency's symbol, thousands separators,
    rounding to what matters, months by name."""

    def __init__(self, currency: str):
        self.currency = currency
        self.symbol = SYMBOLS.get(currency.upper(), currency.upper() + " ")

    def money(self, x: float | None) -> str:
        if x is None or not np.isfinite(x):
            return "n/a"
        sign = "−" if x < 0 and abs(x) >= 0.005 else ""
        x = abs(x)
        if x >= 10_000_000:
            return f"{sign}{self.symbol}{x / 1e6:,.1f}M"
        if x >= 1_000_000:
            return f"{sign}{self.symbol}{x / 1e6:,.2f}M"
        if x >= 100:
            return f"{sign}{self.symbol}{_round(x, 3):,.0f}"
        if x < 0.005:
            return f"{self.symbol}0"
        return f"{sign}{self.symbol}{x:,.2f}" if x < 10 else f"{sign}{self.symbol}{x:,.0f}"

    def money_exact(self, x: float | None) -> str:
        """Whole units, for tables where the digits add up."""
        if x is None or not np.isfinite(x):
            return "n/a"
        return ("−" if x <= -0.5 else "") + f"{self.symbol}{abs(x):,.0f}"

    @staticmethod
    def count(x: float | None) -> str:
        if x is None or not np.isfinite(x):
            return "n/a"
        return f"{x:,.1f}" if abs(x) < 10 and x != round(x) else f"{x:,.0f}"

    @staticmethod
    def share(x: float | None, digits: int = 1) -> str:
        if x is None or not np.isfinite(x):
            return "n/a"
        return f"{100 * x:.{digits}f}%"

    @staticmethod
    def days(x: float | None) -> str:
        if x is None or not np.isfinite(x):
            return "n/a"
        return f"{x:,.1f} days"

    @staticmethod
    def ratio(x: float | None) -> str:
        if x is None or not np.isfinite(x):
            return "n/a"
        return f"{x:,.1f}×"

    @staticmethod
    def month(label: str) -> str:
        """``2027-03`` → ``Mar 2027``."""
        year, m = label.split("-")
        return date(int(year), int(m), 1).strftime("%b %Y")


def _round(x: float, significant: int) -> float:
    if x == 0:
        return 0.0
    digits = significant - int(np.floor(np.log10(abs(x)))) - 1
    return round(x, min(digits, 0))


# ------------------------------------------------------------------ the report


def build_report(
    scenario: Scenario,
    forecast: Forecast,
    *,
    levers: Mapping[str, Any] | None = None,
    variants: Mapping[str, Any] | None = None,
    targets: Mapping[str, Any] | None = None,
    prepared: date | None = None,
    command: str | None = None,
) -> str:
    """The HTML report of a forecast.

    ``levers`` and ``variants`` are the results of :func:`funnelsim.experiments.levers` and
    :func:`funnelsim.experiments.compare`; ``targets`` the P(target reached) of each target
    (:func:`funnelsim.experiments.target_report`; by default from the scenario's
    ``targets``); ``command`` the command that reproduces it.
    """
    f = Numbers(scenario.currency)
    prepared = prepared or date.today()
    if targets is None and scenario.targets:
        from funnelsim.experiments import target_report, target_specs

        targets = target_report(forecast.totals(), target_specs(scenario), scenario.currency)
    totals = forecast.summary()["totals"]
    sections = [
        _summary(scenario, forecast, f, levers, targets),
        _revenue(forecast, f),
        _funnel(forecast, f),
    ]
    if "revenue_repeat" in totals:
        sections.append(_repeat(forecast, f))
    if "cac" in totals:
        sections.append(_economics(forecast, f))
    if forecast.team_stages:
        sections.append(_team(scenario, forecast, f))
    if levers is not None:
        sections.append(_levers(levers, f))
    if variants is not None:
        sections.append(_variants(variants, f))
    sections.append(_assumptions(scenario))
    sections.append(_method(scenario, forecast, command))
    a = forecast.attrs
    title = f"Sales forecast: {scenario.title}"
    period = f"{Numbers.month(a['start'][:7])} to {_last_month(forecast)}"
    head = (
        f"<header><h1>{_e(title)}</h1><p class='sub'>{_e(period)} · "
        f"{scenario.months} months · prepared {prepared:%d %B %Y} · money in "
        f"{_e(scenario.currency)}</p></header>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        + head
        + "".join(sections)
        + "</main></body></html>\n"
    )


def _last_month(forecast: Forecast) -> str:
    labels = list(forecast.data.period.values)
    return Numbers.month(str(labels[-1]))


def _section(key: str, title: str, head: str, rest: str = "") -> str:
    """A section: its heading and ``head`` (the introduction and the first chart) stay on
    one printed page; ``rest`` may break across pages."""
    return f"<section id='{key}'><div class='keep'><h2>{_e(title)}</h2>{head}</div>{rest}</section>"


def _summary(scenario, forecast: Forecast, f: Numbers, levers, targets) -> str:
    t = forecast.summary()["totals"]
    rev = t["revenue"]
    months = scenario.months
    text = [
        f"Over the {months} months from {Numbers.month(forecast.attrs['start'][:7])}, "
        f"{_e(scenario.title)} can expect about <b>{f.money(rev['mean'])}</b> of revenue: "
        f"in 90% of the simulated futures it lies between {f.money(rev['p5'])} and "
        f"{f.money(rev['p95'])}."
    ]
    won, leads = t["won"]["mean"], t["leads"]["mean"]
    text.append(
        f"The funnel turns about {f.count(leads)} new leads into {f.count(won)} won deals"
        + (f" ({f.share(won / leads)} of the leads)" if leads else "")
        + f", with about {f.count(t['open_at_end']['mean'])} still open at the end."
    )
    if "revenue_repeat" in t and t["repeat_share"]["mean"] is not None:
        if t["revenue_repeat"]["mean"] > 0:
            text.append(
                f"Repeat purchases by customers bring {f.share(t['repeat_share']['mean'], 0)} "
                "of the revenue."
            )
        else:
            text.append("No repeat purchase or renewal falls within the horizon.")
    if "roi" in t and t["roi"]["mean"] is not None:
        text.append(
            f"Every {f.symbol.strip()}1 spent on marketing and sales returns "
            f"{f.money(1 + t['roi']['mean'])} of gross margin (ROI {f.share(t['roi']['mean'], 0)})."
        )
    for name, entry in (targets or {}).items():
        text.append(
            f"The probability of reaching the {_e(_metric_name(name))} target "
            f"({_e(_target_text(name, entry, f))}) is <b>{f.share(entry['probability'], 0)}</b>."
        )
    best = _best_lever(levers)
    if best is not None:
        text.append(
            f"Of the improvements tested, <b>{_e(best['label'])}</b> gains most: "
            f"{f.money(best['mean'])} more revenue on average "
            f"(90% interval {f.money(best['p5'])} to {f.money(best['p95'])})."
        )
    cards = [
        (
            "Expected revenue",
            f.money(rev["mean"]),
            f"90%: {f.money(rev['p5'])} – {f.money(rev['p95'])}",
        ),
        ("Won deals", f.count(won), f"from {f.count(leads)} new leads"),
    ]
    if "revenue_repeat" in t:
        cards.append(("Repeat share", f.share(t["repeat_share"]["mean"], 0), "of revenue"))
    if "ltv_to_cac" in t:
        cards.append(
            ("LTV : CAC", f.ratio(t["ltv_to_cac"]["mean"]), f"CAC {f.money(t['cac']['mean'])}")
        )
    for name, entry in (targets or {}).items():
        cards.append(
            (
                f"P({_metric_name(name)} target)",
                f.share(entry["probability"], 0),
                _target_text(name, entry, f),
            )
        )
    card_html = "".join(
        f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div>"
        f"<div class='n'>{_e(n)}</div></div>"
        for k, v, n in cards
    )
    intro = f"<p class='lead'>{' '.join(text)}</p>"
    return _section("summary", "Executive summary", intro, f"<div class='cards'>{card_html}</div>")


def _target_text(metric: str, entry: Mapping[str, Any], f: Numbers) -> str:
    """``at least $2.00M`` from a target's entry."""
    bound = "at most" if "at_most" in entry else "at least"
    value = entry.get("at_most", entry.get("at_least"))
    money = entry.get("unit") == f.currency
    return f"{bound} {f.money(value) if money else f.count(value)}"


def _metric_name(metric: str) -> str:
    return _METRIC_NAMES.get(metric, metric.replace("_", " "))


_METRIC_NAMES = {
    "revenue": "revenue",
    "revenue_new": "new-customer revenue",
    "revenue_repeat": "repeat revenue",
    "won": "won deals",
    "silent_lost": "leads presumed silently lost",
    "customers_new": "new customers",
    "marketing_cost": "marketing cost",
    "sales_cost": "sales cost",
    "roi": "ROI",
    "cac": "CAC",
    "ltv_to_cac": "LTV : CAC",
}


def _lever_label(lever: str) -> str:
    """A lever's name as a reader says it: ``stages.demo.advance`` → ``Better conversion
    at Demo``."""
    parts = lever.split(".")
    if parts[0] == "channels":
        return f"More leads from {_label(parts[1])}"
    if parts[0] == "stages":
        what = {"advance": "Better conversion at", "duration": "Faster"}.get(parts[2], parts[2])
        return f"{what} {_label(parts[1])}"
    return {
        "deal_value": "Larger deals",
        "sales_team.reps": "One more rep",
        "sales_team.patience": "More patient leads",
        "repeat.purchase_rate": "More frequent repeat purchases",
        "repeat.churn": "Better retention",
        "repeat.spend": "Higher spend per repeat purchase",
    }.get(lever, lever)


def _best_lever(levers) -> dict[str, Any] | None:
    if not levers or not levers.get("levers"):
        return None
    top = max(levers["levers"], key=lambda r: r["revenue"]["mean"])
    return {"label": _lever_label(top["lever"]), **top["revenue"]}


def _revenue(forecast: Forecast, f: Numbers) -> str:
    revenue = forecast.metrics()["revenue"].values
    labels = [Numbers.month(str(p)) for p in forecast.data.period.values]
    q = np.percentile(revenue, [5, 25, 50, 75, 95], axis=0)
    chart = _svg(_fan_chart(labels, q, f), "Monthly revenue: median, 50% and 90% bands")
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{f.money_exact(revenue[:, k].mean())}</td>"
        f"<td>{f.money_exact(q[2, k])}</td><td>{f.money_exact(q[0, k])} – "
        f"{f.money_exact(q[4, k])}</td></tr>"
        for k, label in enumerate(labels)
    )
    table = (
        "<table class='num'><thead><tr><th>Month</th><th>Mean</th><th>Median</th>"
        "<th>90% interval</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )
    intro = (
        "<p>Revenue booked each month (deals at close"
        + (", first and repeat purchases" if "revenue_repeat" in forecast.metrics() else "")
        + "). The dark line is the median of the simulated futures, the bands hold 50% and 90% "
        "of them.</p>"
    )
    return _section("revenue", "Revenue by month", intro + chart, table)


def _funnel(forecast: Forecast, f: Numbers) -> str:
    s = forecast.summary()
    t, stages = s["totals"], s["stages"]
    names = ["New leads", *[_label(n) for n in stages], "Won"]
    values = [
        t["leads"]["mean"],
        *[v["entered"]["mean"] for v in stages.values()],
        t["won"]["mean"],
    ]
    chart = _svg(_funnel_chart(names, values), "The funnel: leads entering each stage")
    rows = []
    leads = t["leads"]["mean"] or 0.0
    previous = None
    for name, v in stages.items():
        entered = v["entered"]["mean"]
        step = f.share(entered / previous) if previous else "–"
        rows.append(
            f"<tr><td>{_e(_label(name))}</td><td>{f.count(entered)}</td>"
            f"<td>{f.share(entered / leads) if leads else 'n/a'}</td><td>{step}</td>"
            f"<td>{f.count(v['open_at_end']['mean'])}</td>"
            f"<td>{f.days(v['days_in_stage']['mean'])}</td></tr>"
        )
        previous = entered
    won = t["won"]["mean"]
    rows.append(
        f"<tr class='won'><td>Won</td><td>{f.count(won)}</td>"
        f"<td>{f.share(won / leads) if leads else 'n/a'}</td>"
        f"<td>{f.share(won / previous) if previous else '–'}</td><td></td>"
        f"<td>{f.days(t['cycle_days']['mean'])} from arrival</td></tr>"
    )
    table = (
        "<table class='num'><thead><tr><th>Stage</th><th>Entered</th><th>% of new leads</th>"
        "<th>vs row above</th><th>Still open at end</th><th>Mean time</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )
    channel_rows = "".join(
        f"<tr><td>{_e(_label(name))}</td><td>{f.count(v['leads']['mean'])}</td>"
        f"<td>{f.count(v['won']['mean'])}</td>"
        f"<td>{f.share(v['won']['mean'] / v['leads']['mean']) if v['leads']['mean'] else 'n/a'}"
        f"</td><td>{f.money_exact(v['revenue']['mean'])}</td>"
        f"<td>{f.money_exact(v['revenue']['p5'])} – {f.money_exact(v['revenue']['p95'])}</td></tr>"
        for name, v in s["channels"].items()
    )
    channels = (
        "<h3>By channel</h3><table class='num'><thead><tr><th>Channel</th><th>New leads</th>"
        "<th>Won</th><th>Won per new lead</th><th>Revenue (mean)</th><th>90% interval</th>"
        "</tr></thead><tbody>" + channel_rows + "</tbody></table><p class='note'>Won deals "
        "include deals open at the start; revenue includes their customers' repeat purchases "
        "where the scenario has them.</p>"
    )
    intro = (
        f"<p>Means over the simulated futures. {f.count(t['lost']['mean'])} leads are lost"
        + (
            f", {f.count(t['silent_lost']['mean'])} presumed silently lost (gone with "
            "nothing recorded)"
            if "silent_lost" in t
            else ""
        )
        + f" and {f.count(t['open_at_end']['mean'])} are still being worked at the end of the "
        "horizon. Entries count every stay (a lead sent back to a stage counts again); "
        "deals open at the start are not new leads.</p>"
    )
    return _section("funnel", "The funnel", intro + chart, table + channels)


def _repeat(forecast: Forecast, f: Numbers) -> str:
    m = forecast.metrics()
    labels = [Numbers.month(str(p)) for p in forecast.data.period.values]
    new = m["revenue_new"].values.mean(axis=0)
    repeat = m["revenue_repeat"].values.mean(axis=0)
    chart = _svg(_stacked_chart(labels, new, repeat, f), "New and repeat revenue by month")
    t = forecast.summary()["totals"]
    intro = (
        f"<p>Revenue from new customers' first purchases and from existing and new customers "
        f"buying again (or renewing). Over the horizon: {f.money(t['revenue_new']['mean'])} "
        f"new, {f.money(t['revenue_repeat']['mean'])} repeat — a repeat share of "
        f"{f.share(t['repeat_share']['mean'])}. {f.count(t['customers_new']['mean'])} new "
        f"customers; {f.count(t['customers_active_at_end']['mean'])} customers active at the "
        "end.</p>"
    )
    return _section("repeat", "New and repeat revenue", intro + chart)


def _economics(forecast: Forecast, f: Numbers) -> str:
    s = forecast.summary()
    t = s["totals"]
    rows = [
        ("Marketing cost", f.money_exact(t["marketing_cost"]["mean"]), "over the horizon"),
        ("Sales cost (reps)", f.money_exact(t["sales_cost"]["mean"]), "over the horizon"),
        ("CAC", f.money(t["cac"]["mean"]), "(marketing + sales) ÷ new customers"),
        ("CAC, marketing only", f.money(t["cac_marketing"]["mean"]), "marketing ÷ new customers"),
        ("LTV", f.money(t["ltv"]["mean"]), "discounted gross margin per new customer"),
        ("LTV : CAC", f.ratio(t["ltv_to_cac"]["mean"]), "above 3× is usually considered healthy"),
        ("Payback", _months(t["payback_months"]["mean"]), "CAC ÷ monthly gross margin"),
        ("ROI", f.share(t["roi"]["mean"], 0), "(gross margin − costs) ÷ costs"),
    ]
    table = (
        "<table><tbody>"
        + "".join(
            f"<tr><th>{_e(a)}</th><td class='n'>{_e(b)}</td><td>{_e(c)}</td></tr>"
            for a, b, c in rows
        )
        + "</tbody></table>"
    )
    channels = s["channels"]
    per = [
        f"<tr><td>{_e(_label(name))}</td><td>{f.money_exact(v['marketing_cost']['mean'])}</td>"
        f"<td>{f.count(v['won']['mean'])}</td><td>{f.money(v['cac']['mean'])}</td></tr>"
        for name, v in channels.items()
        if "marketing_cost" in v
    ]
    per_table = (
        "<h3>By channel</h3><table class='num'><thead><tr><th>Channel</th><th>Marketing cost"
        "</th><th>Won</th><th>CAC</th></tr></thead><tbody>" + "".join(per) + "</tbody></table>"
        if per
        else ""
    )
    cut = forecast.attrs.get("ltv_horizon_years")
    note = f"<p class='note'>LTV counts {cut:g} years of a customer's life.</p>" if cut else ""
    intro = "<p>Means over the simulated futures.</p>"
    return _section("economics", "Unit economics", intro, table + note + per_table)


def _months(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:,.1f} months"


def _team(scenario: Scenario, forecast: Forecast, f: Numbers) -> str:
    s = forecast.summary()
    t = s["totals"]
    m = forecast.metrics()
    labels = [Numbers.month(str(p)) for p in forecast.data.period.values]
    util = m["rep_utilization"].values
    q = np.nanpercentile(util, [5, 50, 95], axis=0)
    chart = _svg(_utilization_chart(labels, q), "Sales team utilization by month")
    rows = "".join(
        f"<tr><td>{_e(_label(name))}</td><td>{f.days(v['wait_days']['mean'])}</td>"
        f"<td>{f.count(v['waited']['mean'])}</td><td>{f.count(v['went_cold']['mean'])}</td>"
        f"<td>{f.count(v['queue_at_end']['mean'])}</td></tr>"
        for name, v in s["stages"].items()
        if "wait_days" in v
    )
    team = scenario.sales_team
    intro = (
        f"<p>{team.reps} reps at the start, each working {team.leads_per_rep} leads at once. "
        f"Over the horizon the team is busy {f.share(t['rep_utilization']['mean'], 0)} of its "
        f"slot time, and {f.count(t['went_cold']['mean'])} leads go cold waiting for a rep "
        "(they count as lost).</p>"
    )
    table = (
        "<table class='num'><thead><tr><th>Stage</th><th>Mean wait for a rep</th>"
        "<th>Leads that waited</th><th>Went cold</th><th>Queue at end</th></tr></thead><tbody>"
        + rows
        + "</tbody></table>"
    )
    return _section("team", "Sales team", intro + chart, table)


def _levers(levers: Mapping[str, Any], f: Numbers) -> str:
    rows = sorted(levers.get("levers", []), key=lambda r: r["revenue"]["mean"], reverse=True)
    names = [_lever_label(r["lever"]) for r in rows]
    chart = _svg(_tornado(names, rows, f), "Revenue uplift of each improvement") if rows else ""
    costed = any(r.get("cost") for r in rows)
    table_rows = "".join(
        f"<tr><td>{_e(name)}<div class='note'>{_e(r['change'])}</div></td>"
        f"<td>{f.money_exact(r['revenue']['mean'])}</td>"
        f"<td>{f.money_exact(r['revenue']['p5'])} – {f.money_exact(r['revenue']['p95'])}</td>"
        f"<td>{f.share(r['revenue'].get('p_greater'), 0)}</td>"
        + (
            f"<td>{f.money_exact(r.get('cost'))}</td><td>{_per(r.get('revenue_per_cost'))}</td>"
            if costed
            else ""
        )
        + "</tr>"
        for name, r in zip(names, rows, strict=True)
    )
    cost_head = (
        f"<th>Cost ({_e(f.currency)})</th><th>Uplift per unit of cost</th>" if costed else ""
    )
    table = (
        "<table class='num'><thead><tr><th>Improvement</th><th>Mean revenue uplift</th>"
        f"<th>90% interval</th><th>P(gain)</th>{cost_head}</tr></thead><tbody>"
        + table_rows
        + "</tbody></table>"
    )
    skipped = levers.get("not_applicable") or []
    notes = [f"{_lever_label(n['lever'])}: {n['reason']}" for n in skipped]
    notes += list(levers.get("notes") or [])
    note = "".join(f"<p class='note'>{_e(n)}</p>" for n in notes)
    intro = (
        f"<p>Each element of the sales system improved by {f.share(levers['step'], 0)}, one at a "
        f"time, on the same simulated futures ({levers['replications']:,} replications, common "
        "random numbers), so each bar is that change's own effect. Bars: mean revenue uplift; "
        "whiskers: 90% interval of the paired difference.</p>"
    )
    return _section("levers", "What to improve: the levers", intro + chart, table + note)


def _per(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:,.2f}"


def _variants(result: Mapping[str, Any], f: Numbers) -> str:
    blocks = []
    for variant in result.get("variants", []):
        rows = []
        for metric, d in variant.get("metrics", {}).items():
            if metric == "roi":
                show = f.share
            elif d.get("unit") == f.currency:
                show = f.money_exact
            else:
                show = f.count
            rows.append(
                f"<tr><td>{_e(_label(_metric_name(metric)))}</td><td>{show(d.get('base_mean'))}"
                f"</td><td>{show(d.get('variant_mean'))}</td><td>{_signed(show, d.get('mean'))}"
                f"</td><td>{_signed(show, d.get('p5'))} – {_signed(show, d.get('p95'))}</td>"
                f"<td>{f.share(d.get('p_greater'), 0)}</td></tr>"
            )
        changes = variant.get("changes") or []
        what = "; ".join(changes) if changes else f"scenario file {variant.get('source', '')}"
        blocks.append(
            f"<h3>{_e(_label(variant.get('name', '')))}</h3><p class='note'>{_e(what)}</p>"
            "<table class='num'><thead><tr><th>Metric</th><th>Base</th><th>Variant</th>"
            "<th>Mean difference</th><th>90% interval</th><th>P(variant &gt; base)</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    intro = (
        "<p>Each variant against this forecast, replication by replication on the same random "
        f"numbers ({result['replications']:,} replications): the distribution of the "
        "difference, variant − base, and how often the variant comes out ahead.</p>"
    )
    return _section("variants", "Compared variants", intro, "".join(blocks))


def _signed(show, x) -> str:
    text = show(x)
    return text if x is None or not np.isfinite(x) or x <= 0 or text.startswith("−") else "+" + text


def _assumptions(scenario: Scenario) -> str:
    data = scenario.model_dump(mode="json", exclude_none=True, by_alias=True)
    intro = (
        "<p>Every input of the scenario"
        + (f" (<code>{_e(scenario.source.name)}</code>)" if scenario.source else "")
        + ". Durations are in days, money in "
        + _e(scenario.currency)
        + ", volumes in leads per calendar month, probabilities as shares.</p>"
    )
    return _section("assumptions", "Assumptions", intro, _tree(data))


def _tree(value: Any) -> str:
    """A nested mapping as nested definition tables, lists inline when short."""
    if isinstance(value, Mapping):
        rows = "".join(
            f"<tr><th>{_e(_label(str(k)))}</th><td>{_tree(v)}</td></tr>"
            for k, v in value.items()
            if v != {} and v != []  # empty sections say nothing
        )
        if not rows:
            return "<span class='muted'>none</span>"
        return f"<table class='tree'><tbody>{rows}</tbody></table>"
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            return _e(", ".join(_scalar(v) for v in value))
        return "<ol>" + "".join(f"<li>{_tree(v)}</li>" for v in value) + "</ol>"
    return _e(_scalar(value))


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.6g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return str(v)


def _method(scenario: Scenario, forecast: Forecast, command: str | None) -> str:
    a = forecast.attrs
    rows = [
        ("Method", "Monte Carlo simulation of every lead and customer (funnelsim)"),
        ("Engine", a["engine"]),
        ("Replications", f"{forecast.replications:,}"),
        ("Seed", str(a["seed"])),
        ("funnelsim version", a["funnelsim_version"]),
        ("Scenario file", a.get("scenario_file") or "(built in Python)"),
        ("Scenario SHA-256", a["scenario_sha256"]),
        ("Simulated", a.get("created", "")),
    ]
    if command:
        rows.append(("Reproduce with", command))
    table = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    intro = (
        "<p>The same scenario file, seed and number of replications give the same numbers on "
        "any machine and with any number of worker processes. Intervals are percentiles over "
        "the replications.</p>"
    )
    return _section(
        "method", "Method and reproducibility", intro, f"<table><tbody>{table}</tbody></table>"
    )


def _label(name: str) -> str:
    """``paid_search`` → ``Paid search``."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------ charts (inline SVG)


def _figure(height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, height), dpi=100)
    fig.patch.set_alpha(0.0)
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(colors=_INK, labelsize=9)
    return fig, ax


def _svg(fig, title: str) -> str:
    """The figure as inline SVG: glyphs as paths (no fonts to load), fixed ids (the same
    report twice is the same file), scaled to the page's width."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "funnelsim", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    text = text.replace("<svg", f"<svg role='img' aria-label='{_e(title)}' class='chart'", 1)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return f"<figure>{text}<figcaption>{_e(title)}</figcaption></figure>"


def _money_axis(ax, f: Numbers) -> None:
    from matplotlib.ticker import FuncFormatter

    def tick(x, _pos):
        if abs(x) >= 1e6:
            return f"{f.symbol}{x / 1e6:,.1f}M"
        if abs(x) >= 1e3:
            return f"{f.symbol}{x / 1e3:,.0f}k"
        return f"{f.symbol}{x:,.0f}"

    ax.yaxis.set_major_formatter(FuncFormatter(tick))


def _fan_chart(labels: Sequence[str], q: np.ndarray, f: Numbers):
    fig, ax = _figure()
    x = np.arange(len(labels))
    ax.fill_between(x, q[0], q[4], color=_SOFT, alpha=0.45, lw=0, label="90% of futures")
    ax.fill_between(x, q[1], q[3], color=_ACCENT, alpha=0.35, lw=0, label="50% of futures")
    ax.plot(x, q[2], color=_INK, lw=2, label="median")
    _month_ticks(ax, labels)
    _money_axis(ax, f)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", color="#e5e7eb", lw=0.8)
    _legend_above(ax, 3)
    return fig


def _legend_above(ax, columns: int) -> None:
    """The legend in a row above the plot, where it hides no data."""
    ax.legend(frameon=False, fontsize=9, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=columns)


def _month_ticks(ax, labels: Sequence[str]) -> None:
    step = max(1, int(np.ceil(len(labels) / 12)))
    ticks = np.arange(0, len(labels), step)
    ax.set_xticks(
        ticks,
        [labels[i] for i in ticks],
        rotation=0 if step > 1 else 45,
        ha="right" if step == 1 else "center",
    )
    ax.set_xlim(-0.3, len(labels) - 0.7)


def _funnel_chart(names: Sequence[str], values: Sequence[float]):
    fig, ax = _figure(0.45 * len(names) + 0.8)
    y = np.arange(len(names))[::-1]
    top = max(values) if max(values) > 0 else 1.0
    colors = [_ACCENT] * (len(names) - 1) + [_GREEN]
    ax.barh(y, values, color=colors, height=0.65)
    for yi, v in zip(y, values, strict=True):
        ax.text(v + 0.01 * top, yi, f"{v:,.0f}", va="center", fontsize=9, color=_INK)
    ax.set_yticks(y, names)
    ax.set_xlim(0, top * 1.12)
    ax.xaxis.set_visible(False)
    ax.spines["bottom"].set_visible(False)
    return fig


def _stacked_chart(labels: Sequence[str], new: np.ndarray, repeat: np.ndarray, f: Numbers):
    fig, ax = _figure()
    x = np.arange(len(labels))
    ax.bar(x, new, color=_ACCENT, label="new customers (first purchase)", width=0.75)
    ax.bar(x, repeat, bottom=new, color=_ORANGE, label="repeat purchases", width=0.75)
    _month_ticks(ax, labels)
    _money_axis(ax, f)
    ax.grid(axis="y", color="#e5e7eb", lw=0.8)
    ax.set_axisbelow(True)
    _legend_above(ax, 2)
    return fig


def _utilization_chart(labels: Sequence[str], q: np.ndarray):
    from matplotlib.ticker import PercentFormatter

    fig, ax = _figure(2.8)
    x = np.arange(len(labels))
    ax.fill_between(x, q[0], q[2], color=_SOFT, alpha=0.5, lw=0, label="90% of futures")
    ax.plot(x, q[1], color=_INK, lw=2, label="median")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.05)
    _month_ticks(ax, labels)
    ax.grid(axis="y", color="#e5e7eb", lw=0.8)
    _legend_above(ax, 2)
    return fig


def _tornado(names: Sequence[str], rows: Sequence[Mapping[str, Any]], f: Numbers):
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure(0.38 * len(names) + 0.9)
    y = np.arange(len(names))[::-1]
    mean = np.array([r["revenue"]["mean"] for r in rows], dtype=float)
    lo = np.array([r["revenue"]["p5"] for r in rows], dtype=float)
    hi = np.array([r["revenue"]["p95"] for r in rows], dtype=float)
    colors = [_GREEN if m >= 0 else _ORANGE for m in mean]
    ax.barh(y, mean, color=colors, height=0.6)
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="none", ecolor=_INK, lw=1, capsize=3)
    ax.axvline(0, color=_GREY, lw=1)
    ax.set_yticks(y, names)

    def tick(x, _pos):
        return f.money(x) if x else "0"

    ax.xaxis.set_major_formatter(FuncFormatter(tick))
    ax.grid(axis="x", color="#e5e7eb", lw=0.8)
    ax.set_axisbelow(True)
    return fig


# ------------------------------------------------------------------ files


def write_report(text: str, path: str | Path, *, pdf: bool = False) -> list[Path]:
    """Write the HTML (and with ``pdf`` a PDF beside it, same name) atomically: into a
    temporary folder beside it first, moved into place when complete."""
    from funnelsim.forecast import write_atomically

    path = Path(path)
    files: dict[str, Any] = {path.name: text}
    if pdf:  # printed from the staged HTML, which is written first
        files[path.with_suffix(".pdf").name] = lambda target: print_pdf(
            target.with_name(path.name), target
        )
    return write_atomically(path.parent, files)


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    override = os.environ.get("FUNNELSIM_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(*arguments: str) -> list[str]:
    """A headless Chromium command line (no sandbox inside containers, no GPU, no network
    but local files)."""
    browser = find_chromium()
    if browser is None:
        raise ReportError(
            "--pdf needs Chromium (or Chrome) and none was found; on Debian or Ubuntu: "
            "apt install chromium (or set FUNNELSIM_CHROMIUM to the browser's path)"
        )
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        *arguments,
    ]


def print_pdf(page: Path, pdf: Path, *, timeout: float = 120.0) -> None:
    """Print the HTML ``page`` to ``pdf`` with headless Chromium (A4 pages, no header or
    footer)."""
    with tempfile.TemporaryDirectory(prefix="funnelsim-chromium-") as profile:
        command = chromium_command(
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            page.resolve().as_uri(),
        )
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"Chromium did not finish printing the PDF in {timeout:g} s") from exc
    if done.returncode != 0 or not pdf.exists() or pdf.stat().st_size == 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise ReportError("Chromium could not print the PDF: " + " | ".join(tail))


_CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: #f8fafc; color: var(--ink);
  font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 32px 28px 48px; background: #fff; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 24px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.sub, .note, figcaption { color: var(--muted); font-size: 13px; }
p.lead { font-size: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px;
  margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 24px; font-weight: 600; }
.card .n { color: var(--muted); font-size: 12px; }
figure { margin: 12px 0; }
svg.chart { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
table.num td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.num td:first-child { text-align: left; white-space: normal; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.won td { font-weight: 600; }
table.tree { margin: 0; font-size: 13px; }
table.tree th { font-weight: 600; color: #374151; white-space: nowrap; }
code { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
.muted { color: var(--muted); }
@media print {
  body { background: #fff; font-size: 12px; }
  main { max-width: none; padding: 0; }
  .keep, figure, .cards, tr, p { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
}
@page { size: A4; margin: 16mm 14mm; }
"""
