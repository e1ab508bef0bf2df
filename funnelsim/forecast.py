"""The result of a run: per-replication metrics as an xarray Dataset, and their summaries.

Metrics (per replication; per period or over the whole horizon):

* ``leads`` — new leads that arrived (the opening pipeline is not counted);
* ``won``, ``lost`` — leads that closed (opening pipeline included); ``revenue`` — deal
  values booked at close, in the scenario's currency;
* ``open_at_end`` — leads in the funnel at the end of the period (of the horizon, in totals);
* ``cycle_days`` — mean days from arrival to won, of new leads won;
* per stage: ``entered`` (entries, re-entries counted, the opening pipeline's first stay not),
  ``open_at_end``, ``days_in_stage`` (mean sampled days of the stays begun);
* per channel: ``leads``, ``won``, ``lost``, ``revenue``;
* with silent losses (a stage lists ``silent_loss``): ``silent_lost`` — leads gone with
  nothing recorded, in total, per stage (the stage they left) and per channel; not in
  ``lost``, not open.

Summaries give, over replications, the mean, the standard deviation and the 5th, 50th and
95th percentiles (linear interpolation). Periods are calendar months, or quarters or years
with ``by``; a partial first or last month is its own (shorter) period.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from funnelsim.errors import InputError

FUNNEL_METRICS = ("leads", "won", "lost", "revenue", "open_at_end", "cycle_days")
STAGE_METRICS = ("entered", "open_at_end", "days_in_stage")
SILENT_METRICS = ("silent_lost",)
TEAM_METRICS = ("went_cold", "rep_utilization")
TEAM_STAGE_METRICS = ("wait_days", "waited", "went_cold", "queue_at_end")
CHANNEL_METRICS = ("leads", "won", "lost", "revenue")
REPEAT_METRICS = (
    "revenue_new",
    "revenue_repeat",
    "repeat_share",
    "repeat_purchases",
    "customers_new",
    "customers_active_at_end",
)
ECONOMICS_METRICS = (
    "marketing_cost",
    "sales_cost",
    "cac",
    "cac_marketing",
    "ltv",
    "ltv_to_cac",
    "payback_months",
    "roi",
)
CHANNEL_ECONOMICS = ("marketing_cost", "cac", "cac_marketing")
STOCKS = ("open", "queue", "active_customers")
ALL_FUNNEL_METRICS = (
    FUNNEL_METRICS[:3] + SILENT_METRICS + FUNNEL_METRICS[3:]  # silent_lost beside lost
) + (REPEAT_METRICS + TEAM_METRICS + ECONOMICS_METRICS)
UNITS = {
    "leads": "leads",
    "won": "leads",
    "lost": "leads",
    "silent_lost": "leads",
    "revenue": "currency",
    "open_at_end": "leads",
    "cycle_days": "days",
    "entered": "entries",
    "days_in_stage": "days",
    "went_cold": "leads",
    "rep_utilization": "share of slot time",
    "wait_days": "days",
    "waited": "entries",
    "queue_at_end": "leads",
    "revenue_new": "currency",
    "revenue_repeat": "currency",
    "repeat_share": "share of revenue",
    "repeat_purchases": "purchases",
    "customers_new": "customers",
    "customers_active_at_end": "customers",
    "marketing_cost": "currency",
    "sales_cost": "currency",
    "cac": "currency per new customer",
    "cac_marketing": "currency per new customer",
    "ltv": "currency per new customer",
    "ltv_to_cac": "ratio",
    "payback_months": "months",
    "roi": "ratio",
}
PERIODS = ("month", "quarter", "year")
PERIODS_COLUMNS = ["period", "stage", "channel", "metric", "mean", "sd", "p5", "p50", "p95"]


@dataclass(frozen=True)
class Forecast:
    """A Monte Carlo forecast. ``data`` holds the raw monthly tally, one row per replication.

    Use :meth:`metrics` for the per-replication metrics as a Dataset, :meth:`summary` for
    the statistics (the content of ``summary.json``), :meth:`write` for the output files.
    """

    data: xr.Dataset
    _cache: dict[str, xr.Dataset] = field(default_factory=dict, repr=False, compare=False)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.data.attrs)

    @property
    def replications(self) -> int:
        return self.data.sizes["replication"]

    # ------------------------------------------------------------------ metrics
    def metrics(self, by: str = "month") -> xr.Dataset:
        """Per-replication metrics per period (``by``: month, quarter or year).

        Funnel-wide metrics have dims (replication, period); per-stage ones are named
        ``stage_<metric>`` with a ``stage`` dim; per-channel ones ``channel_<metric>``.
        """
        if by not in self._cache:
            self._cache[by] = _metrics(self._grouped(by), self.data.attrs)
        return self._cache[by]

    def totals(self) -> xr.Dataset:
        """Per-replication metrics over the whole horizon (dims without ``period``)."""
        return self.metrics("total").isel(period=0, drop=True)

    def _grouped(self, by: str) -> xr.Dataset:
        if by not in (*PERIODS, "total"):
            raise ValueError(f"by must be one of {', '.join(PERIODS)}; got {by!r}")
        if by == "month":
            return self.data
        labels = list(self.data.period.values)
        groups = [_group_label(label, by) for label in labels]
        names = list(dict.fromkeys(groups))
        index = np.array([names.index(g) for g in groups])
        flows = {}
        for name, var in self.data.data_vars.items():
            values = var.values
            shape = list(values.shape)
            shape[1] = len(names)
            out = np.zeros(shape)
            if name in STOCKS:  # the value at the group's last month
                for g in range(len(names)):
                    out[:, g] = values[:, np.flatnonzero(index == g)[-1]]
            else:
                for g in range(len(names)):
                    out[:, g] = values[:, index == g].sum(axis=1)
            flows[name] = (var.dims, out)
        return xr.Dataset(flows, coords={**self.data.coords, "period": names})

    # ------------------------------------------------------------------ summaries
    def summary(self, by: str = "month") -> dict[str, Any]:
        """Statistics over replications, as written to ``summary.json``."""
        key = f"summary:{by}"
        if key not in self._cache:
            self._cache[key] = self._summary(by)
        return self._cache[key]

    def _summary(self, by: str) -> dict[str, Any]:
        a = self.data.attrs
        out: dict[str, Any] = {
            "scenario": a["scenario"],
            "engine": a["engine"],
            "replications": self.replications,
            "seed": a["seed"],
            "funnelsim_version": a["funnelsim_version"],
            "scenario_sha256": a["scenario_sha256"],
            "currency": a["currency"],
            "start": a["start"],
            "end": a["end"],
            "period": by,
            "units": {},
            "totals": {},
            "stages": {},
            "channels": {},
            "periods": [],
        }
        out.update(self._stats_of(_stats_tables(self.metrics("total")), 0))
        periods = self.metrics(by)
        tables = _stats_tables(periods)  # every period's statistics at once
        for k, label in enumerate(periods.period.values):
            entry = self._stats_of(tables, k)
            totals = entry.pop("totals")
            out["periods"].append({"period": str(label), **totals, **entry})
        present = set(out["totals"]).union(*out["stages"].values(), *out["channels"].values())
        out["units"] = {
            m: unit.replace("currency", a["currency"]) for m, unit in UNITS.items() if m in present
        }
        return out

    @property
    def team_stages(self) -> list[str]:
        """The stages worked by the sales team (empty without a team)."""
        return [s for s in self.data.attrs.get("sales_team_stages", "").split(",") if s]

    def _stats_of(self, tables: dict[str, dict[str, np.ndarray]], k: int) -> dict[str, Any]:
        """Statistics of period ``k`` (of :func:`_stats_tables`): funnel, stages, channels."""
        team = self.team_stages
        silent = SILENT_METRICS if self.data.attrs.get("silent_loss") else ()
        return {
            "totals": {m: _pick(tables[m], k) for m in ALL_FUNNEL_METRICS if m in tables},
            "stages": {
                s: {
                    m: _pick(tables[f"stage_{m}"], k, i)
                    for m in STAGE_METRICS + silent + (TEAM_STAGE_METRICS if s in team else ())
                }
                for i, s in enumerate(self.data.stage.values.tolist())
            },
            "channels": {
                c: {
                    m: _pick(tables[f"channel_{m}"], k, i)
                    for m in CHANNEL_METRICS + silent + CHANNEL_ECONOMICS
                    if f"channel_{m}" in tables
                }
                for i, c in enumerate(self.data.channel.values.tolist())
            },
        }

    def periods_rows(self, by: str = "month") -> list[dict[str, Any]]:
        """The tidy rows of ``periods.csv`` (period "total" is the whole horizon)."""
        summary = self.summary(by)
        rows: list[dict[str, Any]] = []
        blocks = [("total", summary["totals"], summary["stages"], summary["channels"])]
        blocks += [(p["period"], p, p["stages"], p["channels"]) for p in summary["periods"]]
        for label, funnel, stages, channels in blocks:
            for m in (m for m in ALL_FUNNEL_METRICS if m in funnel):
                rows.append({"period": label, "stage": "", "channel": "", "metric": m, **funnel[m]})
            for stage, values in stages.items():
                for m in values:
                    rows.append(
                        {"period": label, "stage": stage, "channel": "", "metric": m, **values[m]}
                    )
            for channel, values in channels.items():
                for m in values:
                    rows.append(
                        {"period": label, "stage": "", "channel": channel, "metric": m, **values[m]}
                    )
        return rows

    # ------------------------------------------------------------------ files
    def write(
        self, out_dir: str | Path, *, by: str = "month", extra: dict[str, Any] | None = None
    ) -> list[Path]:
        """Write summary.json, periods.csv and forecast.nc into ``out_dir``, atomically.

        ``extra`` adds keys to summary.json (e.g. the targets' probabilities)."""
        body = {**self.summary(by), **(extra or {})}
        summary = json.dumps(body, indent=2, allow_nan=False) + "\n"
        files = {
            "summary.json": summary,
            "periods.csv": csv_text(self.periods_rows(by), PERIODS_COLUMNS),
            "forecast.nc": lambda path: self.metrics("month").to_netcdf(path, engine="scipy"),
        }
        return write_atomically(Path(out_dir), files)


def write_atomically(
    out_dir: Path,
    files: dict[str, str | Callable[[Path], Any]],
    *,
    stale: Iterable[str] = (),
) -> list[Path]:
    """Write files (text, or a function writing to a path) into ``out_dir``, as a set.

    Everything goes to a temporary folder inside ``out_dir`` first and is moved into place
    only when all files are complete; files of an earlier run are set aside meanwhile and
    put back if a move fails, so a failure leaves ``out_dir`` as it was. A file that cannot
    be written (a folder in the way, no permission, a full disk) is an :class:`InputError`
    naming it. Files named in ``stale`` but not in ``files`` (outputs of an earlier run
    that this one does not produce) are removed once the new files are in place, so the
    folder holds one run's set; other files are never touched.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".funnelsim-", dir=out_dir))
    except OSError as exc:
        raise InputError(str(out_dir), f"cannot write the output folder: {_reason(exc)}") from None
    try:
        for name, content in files.items():
            try:
                if callable(content):
                    content(staging / name)
                else:
                    (staging / name).write_text(content, encoding="utf-8")
            except OSError as exc:
                raise InputError(str(out_dir / name), f"cannot write: {_reason(exc)}") from None
        in_the_way = [name for name in files if (out_dir / name).is_dir()]
        if in_the_way:
            raise InputError(
                str(out_dir / in_the_way[0]), "is a folder; expected to write a file there"
            )
        written = _swap_in(staging, out_dir, list(files))
        for name in stale:
            target = out_dir / name
            if name not in files and Path(name).name == name and target.is_file():
                try:
                    target.unlink(missing_ok=True)
                except OSError as exc:
                    raise InputError(
                        str(target), f"cannot remove this earlier output: {_reason(exc)}"
                    ) from None
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, out_dir: Path, names: list[str]) -> list[Path]:
    """Move the staged files into ``out_dir``; on a failure undo the moves already made."""
    previous = staging / ".previous"
    previous.mkdir()
    moved: list[tuple[str, bool]] = []  # (name, whether an earlier file was set aside)
    try:
        for name in names:
            target = out_dir / name
            kept = target.exists()
            if kept:
                os.replace(target, previous / name)
            moved.append((name, kept))
            os.replace(staging / name, target)
    except OSError as exc:
        failed = out_dir / name
        for done, kept in reversed(moved):
            (out_dir / done).unlink(missing_ok=True)
            if kept:
                os.replace(previous / done, out_dir / done)
        raise InputError(str(failed), f"cannot write: {_reason(exc)}") from None
    return [out_dir / name for name in names]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def stats(values: np.ndarray) -> dict[str, float | None]:
    """Mean, sd and 5/50/95th percentiles over replications; undefined values are None."""
    return _pick(_column_stats(np.asarray(values, dtype=float).reshape(-1, 1)), 0)


_STATS = ("mean", "sd", "p5", "p50", "p95")


def _stats_tables(ds: xr.Dataset) -> dict[str, dict[str, np.ndarray]]:
    """:func:`stats` of every metric of ``ds``, for every period (and stage or channel) at
    once: {metric: {statistic: array}}."""
    return {name: _column_stats(var.values) for name, var in ds.data_vars.items()}


def _column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics over the first axis (replications) of every column; NaN values are
    left out, and a column without any is undefined (NaN)."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        return dict.fromkeys(_STATS, np.full(values.shape[1:], np.nan))
    missing = np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        if missing.any():
            count = (~missing).sum(axis=0)
            with warnings.catch_warnings():  # all-NaN columns: undefined, NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                p5, p50, p95 = np.nanpercentile(values, [5, 50, 95], axis=0)
                mean = np.nanmean(values, axis=0)
                sd = np.where(count > 1, np.nanstd(values, axis=0, ddof=1), 0.0)
            sd = np.where(count == 0, np.nan, sd)
        else:
            p5, p50, p95 = np.percentile(values, [5, 50, 95], axis=0)
            mean = values.mean(axis=0)
            sd = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return dict(zip(_STATS, (mean, sd, p5, p50, p95), strict=True))


def _pick(table: dict[str, np.ndarray], *index: int) -> dict[str, float | None]:
    """One entry of a statistics table: floats, None where undefined (as :func:`stats`)."""
    picked = {k: float(v[index]) for k, v in table.items()}
    if np.isnan(picked["mean"]):
        return dict.fromkeys(_STATS)
    return {k: _f(v) for k, v in picked.items()}


def _f(x: float) -> float:
    x = float(x)
    return 0.0 if x == 0 else x


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as CSV text (columns: the first row's keys by default); None is an empty cell."""
    if columns is None:
        if not rows:
            return ""
        columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in columns})
    return buffer.getvalue()


def _group_label(month: str, by: str) -> str:
    if by == "month":
        return month
    if by == "total":
        return "total"
    year, m = month.split("-")
    return year if by == "year" else f"{year}-Q{(int(m) - 1) // 3 + 1}"


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _metrics(raw: xr.Dataset, attrs: dict[str, Any]) -> xr.Dataset:
    rp, rps, rpc = (
        ("replication", "period"),
        ("replication", "period", "stage"),
        (
            "replication",
            "period",
            "channel",
        ),
    )
    v = {name: raw[name].values for name in raw.data_vars}
    out = {
        "leads": (rp, v["leads"].sum(axis=2)),
        "won": (rp, v["won"].sum(axis=2)),
        "lost": (rp, v["lost"].sum(axis=2)),
        "revenue": (rp, v["revenue"].sum(axis=2)),
        "open_at_end": (rp, v["open"].sum(axis=2)),
        "cycle_days": (rp, _ratio(v["cycle_days"].sum(axis=2), v["cycle_count"].sum(axis=2))),
        "stage_entered": (rps, v["entered"]),
        "stage_open_at_end": (rps, v["open"]),
        "stage_days_in_stage": (rps, _ratio(v["stay_days"], v["entered"] - v.get("unserved", 0))),
        "channel_leads": (rpc, v["leads"]),
        "channel_won": (rpc, v["won"]),
        "channel_lost": (rpc, v["lost"]),
        "channel_revenue": (rpc, v["revenue"]),
    }
    if attrs.get("silent_loss"):
        out.update(
            {
                "silent_lost": (rp, v["silent_lost"].sum(axis=2)),
                "stage_silent_lost": (rps, v["silent_lost_by_stage"]),
                "channel_silent_lost": (rpc, v["silent_lost"]),
            }
        )
    if "repeat_revenue" in v:
        new = v["revenue"] + v["first_payment"]
        repeat = v["repeat_revenue"].sum(axis=2) + v["existing_revenue"]
        total = new.sum(axis=2) + repeat
        out.update(
            {
                "revenue": (rp, total),
                "revenue_new": (rp, new.sum(axis=2)),
                "revenue_repeat": (rp, repeat),
                "repeat_share": (rp, _ratio(repeat, total)),
                "repeat_purchases": (rp, v["repeat_purchases"]),
                "customers_new": (rp, v["won"].sum(axis=2)),
                "customers_active_at_end": (rp, v["active_customers"]),
                "channel_revenue": (rpc, new + v["repeat_revenue"]),
            }
        )
    if "marketing_cost" in v:
        from funnelsim.economics import metrics as economics

        for name, values in economics(v, attrs).items():
            out[name] = (rpc if name.startswith("channel_") else rp, values)
    if attrs.get("sales_team_stages"):
        out.update(
            {
                "went_cold": (rp, v["cold"].sum(axis=2)),
                "rep_utilization": (rp, _ratio(v["busy_slot_days"], v["slot_days"])),
                "stage_wait_days": (rps, _ratio(v["wait_days"], v["entered"])),
                "stage_waited": (rps, v["waited"]),
                "stage_went_cold": (rps, v["cold"]),
                "stage_queue_at_end": (rps, v["queue"]),
            }
        )
    ds = xr.Dataset(
        out, coords={k: raw.coords[k] for k in ("replication", "period", "stage", "channel")}
    )
    for name in ds.data_vars:
        base = name.split("_", 1)[1] if name.startswith(("stage_", "channel_")) else name
        unit = UNITS.get(base, "")
        ds[name].attrs["units"] = attrs.get("currency", "") if unit == "currency" else unit
    ds.attrs.update(attrs)
    return ds


def from_tally(tally_arrays: dict[str, np.ndarray], *, labels, stages, channels, attrs) -> Forecast:
    """Build a Forecast from the engines' tally arrays (R × P × C or S)."""
    from funnelsim.engine.common import TALLY_DIMS

    dims = {
        "channel": ("replication", "period", "channel"),
        "stage": ("replication", "period", "stage"),
        "funnel": ("replication", "period"),
    }
    kind = {**TALLY_DIMS, "marketing_cost": "channel", "sales_cost": "funnel"}
    data = {name: (dims[kind[name]], values) for name, values in tally_arrays.items()}
    reps = next(iter(tally_arrays.values())).shape[0]
    ds = xr.Dataset(
        data,
        coords={
            "replication": np.arange(reps),
            "period": list(labels),
            "stage": list(stages),
            "channel": list(channels),
        },
        attrs=attrs,
    )
    return Forecast(ds)


ProgressCallback = Callable[[int, int], None]
"""Called with (replications done, replications in all) as the run advances."""
