"""Plain-text views for the terminal: the funnel of a scenario and a forecast's tables.

These functions return strings; only :mod:`funnelsim.cli` prints them.
"""

from __future__ import annotations

import math
from typing import Any

from funnelsim.analytic import channel_expectations, expected_leads, pipeline_expectations
from funnelsim.funnel import compile_funnel
from funnelsim.scenario import Dirichlet, Scenario, outcome_probabilities, stage_duration


def number(x: float | None, decimals: int = 0) -> str:
    """``12,345`` / ``12.3``; ``n/a`` for undefined values."""
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{decimals}f}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 open lead``, ``1,200 open leads``: a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def percent(x: float | None) -> str:
    """``87.5%``; ``n/a`` for undefined values."""
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}%"


def days(x: float | None) -> str:
    """Days with a precision that suits them: ``82.4``, ``3.25``, ``0.042``."""
    if x is None or x != x:
        return "n/a"
    if abs(x) >= 10 or x == 0:
        return f"{x:,.1f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.2g}"


def _table(header: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """Columns padded to width; the first ``left`` columns are text (left-aligned)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _horizon(scenario_or_attrs: Any) -> str:
    return f"{scenario_or_attrs['start']} to {scenario_or_attrs['end']} (end exclusive)"


# ---------------------------------------------------------------- validate


def funnel_text(scenario: Scenario) -> str:
    """The funnel with its analytic expectations, as ``funnelsim validate`` shows it."""
    funnel = compile_funnel(scenario)
    cur = scenario.currency
    out = [
        f"{scenario.title}: {scenario.start} to {scenario.end} ({scenario.months} months), "
        f"money in {cur}, {scenario.replications:,} replications, seed {scenario.seed}",
        "",
        f"Stages (new leads enter '{scenario.entry_stage}'; durations in days):",
    ]
    rows = []
    for name, stage in scenario.stages.items():
        probs = outcome_probabilities(stage.next)
        uncertain = " (Dirichlet means)" if isinstance(stage.next, Dirichlet) else ""
        outcomes = ", ".join(f"{k} {100 * p:.1f}%" for k, p in probs.items()) + uncertain
        duration = stage.duration
        if isinstance(duration, dict):
            stay = "; ".join(f"{k}: {d.describe()}" for k, d in duration.items())
        else:
            stay = duration.describe()
        if stage.stale_after is not None:
            stay += f"; lost when stale after {stage.stale_after:g}"
        rows.append([name, stay, "-> " + outcomes])
        for cname, override in stage.channels.items():
            o_probs = outcome_probabilities(override.next) if override.next is not None else probs
            o_dur = stage_duration(scenario, name, cname)
            o_days = (
                "; ".join(f"{k}: {d.describe()}" for k, d in o_dur.items())
                if isinstance(o_dur, dict)
                else o_dur.describe()
            )
            o_out = ", ".join(f"{k} {100 * p:.1f}%" for k, p in o_probs.items())
            rows.append([f"  for {cname}", o_days, "-> " + o_out])
    out.append(_table(["stage", "days in stage", "outcomes"], rows, left=3))
    leads = expected_leads(funnel).sum(axis=1)
    referral = funnel.referral
    out += ["", "Expected per new lead, eventually (absorbing Markov chain, no horizon):"]
    rows = []
    silent = funnel.has_silent_loss
    for c, cname in enumerate(funnel.channels):
        e = channel_expectations(funnel, c)
        visits = " / ".join(f"{v:.2f}" for v in e.visits.values())
        rows.append(
            [
                cname,
                number(leads[c]) if referral is None or not referral[c] else "word of mouth",
                f"{100 * e.p_won:.1f}%",
                *([f"{100 * e.p_silent_lost:.1f}%"] if silent else []),
                days(e.days_to_close_won),
                number(e.deal_value),
                number(e.revenue_per_lead),
                visits,
            ]
        )
    out.append(
        _table(
            [
                "channel",
                f"leads in {scenario.months} mo",
                "P(won)",
                *(["P(silently lost)"] if silent else []),
                "days to win",
                f"deal value ({cur})",
                f"revenue/lead ({cur})",
                "visits " + "/".join(funnel.stages),
            ],
            rows,
        )
    )
    team = scenario.sales_team
    if team is not None:
        size = f"{count(team.reps, 'rep')} × {count(team.leads_per_rep, 'lead')} at once"
        hires = "; ".join(
            f"from {h.from_}: {count(h.reps, 'rep')}"
            + (f" (ramp {count(h.ramp_months, 'month')})" if h.ramp_months else "")
            for h in team.hiring
        )
        patience = (
            team.patience.describe() + " days" if team.patience else "waits as long as needed"
        )
        out += [
            "",
            f"Sales team: {size}, working {', '.join(team.stages)}; queue {team.queue}; "
            f"patience {patience}",
        ]
        if hires:
            out.append(f"  hiring: {hires}")
        if team.skill:
            out.append("  skill by rep: " + ", ".join(f"{x:g}" for x in team.skill))
        cost = scenario.costs.rep_per_month if scenario.costs else None
        if cost is not None and funnel.team is not None:
            out.append(
                f"  rep cost: {cur} {cost:,.0f} a month; {funnel.team.rep_months.sum():,.1f} "
                f"rep-months over the horizon = {cur} {cost * funnel.team.rep_months.sum():,.0f}"
            )
        out.append(
            "  (the expectations above ignore the team's capacity; `run` simulates the waits)"
        )
    if scenario.repeat is not None:
        out += ["", *_repeat_lines(scenario)]
    if funnel.open_stage.size:
        p = pipeline_expectations(funnel)
        out += [
            "",
            f"Opening pipeline: {count(int(p['leads']), 'open lead')}; expected eventual wins "
            f"{p['won']:,.1f}, revenue {cur} {p['revenue']:,.0f}"
            + (f"; presumed silently lost {p['silent_lost']:,.1f}" if silent else ""),
        ]
    return "\n".join(out)


def _repeat_lines(scenario: Scenario) -> list[str]:
    from funnelsim.customers import expected_repeat_purchases, mean_spend

    model = scenario.repeat
    cur = scenario.currency
    year = float(expected_repeat_purchases(model, [365.25])[0])
    if model.model == "subscription":
        churn = model.churn
        churn_text = f"{churn:g}" if isinstance(churn, float) else f"Beta{tuple(churn.beta)}"
        lines = [
            f"Repeat sales: subscription, {cur} {model.price:,.0f} a {model.billing}, churn "
            f"{churn_text} per {model.billing}; a new subscriber renews {year:.1f} times in its "
            "first year on average"
        ]
    else:
        name = {"bg_nbd": "BG/NBD", "pareto_nbd": "Pareto/NBD"}[model.model]
        lines = [
            f"Repeat sales: {name}; a new customer makes {year:.2f} repeat purchases in its "
            f"first year on average, {cur} {mean_spend(model):,.2f} each"
        ]
    existing = scenario.existing_customers
    if existing is not None:
        customers = (
            len(scenario.customer_history.customer_id)
            if scenario.customer_history is not None
            else existing.count
        )
        source = (
            "with their histories" if scenario.customer_history is not None else "a fresh cohort"
        )
        lines.append(f"  existing customers: {customers:,} ({source})")
    return lines


# ---------------------------------------------------------------- run

_LABELS = {
    "leads": "new leads",
    "won": "won",
    "lost": "lost",
    "silent_lost": "presumed silently lost",
    "revenue": "revenue",
    "revenue_new": "  from new customers (first purchase)",
    "revenue_repeat": "  from repeat purchases",
    "repeat_share": "repeat share of revenue",
    "repeat_purchases": "repeat purchases",
    "customers_new": "new customers",
    "customers_active_at_end": "active customers at end",
    "open_at_end": "open at end",
    "cycle_days": "days to win (new leads won)",
    "went_cold": "went cold waiting for a rep",
    "rep_utilization": "rep utilization",
    "marketing_cost": "marketing cost",
    "sales_cost": "sales cost (reps)",
    "cac": "CAC (cost per new customer)",
    "cac_marketing": "  marketing only",
    "ltv": "LTV (gross margin per new customer)",
    "ltv_to_cac": "LTV : CAC",
    "payback_months": "payback (months)",
    "roi": "ROI",
}
_MONEY = {
    "revenue",
    "revenue_new",
    "revenue_repeat",
    "marketing_cost",
    "sales_cost",
    "cac",
    "cac_marketing",
    "ltv",
}


def _ratio_text(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:,.2f}"


_FORMATS = {
    "cycle_days": days,
    "rep_utilization": percent,
    "repeat_share": percent,
    "ltv_to_cac": _ratio_text,
    "payback_months": _ratio_text,
    "roi": percent,
}


def forecast_text(summary: dict[str, Any]) -> str:
    """The terminal report of ``funnelsim run`` from a forecast summary."""
    cur = summary["currency"]
    out = [
        f"{summary['scenario']}: {_horizon(summary)}",
        f"{summary['replications']:,} replications, seed {summary['seed']}, "
        f"engine {summary['engine']}; money in {cur}, durations in days",
        "",
        "Totals over the horizon",
    ]
    rows = []
    for metric, label in _LABELS.items():
        s = summary["totals"].get(metric)
        if s is None:
            continue
        unit = f" ({cur})" if metric in _MONEY and not label.startswith("  ") else ""
        fmt = _FORMATS.get(metric, number)
        rows.append([label + unit] + [fmt(s[k]) for k in ("mean", "p5", "p50", "p95")])
    out.append(_table(["", "mean", "P5", "P50", "P95"], rows))

    team = any("wait_days" in s for s in summary["stages"].values())
    silent = any("silent_lost" in s for s in summary["stages"].values())
    out += ["", "Funnel by stage (entries in the horizon; open at the end; mean days per stay)"]
    rows = []
    for stage, s in summary["stages"].items():
        e, o, d = s["entered"], s["open_at_end"], s["days_in_stage"]
        row = [
            stage,
            number(e["mean"]),
            f"{number(e['p5'])}-{number(e['p95'])}",
            number(o["mean"]),
            days(d["mean"]),
        ]
        if silent:
            row.append(number(s["silent_lost"]["mean"]))
        if team:
            if "wait_days" in s:
                row += [
                    days(s["wait_days"]["mean"]),
                    number(s["went_cold"]["mean"]),
                    number(s["queue_at_end"]["mean"]),
                ]
            else:
                row += ["-", "-", "-"]
        rows.append(row)
    header = ["stage", "entered", "P5-P95", "open at end", "days in stage"]
    if silent:
        header.append("silently lost")
    if team:
        header += ["wait for rep", "went cold", "queue at end"]
    out.append(_table(header, rows))

    out += [
        "",
        "By channel (means; won and revenue: deals closed in the horizon, opening pipeline "
        "included)",
    ]
    rows = []
    costs = any("cac" in s for s in summary["channels"].values())
    for channel, s in summary["channels"].items():
        won, leads = s["won"]["mean"], s["leads"]["mean"]
        row = [
            channel,
            number(leads),
            number(won),
            number(s["revenue"]["mean"]),
            f"{number(s['revenue']['p5'])}-{number(s['revenue']['p95'])}",
        ]
        if costs:
            row += [number(s["marketing_cost"]["mean"]), number(s["cac"]["mean"])]
        rows.append(row)
    header = ["channel", "new leads", "won", f"revenue ({cur})", "P5-P95"]
    if costs:
        header += [f"marketing ({cur})", f"CAC ({cur})"]
    out.append(_table(header, rows))

    out += ["", f"By {summary['period']} (means; revenue with its 90% interval)"]
    rows = []
    partial = False
    for p in summary["periods"]:
        r = p["revenue"]
        cut = _partial(p["period"], summary["start"], summary["end"])
        partial |= cut
        row = [
            p["period"] + ("*" if cut else ""),
            number(p["leads"]["mean"]),
            number(p["won"]["mean"]),
            number(r["mean"]),
            f"{number(r['p5'])}-{number(r['p95'])}",
            number(p["open_at_end"]["mean"]),
        ]
        if team:
            row += [number(p["went_cold"]["mean"]), percent(p["rep_utilization"]["mean"])]
        rows.append(row)
    header = [summary["period"], "new leads", "won", f"revenue ({cur})", "P5-P95", "open at end"]
    if team:
        header += ["went cold", "rep utilization"]
    out.append(_table(header, rows))
    if partial:
        out.append(
            f"  * partly outside the horizon ({summary['start']} to {summary['end']}, end "
            "exclusive): fewer days than a whole one"
        )
    if summary.get("targets"):
        out += ["", *target_lines(summary["targets"], cur)]
    return "\n".join(out)


def _partial(label: str, start: str, end: str) -> bool:
    """Does the calendar month, quarter ("2027-Q1") or year of ``label`` reach outside the
    horizon [start, end) (ISO dates)?"""
    year, _, part = label.partition("-")
    if not part:
        first, after = (int(year), 1), (int(year) + 1, 1)
    elif part.startswith("Q"):
        month = 3 * int(part[1:]) - 2
        first, after = (int(year), month), (int(year) + (month + 3 > 12), (month + 2) % 12 + 1)
    else:
        month = int(part)
        first, after = (int(year), month), (int(year) + (month == 12), month % 12 + 1)
    return f"{first[0]:04d}-{first[1]:02d}-01" < start or f"{after[0]:04d}-{after[1]:02d}-01" > end


def staff_text(result: dict[str, Any]) -> str:
    """The table of ``funnelsim staff``."""
    cur = result["currency"]
    max_wait, max_cold = result["max_wait_days"], result["max_cold_share"]
    limits = []
    if max_wait is not None:
        limits.append(f"mean wait <= {max_wait:g} days")
    if max_cold is not None:
        limits.append(f"at most {100 * max_cold:g}% gone cold")
    smallest = result["smallest_reps_within_limits"]
    out = [
        f"{result['scenario']}: team sizes on the same leads "
        f"({result['replications']:,} replications, seed {result['seed']}; constant teams, "
        "hiring plans left out)",
        "",
    ]
    rows = []
    for r in result["rows"]:
        marks = []
        if r["reps"] == result["best_reps"]:
            edge = r["reps"] == result["rows"][-1]["reps"] and len(result["rows"]) > 1
            marks.append("most revenue minus rep cost" + (" (largest tried)" if edge else ""))
        if limits and r["reps"] == smallest:
            marks.append("smallest with " + " and ".join(limits))
        rows.append(
            [
                str(r["reps"]),
                number(r["revenue"]["mean"]),
                f"{number(r['revenue']['p5'])}-{number(r['revenue']['p95'])}",
                number(r["won"]["mean"]),
                number(r["went_cold"]["mean"]),
                percent(r["went_cold_share"]["mean"]),
                days(r["wait_days"]["mean"]),
                percent(r["rep_utilization"]["mean"]),
                number(r["rep_cost"]),
                number(r["revenue_minus_rep_cost"]),
                "; ".join(marks),
            ]
        )
    header = [
        "reps",
        f"revenue ({cur})",
        "P5-P95",
        "won",
        "went cold",
        "cold share",
        "wait (days)",
        "utilization",
        f"rep cost ({cur})",
        "revenue - rep cost",
        "",
    ]
    out.append(_table(header, rows))
    if len(result["rows"]) > 1 and result["best_reps"] == result["rows"][-1]["reps"]:
        out.append("\nThe best size is the largest tried: try larger teams too.")
    if result["rep_per_month"] is None:
        out.append("\nSet costs.rep_per_month to rank team sizes by revenue minus rep cost.")
    if limits and smallest is None:
        out.append("\nNo team size tried has " + " and ".join(limits) + ".")
    out.append(
        "\ncold share: leads gone cold ÷ leads that reached the team (needed a rep for the "
        "first time)."
    )
    return "\n".join(out)


def fit_text(result) -> str:
    """The report of ``funnelsim fit --transactions``."""
    out = [_repeat_text(result.estimates), "", result.diagnostics]
    if result.holdout is not None:
        out += ["", holdout_text(result.holdout)]
    return "\n".join(out)


def _repeat_text(e: dict[str, Any]) -> str:
    out = [
        f"Repeat purchases as of {e['as_of']}: {e['customers']:,} "
        f"customer{'' if e['customers'] == 1 else 's'}, "
        f"{e['repeat_buyers']:,} with repeat purchases; rates per {e['unit']}",
        "",
    ]
    rows = []
    for model, block in e["models"].items():
        for name, p in block["parameters"].items():
            se = p.get("se")
            posterior = _interval(p) if "posterior_mean" in p else ""
            rows.append(
                [model, name, f"{p['mle']:.4g}", "n/a" if se is None else f"{se:.3g}", posterior]
            )
        unit = block.get("loglik_time_unit", e["unit"])
        rows.append(
            [model, f"log-likelihood (time in {unit}s)", f"{block['loglik_at_mle']:,.2f}", "", ""]
        )
    out.append(
        _table(["model", "parameter", "MLE", "se", "posterior mean [5%, 95%]"], rows, left=2)
    )
    for model, block in e["models"].items():
        if "posterior" in block:
            out.append(f"  {model}: posterior {block['posterior']}")
        if block.get("mle_converged") is False:
            out.append(
                f"  WARNING: {model}: the maximum-likelihood fit did not converge; its MLE "
                "and se are not trustworthy"
            )
    return "\n".join(out)


def _interval(p: dict[str, float], fmt: str = ".4g") -> str:
    return f"{p['posterior_mean']:{fmt}} [{p['p5']:{fmt}}, {p['p95']:{fmt}}]"


def events_fit_text(result) -> str:
    """The report of ``funnelsim fit --events`` (and ``--transactions`` with it)."""
    e = result.estimates
    par = e["parameters"]
    out = [
        f"Funnel as of {e['as_of']}: {e['leads']:,} leads since {e['history_start']} "
        f"in {count(len(e['channels']), 'channel')}, {e['open_leads']:,} still open "
        + (
            "(censored; where losses are silent, an open lead may be a dead one: see below)"
            if any(c["choice"] != "recorded" for c in e.get("losses", []))
            else "(censored: they count as 'not yet left', never as lost)"
        ),
        "  open by stage: "
        + ", ".join(f"{stage} {n:,}" for stage, n in e["open_by_stage"].items())
        + " (the scenario's opening pipeline)",
    ]
    if e.get("stale_after_days") is not None:
        out.append(
            f"  stale after {e['stale_after_days']:g} days: a stay open longer is censored there "
            "(its outcome hidden by the rule), and the scenario closes such leads as lost"
        )
    if e.get("losses"):
        out += ["", "Losses by stage (silent: leads that go nowhere are never closed in the CRM):"]
        out += [f"  {c['stage']}: {c['explanation']}" for c in e["losses"]]
    if e.get("drift"):
        out += ["", "Drift by stage (do the outcome probabilities change with the arrival month?):"]
        out += [f"  {c['stage']}: {c['explanation']}" for c in e["drift"]]
    out += ["", "Where leads go next, by stage and channel (posterior mean [5%, 95%]):"]
    rows = []
    for name, p in par.items():
        if name.startswith("p__"):
            stage, channel, outcome = name[3:].split("__")
            rows.append([stage, channel, outcome, _interval(p, ".3f")])
    out.append(_table(["stage", "channel", "next", "probability"], rows, left=3))
    out += ["", "Time in stage (days), family chosen by WAIC (ArviZ) on the completed stays:"]
    rows = []
    for d in e["durations"]:
        prefix = f"duration__{d['stage']}__{d['outcome']}__"
        fields = ", ".join(
            f"{name[len(prefix) :]} {_interval(p, '.3g')}"
            for name, p in par.items()
            if name.startswith(prefix)
        )
        rows.append([d["stage"], d["outcome"], d["family"], fields, number(d["completed_stays"])])
    out.append(
        _table(["stage", "to", "family", "parameters [5%, 95%]", "completed stays"], rows, left=4)
    )
    out += ["", "Lead arrivals per channel (posterior mean [5%, 95%] at the scenario's start):"]
    for a in e["arrivals"]:
        rate = par[f"arrivals__{a['channel']}__leads_per_month"]
        out.append(f"  {a['channel']}: {_interval(rate, ',.1f')} leads per month; {a['choice']}")
    out += ["", "Deal value per channel (lognormal; median in the log's currency):"]
    rows = [
        [
            channel,
            _interval(par[f"value__{channel}__median"], ",.0f"),
            _interval(par[f"value__{channel}__sigma"], ".3f"),
        ]
        for channel in e["channels"]
    ]
    out.append(_table(["channel", "median [5%, 95%]", "sigma [5%, 95%]"], rows, left=1))
    if "repeat" in e:
        out += ["", _repeat_text(e["repeat"])]
    out += ["", result.diagnostics]
    if result.holdout is not None:
        out += ["", holdout_text(result.holdout)]
    return "\n".join(out)


def holdout_text(h: dict[str, Any]) -> str:
    """The holdout table: predicted against actual repeat purchases."""
    out = [
        f"Holdout {h['as_of']} to {h['until']} ({h['length']:.1f} {h['unit']}s), "
        f"{h['model']} at its maximum-likelihood estimates:",
        f"  repeat purchases: predicted {h['predicted_total']:,.0f}, actual "
        f"{h['actual_total']:,.0f}; correlation over customers "
        + ("n/a" if h["correlation"] is None else f"{h['correlation']:.3f}"),
    ]
    rows = [
        [
            g["frequency"],
            number(g["customers"]),
            "n/a" if g["actual_mean"] is None else f"{g['actual_mean']:.3f}",
            "n/a" if g["predicted_mean"] is None else f"{g['predicted_mean']:.3f}",
        ]
        for g in h["by_frequency"]
    ]
    out.append(
        _table(["repeat purchases before", "customers", "actual mean", "predicted mean"], rows)
    )
    return "\n".join(out)


# ---------------------------------------------------------------- experiments


def _signed(metric: str, x: float | None) -> str:
    """A paired difference with its sign: money and counts as numbers, ROI in points."""
    if x is None or x != x:
        return "n/a"
    if metric == "roi":
        v = round(100 * x, 1)
        return "0.0 pp" if v == 0 else f"{v:+.1f} pp"
    if metric in _MONEY:
        v = round(x)
        return "0" if v == 0 else f"{v:+,.0f}"
    v = round(x, 1)
    return "0.0" if v == 0 else f"{v:+,.1f}"


def _level(metric: str, x: float | None) -> str:
    if metric == "roi":
        return percent(x)
    return number(x) if metric in _MONEY else number(x, 1)


def _metric_label(metric: str, cur: str) -> str:
    label = {"roi": "ROI", "sales_cost": "sales cost (reps)"}.get(metric, metric.replace("_", " "))
    return f"{label} ({cur})" if metric in _MONEY else label


def target_lines(targets: dict[str, Any], cur: str) -> list[str]:
    """P(target reached) of each target, as ``funnelsim run`` shows them."""
    rows = []
    for metric, t in targets.items():
        bound = "at_most" if "at_most" in t else "at_least"
        sign = "<=" if bound == "at_most" else ">="
        unit = f" {t['unit']}" if t.get("unit") in (cur, "days", "months") else ""
        fmt = _FORMATS.get(metric, number)
        rows.append(
            [
                f"{metric} {sign} {fmt(t[bound])}{unit}",
                percent(t["probability"]),
                f"± {percent(t['se'])}",
                fmt(t["mean"]),
            ]
        )
    return [
        "Targets (probability of reaching each over the horizon; ± one Monte Carlo standard error)",
        _table(["target", "P(reached)", "", "mean"], rows),
    ]


def compare_text(result: dict[str, Any]) -> str:
    """The tables of ``funnelsim compare``: per variant, the paired differences."""
    cur = result["currency"]
    out = [
        f"{result['base']['name']}: variants against the base, {result['start']} to "
        f"{result['end']} (end exclusive); money in {cur}",
        f"{result['replications']:,} replications on common random numbers (seed "
        f"{result['seed']}): replication i of each variant is paired with replication i of "
        "the base; differences are variant - base",
    ]
    for v in result["variants"]:
        what = ", ".join(v["changes"]) if v["changes"] else v["source"]
        out += ["", f"{v['name']} ({what})"]
        rows = []
        for metric, d in v["metrics"].items():
            rows.append(
                [
                    _metric_label(metric, cur),
                    _level(metric, d["base_mean"]),
                    _level(metric, d["variant_mean"]),
                    _signed(metric, d["mean"]),
                    _signed(metric, d["p5"]),
                    _signed(metric, d["p50"]),
                    _signed(metric, d["p95"]),
                    percent(d["p_greater"]),
                ]
            )
        header = ["metric", "base", "variant", "difference", "P5", "P50", "P95"]
        out.append(_table([*header, "P(variant > base)"], rows))
    return "\n".join(out)


def levers_text(result: dict[str, Any]) -> str:
    """The ranking of ``funnelsim levers``."""
    cur = result["currency"]
    base = result["base"]["revenue"]
    by_return = result["rank_by"] == "return"
    out = [
        f"{result['scenario']}: each lever improved by {percent(result['step'])} alone, "
        f"{result['start']} to {result['end']} (end exclusive); money in {cur}",
        f"{result['replications']:,} replications on common random numbers (seed "
        f"{result['seed']}); uplift = improved - base revenue, replication by replication; "
        f"ranked by {'revenue uplift per ' + cur + ' of cost' if by_return else 'revenue uplift'}",
        f"Base revenue: mean {number(base['mean'])} (P5 {number(base['p5'])}, "
        f"P95 {number(base['p95'])})",
        "",
    ]
    costs = any(r["cost"] is not None for r in result["levers"])
    rows = []
    for r in result["levers"]:
        d = r["revenue"]
        row = [
            str(r["rank"]),
            r["lever"],
            r["element"],
            _signed("revenue", d["mean"]),
            number(d["se"]),
            f"{_signed('revenue', d['p5'])} to {_signed('revenue', d['p95'])}",
            percent(d["p_greater"]),
        ]
        if costs:
            ratio = r["revenue_per_cost"]
            cost = "-" if r["cost"] is None else number(r["cost"])
            row += [cost, "-" if ratio is None else f"{ratio:,.2f}"]
        rows.append(row)
    header = ["rank", "lever", "element", f"uplift ({cur})", "± se", "P5 to P95", "P(> 0)"]
    if costs:
        header += [f"cost ({cur})", f"uplift per {cur}"]
    out.append(_table(header, rows, left=3))
    out += ["", "What each lever changes"]
    out += [f"  {r['rank']:>2}. {r['lever']}: {r['change']}" for r in result["levers"]]
    for item in result["not_applicable"]:
        out.append(f"\nNot applicable: {item['lever']}: {item['reason']}")
    if costs:
        out.append(
            "\nCost: levers.costs (for this step) plus the change in the scenario's own costs "
            "(marketing, reps), over the horizon."
            + (" Levers without a cost come last, by revenue uplift." if by_return else "")
        )
    elif by_return:
        out.append("\nNo lever has a cost: give levers.costs in the scenario to rank by return.")
    else:
        out.append(
            "\nGive a levers: section with the cost of each improvement to rank by return "
            "(--rank return)."
        )
    for note in result["notes"]:
        out.append(f"\nNote: {note}")
    return "\n".join(out)


def goal_text(result: dict[str, Any]) -> str:
    """The answer of ``funnelsim goal``, with every value tried."""
    cur = result["currency"]
    t, lever = result["target"], result["lever"]
    metric = t["metric"]
    bound = "at_most" if "at_most" in t else "at_least"
    sign = "<=" if bound == "at_most" else ">="
    unit = f" {cur}" if metric in _MONEY else ""
    fmt = _FORMATS.get(metric, number)
    multiplier = lever["kind"] == "multiplier"
    name = f"{lever['name']} (a multiplier; 1 = as now)" if multiplier else lever["name"]
    now = "" if multiplier else f" (now {lever['current']:,.6g})"

    digits = max(0, 1 - math.floor(math.log10(lever["precision"])))

    def value(x: float) -> str:
        if lever["integer"]:
            return f"{x:,.0f}"
        text = f"{x:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:,.0f}"
        return f"× {text}" if multiplier else text

    out = [
        f"{result['scenario']}: P({metric} {sign} {fmt(t[bound])}{unit}) >= "
        f"{percent(t['probability'])} over {result['start']} to {result['end']} (end exclusive)",
        f"by changing {name}{now}: searched {value(lever['min'])} to {value(lever['max'])} on "
        f"the same {result['replications']:,} replications (seed {result['seed']}); "
        f"{lever['better']} is better; precision {lever['precision']:.4g}",
        "",
    ]
    status = result["status"]
    least = "smallest" if lever["better"] == "larger" else "largest"
    if status == "found":
        short = result["just_short"]
        out.append(
            f"The {least} value that reaches the target: {value(result['value'])}, with "
            f"P = {percent(result['probability'])} (± {percent(result['probability_se'])}); at "
            f"{value(short['value'])} P = {percent(short['probability'])}."
        )
        if result.get("change"):
            out.append(f"That is: {result['change']}.")
    elif status == "at_bound":
        edge = "lower" if lever["better"] == "larger" else "upper"
        out.append(
            f"Already reached at the {edge} bound {value(result['value'])}: P = "
            f"{percent(result['probability'])}. Move --{'min' if edge == 'lower' else 'max'} "
            "to search beyond it."
        )
    else:
        best = result["best_within_bounds"]
        out.append(
            f"No value of {lever['name']} from {value(lever['min'])} to {value(lever['max'])} "
            f"reaches the target with probability {percent(t['probability'])}: the best, "
            f"{value(best['value'])}, gives P = {percent(best['probability'])} (mean {metric} "
            f"{fmt(best['mean'])}). Widen --min/--max or change another lever."
        )
    rows = [
        [value(s["value"]), percent(s["probability"]), fmt(s["mean"])]
        for s in sorted(result["steps"], key=lambda s: s["value"])
    ]
    out += ["", "Values tried", _table(["value", "P(reached)", f"mean {metric}{unit}"], rows)]
    return "\n".join(out)
