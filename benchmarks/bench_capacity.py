"""Benchmark funnelsim's DES on a sales-team scenario against a hand-written SimPy model.

One run measures, on the same machine and the same capacity scenario (2 channels, 2,000
leads a month, new -> qualified -> proposal, `qualified` worked by a team of 12 reps with 25
slots each, exponential patience, one year: ~24,000 new leads per replication):

* a hand-written SimPy model -- one process per lead, a ``simpy.Resource`` for the team's
  slots, patience as a race ``yield request | env.timeout(patience)`` -- the baseline;
* funnelsim's DES (``montecarlo.run(..., workers=1, engine="des")``) on the same scenario,
  as new leads simulated per second of wall time and as a ratio to the baseline;
* the speed-up of the same funnelsim run from one worker to two, on enough replications
  that the one-worker run takes 10 s or more.

It also checks that the two models agree (won, lost, went cold, rep utilization per
replication) and that one and two workers give identical results, and reports the time
funnelsim spends in Python's cyclic garbage collector. Each measurement is taken twice,
alternating, and the fastest kept. It prints figures, ratios and the issue's targets with
PASS/MISS; it asserts nothing.

    python benchmarks/bench_capacity.py            # the full run (about 1-2 minutes)
    python benchmarks/bench_capacity.py --quick    # a smoke test (a few seconds)
    python benchmarks/bench_capacity.py --profile  # also cProfile funnelsim's DES
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import simpy
from bench_engines import _sampler, machine_info, mean_se, verdict

import funnelsim
from funnelsim import montecarlo
from funnelsim.scenario import DAYS_PER_MONTH, add_months

# Targets of the issue, on the 2-core development machine.
TARGET_DES_RATIO = 2.0  # funnelsim's DES leads/s ≥ 2 × the hand-written SimPy model
TARGET_SPEEDUP = 1.8  # funnelsim's DES, 2 workers vs 1, on a run of 10 s or more
MIN_SCALING_SECONDS = 10.0  # the one-worker run of the scaling measurement lasts at least this

# The capacity scenario. One rep-worked stage (`qualified`), no loops, no opening pipeline,
# no hiring, no skill, fixed volumes and probabilities: every lead reaches the rep-worked
# stage at most once, so it never has a rep yet when it gets there and funnelsim's team is
# exactly one pool of reps × leads_per_rep slots with one first-in first-out queue -- the
# hand-written model below (one simpy.Resource) is the same model. Both read this dict.
# Offered load on the team: 1,000 leads a month into `qualified` (32.9 a day) × 9.06 days
# (lognormal median 8, sigma 0.5) = 298 busy slots on average against 300 slots; with
# patience (exponential, mean 10 days) some go cold and utilization settles near 95%.
CAPACITY = {
    "version": 1,
    "name": "capacity benchmark",
    "start": "2027-01-01",
    "months": 12,
    "currency": "USD",
    "seed": 2027,
    "channels": {
        "web": {"leads_per_month": 1400},
        "referrals": {"leads_per_month": 600},
    },
    "stages": {
        "new": {
            "duration": {"dist": "exponential", "mean": 2},
            "next": {"qualified": 0.5, "lost": 0.5},
        },
        "qualified": {
            "duration": {"dist": "lognormal", "median": 8, "sigma": 0.5},
            "next": {"proposal": 0.5, "lost": 0.5},
        },
        "proposal": {
            "duration": {
                "won": {"dist": "gamma", "mean": 20, "shape": 2},
                "lost": {"dist": "exponential", "mean": 10},
            },
            "next": {"won": 0.4, "lost": 0.6},
        },
    },
    "deal_value": {"dist": "lognormal", "median": 9000, "sigma": 0.6},
    "sales_team": {
        "reps": 12,
        "leads_per_rep": 25,
        "stages": ["qualified"],
        "patience": {"dist": "exponential", "mean": 10},
        "queue": "fifo",
    },
}

METRICS = ("won", "lost", "went_cold", "rep_utilization")


# ---------------------------------------------------------------- the hand-written baseline


def simpy_replication(data: dict, rng: np.random.Generator) -> dict[str, float]:
    """One replication of the capacity scenario, written the obvious way in SimPy.

    One process per lead; the team's slots are one ``simpy.Resource`` with capacity
    reps × leads_per_rep (its queue is first-in first-out). A lead entering the rep-worked
    stage requests a slot and races the request against its patience; if the patience runs
    out first it withdraws the request and goes cold (lost). Otherwise it holds the slot for
    the stage's duration. Outcomes and durations are drawn as in ``bench_engines.py``.
    """
    team = data["sales_team"]
    if len(team["stages"]) != 1 or team.get("queue", "fifo") != "fifo":
        raise ValueError("the hand-written model has one rep-worked stage and a fifo queue")
    worked = team["stages"][0]
    start = date.fromisoformat(data["start"])
    horizon = float((add_months(start, data["months"]) - start).days)
    stages = {}
    for name, stage in data["stages"].items():
        outcomes = list(stage["next"])
        cumulative = np.cumsum([stage["next"][o] for o in outcomes]).tolist()
        duration = stage["duration"]
        if "dist" in duration:
            durations = {o: _sampler(duration, rng) for o in outcomes}
        else:
            durations = {o: _sampler(duration[o], rng) for o in outcomes}
        stages[name] = (outcomes, cumulative, durations)
    first_stage = next(iter(stages))
    deal_value = _sampler(data["deal_value"], rng)
    patience = _sampler(team["patience"], rng)
    capacity = team["reps"] * team["leads_per_rep"]
    counts = {"leads": 0, "won": 0, "lost": 0, "went_cold": 0, "revenue": 0.0, "busy": 0.0}
    env = simpy.Environment()
    slots = simpy.Resource(env, capacity=capacity)

    def draw(outcomes, cumulative):
        u = rng.random()
        for o, c in zip(outcomes, cumulative, strict=True):
            if u < c:
                return o
        return outcomes[-1]

    def lead(env):
        stage = first_stage
        while True:
            outcomes, cumulative, durations = stages[stage]
            if stage == worked:
                with slots.request() as request:
                    got = yield request | env.timeout(patience())
                    if request not in got:  # patience ran out first: cold (the with cancels)
                        counts["went_cold"] += 1
                        counts["lost"] += 1
                        return
                    outcome = draw(outcomes, cumulative)
                    days = durations[outcome]()
                    counts["busy"] += min(days, horizon - env.now)  # slot-days within horizon
                    yield env.timeout(days)
                # the with released the slot
            else:
                outcome = draw(outcomes, cumulative)
                yield env.timeout(durations[outcome]())
            if outcome == "won":
                counts["won"] += 1
                counts["revenue"] += deal_value()
                return
            if outcome == "lost":
                counts["lost"] += 1
                return
            stage = outcome

    def source(env, leads_per_month):
        daily_rate = leads_per_month / DAYS_PER_MONTH
        while True:
            yield env.timeout(rng.exponential(1.0 / daily_rate))
            counts["leads"] += 1
            env.process(lead(env))

    for channel in data["channels"].values():
        env.process(source(env, channel["leads_per_month"]))
    env.run(until=horizon)  # events at or after the horizon never happen
    counts["rep_utilization"] = counts.pop("busy") / (capacity * horizon)
    return counts


# ---------------------------------------------------------------- measurements


@dataclass
class GcTime:
    """Time spent in Python's cyclic garbage collector, and collections per generation."""

    seconds: float = 0.0
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])


@contextmanager
def gc_timer():
    """Measure the cyclic GC in this process (``gc.callbacks``; about 1 µs per collection).

    cProfile cannot show it: a collection is charged to whatever allocation triggered it.
    """
    found = GcTime()
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
            found.collections[info["generation"]] += 1
        else:
            found.seconds += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        yield found
    finally:
        gc.callbacks.remove(callback)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Run:
    name: str
    replications: int
    workers: int
    seconds: float
    leads: float  # new leads simulated, all replications
    values: dict[str, np.ndarray]  # per replication, for METRICS (and revenue)
    cpu: float = math.nan  # CPU seconds, this process and its workers
    gc: GcTime | None = None  # the cyclic GC in this process (workers not included)

    @property
    def leads_per_second(self) -> float:
        return self.leads / self.seconds

    @property
    def cores_busy(self) -> float:
        return self.cpu / self.seconds


def time_simpy(data: dict, replications: int, seed: int) -> Run:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(replications)]
    cpu = cpu_seconds()
    with gc_timer() as collector:
        started = time.perf_counter()
        results = [simpy_replication(data, rng) for rng in rngs]
        seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    values = {
        name: np.array([r[name] for r in results], dtype=float) for name in (*METRICS, "revenue")
    }
    leads = float(sum(r["leads"] for r in results))
    return Run("hand-written SimPy", replications, 1, seconds, leads, values, cpu, collector)


def time_des(scenario, replications: int, workers: int) -> Run:
    cpu = cpu_seconds()
    with gc_timer() as collector:
        started = time.perf_counter()
        forecast = montecarlo.run(
            scenario, replications=replications, workers=workers, engine="des"
        )
        seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    totals = forecast.totals()
    values = {name: np.asarray(totals[name].values, dtype=float) for name in (*METRICS, "revenue")}
    leads = float(totals["leads"].sum())
    return Run("funnelsim DES", replications, workers, seconds, leads, values, cpu, collector)


def fastest(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.seconds)


def profile_des(scenario, replications: int, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    montecarlo.run(scenario, replications=replications, workers=1, engine="des")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def load_line() -> str:
    return "load:      {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg())


# ---------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 1 SimPy and 1 DES replication, 4 for the worker scaling (its "
        "figures are not comparable with the targets)",
    )
    parser.add_argument("--seed", type=int, default=CAPACITY["seed"], help="seed of all runs")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="time each measurement this many times, alternating, and keep the fastest "
        "(default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of funnelsim's DES"
    )
    args = parser.parse_args(argv)

    head_reps, min_seconds, repeats = 5, MIN_SCALING_SECONDS, 2
    if args.quick:
        head_reps, min_seconds, repeats = 1, 0.0, 1
    if args.repeats is not None:
        repeats = max(1, args.repeats)

    print(
        "# funnelsim capacity benchmark (sales team, DES)"
        + (" (--quick: figures not comparable)" if args.quick else "")
    )
    print()
    for line in machine_info():
        print(line)
    print()
    data = dict(CAPACITY, seed=args.seed)
    scenario = funnelsim.scenario_from_dict(data)
    team = data["sales_team"]
    per_month = sum(c["leads_per_month"] for c in data["channels"].values())
    print(
        f"scenario:  {len(data['channels'])} channels, {per_month:,} leads/month, "
        f"{len(data['stages'])} stages ({' -> '.join(data['stages'])}), "
        f"{data['months']} months from {data['start']}"
    )
    print(
        f"team:      {team['reps']} reps × {team['leads_per_rep']} leads = "
        f"{team['reps'] * team['leads_per_rep']} slots on {', '.join(team['stages'])}; "
        f"patience exponential, mean {team['patience']['mean']:g} days; {team['queue']}"
    )
    print()
    rows: list[tuple[str, str, str, str]] = []  # the summary table

    # warm up: imports, lazy imports, first-call costs
    montecarlo.run(scenario, replications=1, workers=1, engine="des")
    simpy_replication(data, np.random.default_rng(0))

    print("## Hand-written SimPy vs funnelsim's DES, one worker, same scenario")
    print()
    print(f"each timed {repeats} time(s), alternating; the fastest is kept")
    print()
    bases, dess = [], []
    for _ in range(repeats):
        bases.append(time_simpy(data, head_reps, args.seed))
        dess.append(time_des(scenario, head_reps, 1))
    base, des = fastest(bases), fastest(dess)
    header = (
        f"{'model':<22}{'reps':>6}{'seconds':>10}{'leads/rep':>11}{'leads/s':>13}{'vs SimPy':>10}"
        f"{'in GC':>15}"
    )
    print(header)
    print("-" * len(header))
    for t in (base, des):
        ratio = t.leads_per_second / base.leads_per_second
        in_gc = f"{t.gc.seconds:.3f} s ({t.gc.seconds / t.seconds:.0%})"
        print(
            f"{t.name:<22}{t.replications:>6}{t.seconds:>10.3f}"
            f"{t.leads / t.replications:>11,.0f}{t.leads_per_second:>13,.0f}{ratio:>9.2f}x"
            f"{in_gc:>15}"
        )
    print()
    for t in (base, des):
        print(
            f"{t.name}: cyclic GC collections by generation 0/1/2: "
            + "/".join(str(n) for n in t.gc.collections)
        )
    print()
    ratio = des.leads_per_second / base.leads_per_second
    status = "n/a" if args.quick else verdict(round(ratio, 2) >= TARGET_DES_RATIO)
    print(f"funnelsim DES / SimPy: {ratio:.2f}x   target >= {TARGET_DES_RATIO:g}x   {status}")
    print()
    rows.append(
        (
            "hand-written SimPy (1 process/lead, `simpy.Resource`), leads/s",
            f"{base.leads_per_second:,.0f}",
            "baseline",
            "",
        )
    )
    rows.append(
        (
            "funnelsim DES (1 worker), leads/s",
            f"{des.leads_per_second:,.0f} ({ratio:.2f}×)",
            f"≥ {TARGET_DES_RATIO:g}×",
            status,
        )
    )

    print("## Worker scaling: funnelsim's DES, 1 vs 2 workers, same replications")
    print()
    per_rep = des.seconds / des.replications
    scaling_reps = 4 if args.quick else max(8, math.ceil(1.25 * min_seconds / per_rep))
    scaling_reps = -(-scaling_reps // 4) * 4  # a multiple of 4: the batches split evenly
    print(load_line())
    ones, twos = [], []
    for _ in range(repeats):
        ones.append(time_des(scenario, scaling_reps, 1))
        twos.append(time_des(scenario, scaling_reps, 2))
    one, two = fastest(ones), fastest(twos)
    speedup = one.seconds / two.seconds
    for t in (one, two):
        print(
            f"workers={t.workers}: {t.replications} reps in {t.seconds:7.2f} s  "
            f"{t.leads_per_second:>11,.0f} leads/s   CPU {t.cpu:6.2f} s = "
            f"{t.cores_busy:.2f} cores busy"
        )
    if repeats > 1:
        for name, runs in (("workers=1", ones), ("workers=2", twos)):
            print(f"{name} runs: " + ", ".join(f"{t.seconds:.2f} s" for t in runs))
    long_enough = one.seconds >= min_seconds
    status = "n/a" if args.quick else verdict(round(speedup, 2) >= TARGET_SPEEDUP)
    print(
        f"speed-up 1 -> 2 workers: {speedup:.2f}x   target >= {TARGET_SPEEDUP:g}x "
        f"(one-worker run >= {MIN_SCALING_SECONDS:g} s)   {status}"
    )
    if not long_enough and not args.quick:
        print(
            f"note: the one-worker run took {one.seconds:.1f} s, under "
            f"{MIN_SCALING_SECONDS:g} s (the machine was faster than the head-to-head run)"
        )
    if not args.quick and (one.cores_busy < 0.95 or two.cores_busy < 1.9):
        print(
            "note: fewer cores busy than workers: this process got less CPU than it asked "
            "for (other work on the machine?); the wall times and speed-up are distorted"
        )
    print(load_line())
    same = all(
        np.array_equal(run.values[m], one.values[m])
        for run in (*ones, *twos)
        for m in (*METRICS, "revenue")
    )
    print(
        "1 and 2 workers (every repeat) give identical results replication by replication "
        f"(won, lost, went cold, utilization, revenue): {'yes' if same else 'NO'}"
    )
    print()
    rows.append(
        (
            f"funnelsim DES, 1 → 2 workers ({scaling_reps} reps: "
            f"{one.seconds:.1f} s → {two.seconds:.1f} s)",
            f"{speedup:.2f}×",
            f"≥ {TARGET_SPEEDUP:g}×",
            status,
        )
    )

    print("## Same model? (per replication, mean ± standard error)")
    print()
    # funnelsim's figures come from the one-worker scaling run (more replications)
    header = f"{'metric':<18}{'hand-written SimPy':>24}{'funnelsim DES':>24}{'difference':>16}"
    print(header)
    print("-" * len(header))
    for name in METRICS:
        m_base, se_base = mean_se(base.values[name])
        m_des, se_des = mean_se(one.values[name])
        if name == "rep_utilization":
            shown = (f"{m_base:.4f} ± {se_base:.4f}", f"{m_des:.4f} ± {se_des:.4f}")
        else:
            shown = (f"{m_base:,.1f} ± {se_base:.1f}", f"{m_des:,.1f} ± {se_des:.1f}")
        z = (m_base - m_des) / math.hypot(se_base, se_des) if base.replications > 1 else math.nan
        print(f"{name:<18}{shown[0]:>24}{shown[1]:>24}{z:>+12.2f} s.e.")
    print(
        f"({base.replications} SimPy and {one.replications} funnelsim replications; the "
        "models use different random numbers, so they agree within a few standard errors)"
    )
    leads_rep = one.leads / one.replications
    print(f"new leads per replication (funnelsim mean): {leads_rep:,.0f}")
    print()

    if args.profile:
        print("## cProfile of funnelsim's DES (top 25 by tottime)")
        print()
        print(
            "The cyclic GC does not appear as a line: a collection is charged to the call "
            "that allocated when it ran\n(see 'in GC' above)."
        )
        print(profile_des(scenario, head_reps))

    print("## Summary (Markdown)")
    print()
    print("| measure | result | target | |")
    print("|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"{base.replications} SimPy and {des.replications} DES replications head to head, "
        f"{scaling_reps} for the scaling, of ~{leads_rep:,.0f} new leads; fastest of "
        f"{repeats}; "
        f"Python {platform.python_version()}, simpy {simpy.__version__}, "
        f"numpy {np.__version__}, {os.cpu_count()} cores."
    )


if __name__ == "__main__":
    main()
