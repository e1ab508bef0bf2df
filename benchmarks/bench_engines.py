"""Benchmark funnelsim's engines against a hand-written SimPy funnel, and the CLI's run.

One run measures, on the same machine and the same scenario (2 channels, ~3,000 leads a
month, 4 stages, one year: ~36,000 new leads per replication):

* a straightforward hand-written SimPy model (one process per lead, NumPy draws) -- the
  baseline;
* funnelsim's DES and vectorized engines, each on one worker (``montecarlo.run(...,
  workers=1)``), as new leads simulated per second of wall time and as ratios to the
  baseline;
* the wall time of ``funnelsim run scenarios/b2b_saas.yaml`` (best of 3) and the peak
  memory of the same command with ``--replications 10000``.

It prints figures, ratios and the issue's targets with PASS/MISS; it asserts nothing.

    python benchmarks/bench_engines.py            # the full run (about a minute)
    python benchmarks/bench_engines.py --quick    # a smoke test (a few seconds)
    python benchmarks/bench_engines.py --profile  # also cProfile the vectorized engine
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import simpy

import funnelsim
from funnelsim import montecarlo
from funnelsim.scenario import DAYS_PER_MONTH, add_months

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLI_SCENARIO = REPO / "scenarios" / "b2b_saas.yaml"
MB = 1024 * 1024

# Targets of the issue, on the 2-core development machine.
TARGET_VECTORIZED_RATIO = 100.0  # vectorized leads/s ≥ 100 × the hand-written SimPy loop
TARGET_DES_RATIO = 1.0  # DES at least as fast as the hand-written loop
TARGET_CLI_SECONDS = 3.0  # `funnelsim run scenarios/b2b_saas.yaml` (1,000 replications)
TARGET_PEAK_MB = 500.0  # the same with --replications 10000

# The benchmark scenario: no loops, no opening pipeline, fixed volumes and probabilities, so
# the hand-written model below is exactly the same model. Both read this dict.
SCENARIO = {
    "version": 1,
    "name": "benchmark",
    "start": "2027-01-01",
    "months": 12,
    "currency": "USD",
    "seed": 2027,
    "channels": {
        "web": {"leads_per_month": 2000},
        "events": {"leads_per_month": 1000},
    },
    "stages": {
        "new": {
            "duration": {"dist": "exponential", "mean": 3},
            "next": {"qualified": 0.4, "lost": 0.6},
        },
        "qualified": {
            "duration": {"dist": "lognormal", "median": 10, "sigma": 0.5},
            "next": {"proposal": 0.5, "lost": 0.5},
        },
        "proposal": {
            "duration": {"dist": "gamma", "mean": 14, "shape": 2},
            "next": {"negotiation": 0.5, "won": 0.1, "lost": 0.4},
        },
        "negotiation": {
            "duration": {
                "won": {"dist": "gamma", "mean": 20, "shape": 3},
                "lost": {"dist": "exponential", "mean": 15},
            },
            "next": {"won": 0.5, "lost": 0.5},
        },
    },
    "deal_value": {"dist": "lognormal", "median": 9000, "sigma": 0.6},
}


# ---------------------------------------------------------------- the hand-written baseline


def _sampler(spec: dict, rng: np.random.Generator):
    """A function drawing from one of the scenario's distributions with ``rng``."""
    if spec["dist"] == "exponential":
        mean = spec["mean"]
        return lambda: rng.exponential(mean)
    if spec["dist"] == "lognormal":
        mu, sigma = math.log(spec["median"]), spec["sigma"]
        return lambda: rng.lognormal(mu, sigma)
    if spec["dist"] == "gamma":
        shape, scale = spec["shape"], spec["mean"] / spec["shape"]
        return lambda: rng.gamma(shape, scale)
    raise ValueError(f"the hand-written model does not know {spec['dist']!r}")


def simpy_replication(data: dict, rng: np.random.Generator) -> dict[str, float]:
    """One replication of the funnel, written the obvious way: one SimPy process per lead.

    Arrivals are a Poisson process per channel (exponential gaps at leads_per_month per
    average month); a lead draws each stage's outcome and duration as it enters the stage,
    waits, and is counted won or lost when it closes before the horizon.
    """
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
    counts = {"leads": 0, "won": 0, "lost": 0, "revenue": 0.0}
    env = simpy.Environment()

    def lead(env):
        stage = first_stage
        while True:
            outcomes, cumulative, durations = stages[stage]
            u = rng.random()
            outcome = outcomes[-1]
            for o, c in zip(outcomes, cumulative, strict=True):
                if u < c:
                    outcome = o
                    break
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
    return counts


# ---------------------------------------------------------------- measurements


@dataclass
class Timing:
    name: str
    replications: int
    seconds: float
    leads: float  # new leads simulated, all replications
    won: np.ndarray  # per replication

    @property
    def leads_per_second(self) -> float:
        return self.leads / self.seconds


def time_simpy(replications: int, seed: int) -> Timing:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(replications)]
    started = time.perf_counter()
    results = [simpy_replication(SCENARIO, rng) for rng in rngs]
    seconds = time.perf_counter() - started
    leads = sum(r["leads"] for r in results)
    won = np.array([r["won"] for r in results], dtype=float)
    return Timing("hand-written SimPy", replications, seconds, leads, won)


def time_engine(scenario, engine: str, replications: int) -> tuple[Timing, object]:
    started = time.perf_counter()
    forecast = montecarlo.run(scenario, replications=replications, workers=1, engine=engine)
    seconds = time.perf_counter() - started
    totals = forecast.totals()
    leads = float(totals["leads"].sum())
    won = np.asarray(totals["won"].values, dtype=float)
    return Timing(f"funnelsim {engine}", replications, seconds, leads, won), forecast


def time_vectorized(scenario, replications: int, min_seconds: float) -> tuple[Timing, object]:
    """At least ``replications``, more if needed for the timing to last ``min_seconds``."""
    timing, forecast = time_engine(scenario, "vectorized", replications)
    if timing.seconds < min_seconds:
        more = math.ceil(replications * 1.2 * min_seconds / timing.seconds)
        timing, forecast = time_engine(scenario, "vectorized", more)
    return timing, forecast


def funnelsim_command() -> list[str]:
    beside = Path(sys.executable).with_name("funnelsim")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("funnelsim")
    return [found] if found else [sys.executable, "-m", "funnelsim"]


def time_cli(scenario: Path, repeats: int, extra: list[str]) -> list[float]:
    """Wall seconds of ``funnelsim run SCENARIO [EXTRA]``, one per repeat."""
    command = [*funnelsim_command(), "run", str(scenario), *extra]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return times


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _rss_kb(pid: int) -> int:
    """Resident set size of a process in kB (cheap: /proc/PID/statm); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size in kB (shared pages divided among their users); 0 if gone.

    Reading smaps_rollup walks the process's page tables: about 1 ms, so it is sampled
    less often than the RSS.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


@dataclass
class Memory:
    largest_rss_mb: float  # the largest single process of the tree (exact, from rusage)
    tree_rss_mb: float  # sampled peak of the sum over the process tree (counts shared pages)
    tree_pss_mb: float  # sampled peak of the sum of proportional set sizes (shared split)
    seconds: float


def measure_memory(scenario: Path, replications: int) -> Memory:
    """Peak memory of ``funnelsim run SCENARIO --replications N`` and its worker processes.

    The exact peak RSS of the largest process comes from ``wait4``'s rusage (the command and
    its waited-for children). The totals over the process tree are sampled from /proc: the
    list of processes every 0.5 s, their RSS every 20 ms and their PSS every 0.2 s, which
    costs the measured run about 1% of a core.
    """
    command = [*funnelsim_command(), "run", str(scenario), "--replications", str(replications)]
    sampling = os.path.exists(f"/proc/{os.getpid()}/statm")
    peak_rss = peak_pss = 0
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        tick, pids = 0, [proc.pid]
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if sampling:
                if tick % 25 == 0:
                    pids = _tree(proc.pid)
                peak_rss = max(peak_rss, sum(_rss_kb(p) for p in pids))
                if tick % 10 == 0:
                    peak_pss = max(peak_pss, sum(_pss_kb(p) for p in pids))
            tick += 1
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{message}")
    largest = usage.ru_maxrss / 1024  # kB on Linux
    return Memory(largest, peak_rss / 1024, peak_pss / 1024, seconds)


# ---------------------------------------------------------------- reporting


def machine_info() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"platform:  {platform.platform()}",
        f"cpu:       {cpu}",
        f"cores:     {os.cpu_count()} (usable by this process: {usable})",
        f"python:    {platform.python_version()} ({platform.python_implementation()})",
        f"numpy:     {np.__version__}   simpy: {simpy.__version__}   "
        f"funnelsim: {funnelsim.__version__}",
        "load:      {:.2f} {:.2f} {:.2f} (1, 5, 15 min; timings need an idle machine)".format(
            *os.getloadavg()
        ),
    ]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def mean_se(values: np.ndarray) -> tuple[float, float]:
    se = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(se)


def profile_vectorized(scenario, replications: int, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    montecarlo.run(scenario, replications=replications, workers=1, engine="vectorized")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 1 SimPy and 1 DES replication, 5 vectorized, and the CLI with "
        "20 and 100 replications (its figures are not comparable with the targets)",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_CLI_SCENARIO,
        help="scenario file for the CLI wall time and memory (default: scenarios/b2b_saas.yaml)",
    )
    parser.add_argument("--seed", type=int, default=SCENARIO["seed"], help="seed of all runs")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI wall time and memory")
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of the vectorized engine"
    )
    args = parser.parse_args(argv)

    simpy_reps, des_reps, vec_reps, min_seconds = 3, 3, 100, 1.0
    cli_repeats, cli_extra, memory_reps = 3, [], 10_000
    if args.quick:
        simpy_reps, des_reps, vec_reps, min_seconds = 1, 1, 5, 0.0
        cli_repeats, cli_extra, memory_reps = 1, ["--replications", "20"], 100

    print(
        "# funnelsim engine benchmark"
        + (" (--quick: figures not comparable)" if args.quick else "")
    )
    print()
    for line in machine_info():
        print(line)
    print()
    data = dict(SCENARIO, seed=args.seed)
    scenario = funnelsim.scenario_from_dict(data)
    per_month = sum(c["leads_per_month"] for c in data["channels"].values())
    print(
        f"scenario:  {len(data['channels'])} channels, {per_month:,} leads/month, "
        f"{len(data['stages'])} stages ({' -> '.join(data['stages'])}), "
        f"{data['months']} months from {data['start']}"
    )
    print()
    rows: list[tuple[str, str, str, str]] = []  # the summary table

    # warm up: imports, lazy scipy imports, first-call costs
    montecarlo.run(scenario, replications=1, workers=1, engine="vectorized")
    montecarlo.run(scenario, replications=1, workers=1, engine="des")
    simpy_replication(data, np.random.default_rng(0))

    print("## Engines, one worker, same scenario")
    print()
    base = time_simpy(simpy_reps, args.seed)
    des, _ = time_engine(scenario, "des", des_reps)
    vec, vec_forecast = time_vectorized(scenario, vec_reps, min_seconds)
    header = (
        f"{'model':<22}{'reps':>6}{'seconds':>10}{'leads/rep':>11}{'leads/s':>13}{'vs SimPy':>10}"
    )
    print(header)
    print("-" * len(header))
    for t in (base, des, vec):
        ratio = t.leads_per_second / base.leads_per_second
        print(
            f"{t.name:<22}{t.replications:>6}{t.seconds:>10.3f}"
            f"{t.leads / t.replications:>11,.0f}{t.leads_per_second:>13,.0f}{ratio:>9.1f}x"
        )
    print()
    rows.append(("hand-written SimPy, leads/s", f"{base.leads_per_second:,.0f}", "baseline", ""))
    for t, target in ((des, TARGET_DES_RATIO), (vec, TARGET_VECTORIZED_RATIO)):
        ratio = t.leads_per_second / base.leads_per_second
        status = verdict(ratio >= target)
        print(f"{t.name} / SimPy: {ratio:.2f}x   target >= {target:g}x   {status}")
        rows.append(
            (
                f"{t.name.removeprefix('funnelsim ')} engine (1 worker), leads/s",
                f"{t.leads_per_second:,.0f} ({ratio:.2f}×)",
                f"≥ {target:g}×",
                status,
            )
        )
    print()

    print("## Same model? (won deals per replication, closed before the horizon)")
    print()
    for t in (base, des, vec):
        mean, se = mean_se(t.won)
        print(f"{t.name:<22} mean won {mean:9.1f}  ± {se:6.1f} (s.e., {t.replications} reps)")
    m_base, se_base = mean_se(base.won)
    m_vec, se_vec = mean_se(vec.won)
    if base.won.size > 1:
        z = (m_base - m_vec) / math.hypot(se_base, se_vec)
        print(f"SimPy − vectorized: {m_base - m_vec:+.1f} won ({z:+.2f} standard errors)")
    same = np.array_equal(des.won, vec.won[: des.won.size])
    print(
        "DES and vectorized won counts identical replication by replication "
        f"(first {des.won.size}): {'yes' if same else 'NO'}"
    )
    leads_rep = float(vec_forecast.totals()["leads"].mean())
    print(f"new leads per replication (vectorized mean): {leads_rep:,.0f}")
    print()

    print("## `funnelsim run` (subprocess, default workers)")
    print()
    name = args.scenario.name
    if args.no_cli or not args.scenario.exists():
        why = "--no-cli" if args.no_cli else f"{args.scenario} does not exist"
        print(f"skipped: {why} (point --scenario at a scenario file)")
        rows.append(
            (f"`funnelsim run {name}` wall", f"skipped: {why}", f"< {TARGET_CLI_SECONDS:g} s", "")
        )
        rows.append(
            (
                f"peak memory, `--replications {memory_reps}`",
                "skipped",
                f"< {TARGET_PEAK_MB:g} MB",
                "",
            )
        )
    else:
        command = " ".join(["funnelsim run", str(args.scenario), *cli_extra])
        times = time_cli(args.scenario, cli_repeats, cli_extra)
        best = min(times)
        status = "n/a" if args.quick else verdict(best < TARGET_CLI_SECONDS)
        shown = ", ".join(f"{s:.2f}" for s in times)
        print(f"{command}: best of {cli_repeats} {best:.2f} s (runs: {shown})")
        print(f"  target < {TARGET_CLI_SECONDS:g} s (as shipped, 1,000 replications)  {status}")
        rows.append(
            (
                f"`funnelsim run {name}` wall, best of {cli_repeats}",
                f"{best:.2f} s",
                f"< {TARGET_CLI_SECONDS:g} s",
                status,
            )
        )
        memory = measure_memory(args.scenario, memory_reps)
        peak = max(memory.largest_rss_mb, memory.tree_rss_mb)
        status = "n/a" if args.quick else verdict(peak < TARGET_PEAK_MB)
        print(f"funnelsim run {args.scenario} --replications {memory_reps}:")
        print(f"  wall time:                                 {memory.seconds:7.2f} s")
        print(f"  peak RSS, largest process (rusage):        {memory.largest_rss_mb:7.1f} MB")
        if memory.tree_rss_mb:
            print(f"  peak RSS, whole process tree (sampled):    {memory.tree_rss_mb:7.1f} MB")
            print(f"  peak PSS, whole process tree (sampled):    {memory.tree_pss_mb:7.1f} MB")
        print(f"  target < {TARGET_PEAK_MB:g} MB (the larger RSS figure)  {status}")
        rows.append(
            (
                f"peak RSS (process tree), `--replications {memory_reps}`",
                f"{peak:.0f} MB",
                f"< {TARGET_PEAK_MB:g} MB",
                status,
            )
        )
    print()

    if args.profile:
        print("## cProfile of the vectorized engine")
        print()
        print(profile_vectorized(scenario, min(vec.replications, 100)))

    print("## Summary (Markdown)")
    print()
    print("| measure | result | target | |")
    print("|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"{base.replications} SimPy, {des.replications} DES and {vec.replications} vectorized "
        f"replications of ~{leads_rep:,.0f} new leads; Python {platform.python_version()}, "
        f"numpy {np.__version__}, {os.cpu_count()} cores."
    )


if __name__ == "__main__":
    main()
