"""Repeat sales benchmark: 20,000 existing customers (BG/NBD + Gamma-Gamma) over 24 months.

Times, in one run: a straightforward per-customer Python simulation of the same cohort (the
baseline, a loop over customers and their purchases with NumPy scalar draws), funnelsim's
compiled cohort kernel on one worker, and `funnelsim run` on the scenario as a user
would (1,000 replications, default workers), in a warm process (the simulation) and as a
fresh `funnelsim run` process (imports and printed tables included). Prints customers per
second, the ratio, and the target: under 2 s on the 2-core development machine. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import funnelsim
from funnelsim import montecarlo
from funnelsim.customers import bg_nbd_expected_purchases

CUSTOMERS = 20_000
TARGET_SECONDS = 2.0
SCENARIO = {
    "version": 1,
    "name": "repeat benchmark",
    "start": "2027-01-01",
    "months": 24,
    "replications": 1000,
    "seed": 3,
    "currency": "USD",
    "channels": {"web": {"leads_per_month": 0}},
    "stages": {"new": {"duration": 1, "next": {"won": 0.5, "lost": 0.5}}},
    "deal_value": 30,
    "repeat": {  # the CDNOW estimates of Fader, Hardie & Lee (2005)
        "model": "bg_nbd",
        "unit": "week",
        "r": 0.243,
        "alpha": 4.414,
        "a": 0.793,
        "b": 2.426,
        "spend": {"model": "gamma_gamma", "p": 6.25, "q": 3.74, "gamma": 15.44},
    },
    "existing_customers": {"count": CUSTOMERS},
}


def baseline(rng: np.random.Generator, days: float) -> tuple[int, float]:
    """One replication, customer by customer: purchases and revenue in ``days``."""
    m = SCENARIO["repeat"]
    sp = m["spend"]
    purchases, revenue = 0, 0.0
    for _ in range(CUSTOMERS):
        lam = rng.gamma(m["r"], 1 / m["alpha"]) / 7  # per day
        p = rng.beta(m["a"], m["b"])
        nu = rng.gamma(sp["q"], 1 / sp["gamma"])
        t = 0.0
        while True:
            t += rng.exponential(1 / lam)
            if t >= days:
                break
            purchases += 1
            revenue += rng.gamma(sp["p"], 1 / nu)
            if rng.random() < p:
                break
    return purchases, revenue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test (figures not comparable)"
    )
    args = parser.parse_args(argv)
    base_reps, vec_reps, cli_reps = (1, 5, 20) if args.quick else (2, 100, 1000)

    print("# funnelsim repeat-sales benchmark" + (" (--quick)" if args.quick else ""))
    print(f"\n{CUSTOMERS:,} existing customers, BG/NBD + Gamma-Gamma (CDNOW estimates), 24 months")
    scenario = funnelsim.scenario_from_dict(SCENARIO)
    days = (scenario.end - scenario.start).days
    expected = CUSTOMERS * float(bg_nbd_expected_purchases(scenario.repeat, days / 7))

    rng = np.random.default_rng(1)
    start = time.perf_counter()
    counts = [baseline(rng, days)[0] for _ in range(base_reps)]
    base_seconds = time.perf_counter() - start
    base_rate = CUSTOMERS * base_reps / base_seconds

    montecarlo.run(scenario, replications=2, workers=1)  # warm up
    start = time.perf_counter()
    forecast = montecarlo.run(scenario, replications=vec_reps, workers=1)
    vec_seconds = time.perf_counter() - start
    vec_rate = CUSTOMERS * vec_reps / vec_seconds
    simulated = forecast.totals()["repeat_purchases"].values

    print("\n## One worker\n")
    print(f"{'model':<34}{'reps':>6}{'seconds':>10}{'customers/s':>14}{'ratio':>8}")
    print(
        f"{'per-customer Python loop':<34}{base_reps:>6}{base_seconds:>10.2f}"
        f"{base_rate:>14,.0f}{1:>7.1f}x"
    )
    print(
        f"{'funnelsim (cohort kernel)':<34}{vec_reps:>6}{vec_seconds:>10.2f}"
        f"{vec_rate:>14,.0f}{vec_rate / base_rate:>7.1f}x"
    )
    print(
        f"\nrepeat purchases per replication: expected (closed form) {expected:,.0f}; "
        f"loop {np.mean(counts):,.0f}; funnelsim {simulated.mean():,.0f} ± "
        f"{simulated.std(ddof=1) / np.sqrt(simulated.size):,.0f}"
    )

    start = time.perf_counter()
    montecarlo.run(scenario, replications=cli_reps)  # default workers: the CPU count
    sim_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "repeat.yaml"
        path.write_text(yaml.safe_dump({**SCENARIO, "replications": cli_reps}))
        command = [str(Path(sys.executable).with_name("funnelsim")), "run", str(path)]
        runs = []
        for _ in range(1 if args.quick else 3):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            runs.append(time.perf_counter() - start)
    best = min(runs)

    def status(seconds: float) -> str:
        return "PASS" if seconds < TARGET_SECONDS else "MISS"

    print(f"\n## {cli_reps:,} replications, default workers\n")
    print(f"simulation (funnelsim.run, warm process): {sim_seconds:.2f} s  {status(sim_seconds)}")
    print(f"`funnelsim run` (a fresh process: imports, simulation, tables), best of {len(runs)}: ")
    print(f"  {best:.2f} s (runs: {', '.join(f'{r:.2f}' for r in runs)})  {status(best)}")
    print(f"target < {TARGET_SECONDS:g} s")
    print("\n| measure | result | target |\n|---|---:|---:|")
    print(f"| per-customer Python loop, customers/s | {base_rate:,.0f} | baseline |")
    print(f"| funnelsim, 1 worker, customers/s | {vec_rate:,.0f} ({vec_rate / base_rate:.0f}×) | |")
    target = f"< {TARGET_SECONDS:g} s"
    print(f"| simulation, {cli_reps:,} replications | {sim_seconds:.2f} s | {target} |")
    print(f"| `funnelsim run`, {cli_reps:,} replications | {best:.2f} s | {target} |")


if __name__ == "__main__":
    main()
