"""Fitting benchmark: maximum likelihood on CDNOW and NUTS on the sample.

Times, in one run: the BG/NBD + Gamma-Gamma maximum-likelihood fits of
``funnelsim.fit.repeat`` on the CDNOW sample (2,357 customers) and on CDNOW_master (23,570),
against a baseline measured in the same run — the way an analyst would write it first:
``scipy.optimize.minimize`` (Nelder-Mead) on the per-customer log-likelihood, one term per
customer — and the NUTS fits of ``funnelsim fit --transactions`` (``--model bg_nbd`` and
``pareto_nbd``) on the sample (PyMC compile included) as subprocesses of this copy.
Targets on the 2-core development machine: MLE on the sample under 2 s, on the master under
10 s, NUTS under 60 s. Asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from funnelsim.fit import io
from funnelsim.fit import repeat as mle

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scenarios" / "history" / "cdnow_transactions.csv"
MASTER = REPO.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
AS_OF = date(1997, 9, 30)


def summary_of(path: Path):
    tx = io.read_transactions(path, allow_zero_amounts=True, allow_duplicates=True)
    s = io.summarize(tx, AS_OF)
    return s.x.astype(float), s.t_x_days / 7, s.T_days / 7, s.mean_spend


def master_csv(folder: Path) -> Path | None:
    if not MASTER.exists():
        return None
    out = folder / "master.csv"
    lines = ["customer_id,date,amount"]
    for line in MASTER.read_text().splitlines()[1:]:
        cid, day, _, amount = line.split()
        lines.append(f"{cid},{day[:4]}-{day[4:6]}-{day[6:]},{amount}")
    out.write_text("\n".join(lines) + "\n")
    return out


def funnelsim_mle(x, t_x, T, spend) -> tuple[float, float]:
    start = time.perf_counter()
    fit = mle.fit_bg_nbd(x, t_x, T)
    ok = (x > 0) & (np.nan_to_num(spend) > 0)
    mle.fit_gamma_gamma(np.where(ok, x, 0.0), spend)
    return time.perf_counter() - start, fit.loglik


def baseline_mle(x, t_x, T, spend) -> tuple[float, float]:
    """Nelder-Mead on log-parameters, the per-customer log-likelihood summed as it is."""
    start = time.perf_counter()

    def bg(theta):
        return -mle.bg_nbd_loglik(*np.exp(theta), x, t_x, T).sum()

    fit = minimize(
        bg,
        np.zeros(4),
        method="Nelder-Mead",
        options={"maxiter": 20000, "xatol": 1e-8, "fatol": 1e-8},
    )
    ok = (x > 0) & (np.nan_to_num(spend) > 0)

    def gg(theta):
        return -mle.gamma_gamma_loglik(*np.exp(theta), x[ok], spend[ok]).sum()

    minimize(
        gg,
        np.zeros(3),
        method="Nelder-Mead",
        options={"maxiter": 20000, "xatol": 1e-8, "fatol": 1e-8},
    )
    return time.perf_counter() - start, -fit.fun


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-nuts", action="store_true", help="skip the NUTS fit")
    args = parser.parse_args(argv)
    print("# funnelsim fitting benchmark\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = {"CDNOW sample (2,357 customers)": (SAMPLE, 2.0)}
        master = master_csv(Path(folder))
        if master is not None:
            data["CDNOW master (23,570 customers)"] = (master, 10.0)
        else:
            print(f"(CDNOW master not found at {MASTER}: skipped)")
        for name, (path, target) in data.items():
            x, t_x, T, spend = summary_of(path)
            base, base_ll = baseline_mle(x, t_x, T, spend)
            ours, ll = funnelsim_mle(x, t_x, T, spend)
            status = "PASS" if ours < target else "MISS"
            print(
                f"{name}: funnelsim {ours:.2f} s (log-likelihood {ll:,.2f}); "
                f"Nelder-Mead baseline {base:.2f} s ({base_ll:,.2f}); {base / ours:.0f}x; "
                f"target < {target:g} s {status}"
            )
            rows.append(
                (
                    f"BG/NBD + Gamma-Gamma MLE, {name}",
                    f"{ours:.2f} s ({base / ours:.0f}× the baseline)",
                    f"< {target:g} s",
                    status,
                )
            )
        for model in () if args.no_nuts else ("bg_nbd", "pareto_nbd"):
            command = [
                sys.executable,
                "-m",
                "funnelsim",
                "fit",
                "--transactions",
                str(SAMPLE),
                "--as-of",
                "1997-09-30",
                "--model",
                model,
                "--allow-zero-amounts",
                "--allow-duplicates",
                "--out",
                str(Path(folder) / f"fitted_{model}"),
            ]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            seconds = time.perf_counter() - start
            status = "PASS" if seconds < 60 and done.returncode == 0 else "MISS"
            print(
                f"funnelsim fit --model {model} (MLE + NUTS, 4 chains × 1,000 draws, compile "
                f"included): {seconds:.1f} s, exit {done.returncode}; target < 60 s {status}"
            )
            rows.append(
                (
                    f"`funnelsim fit --model {model}` on the sample, NUTS, compile included",
                    f"{seconds:.1f} s",
                    "< 60 s",
                    status,
                )
            )
    print("\n| measure | result | target | |\n|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
