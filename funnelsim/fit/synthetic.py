"""Simulated CRM histories: what a CRM would hold if a scenario were the truth.

:func:`history_rows` runs one replication of a scenario in funnelsim's own event-driven
engine (:func:`funnelsim.engine.des.trace`) and writes every stage entry and close as the
rows of a stage-history export, ``lead_id,channel,stage,entered_at[,value]``. Used by the
recovery tests and by ``scenarios/history/make_crm_history.py``.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from funnelsim import streams
from funnelsim.engine.des import trace
from funnelsim.funnel import compile_funnel
from funnelsim.scenario import Scenario


def history_rows(scenario: Scenario, *, seed: int = 1) -> list[tuple[str, str, str, str, str]]:
    """The stage history of one simulated replication (all of its horizon), in time order.

    ``entered_at`` is a timestamp to the second; a won row carries the deal's value.
    """
    funnel = compile_funnel(scenario)
    key = int(streams.replication_keys(seed, np.arange(1))[0])
    events = trace(funnel, key)
    start = datetime(scenario.start.year, scenario.start.month, scenario.start.day)
    rows = []
    for lead, channel, stage, t, value in zip(
        events.lead, events.channel, events.stage, events.t, events.value, strict=True
    ):
        name = funnel.target_name(int(stage))
        when = start + timedelta(seconds=round(float(t) * 86400))
        rows.append(
            (
                f"L{lead:06d}",
                funnel.channels[int(channel)],
                name,
                when.isoformat(sep=" "),
                f"{value:.2f}" if name == "won" else "",
            )
        )
    return rows


def write_history(scenario: Scenario, path: str | Path, *, seed: int = 1) -> int:
    """Write the simulated history as a CSV; returns the number of rows."""
    rows = history_rows(scenario, seed=seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lead_id", "channel", "stage", "entered_at", "value"])
        writer.writerows(rows)
    return len(rows)
