"""The discrete-event engine (SimPy): leads move through the funnel one event at a time.

It is the general engine — the one that later carries what leads cannot do independently
(shared sales-team capacity) — and implements the same model as the vectorized engine with
the same draws, so on a scenario both can run they give the same tally.

For speed it does not run a SimPy process per lead: events are plain timeouts whose
callbacks move a lead on (arrivals are chained, one pending at a time), the draws of every
lead's first visit to each stage are made in bulk up front, and counts go into Python lists.
Pure: a funnel and replication keys in, a tally out.
"""

from __future__ import annotations

import bisect

import numpy as np
import simpy
from simpy.events import URGENT, Timeout

from funnelsim.engine.common import Leads, StayDraws, Tally, arrivals, draw_inputs, opening_leads
from funnelsim.funnel import Funnel


def simulate(funnel: Funnel, rep_keys: np.ndarray) -> Tally:
    """Simulate one replication per key; returns their tally (rows in key order)."""
    cal = funnel.calendar
    reps = len(rep_keys)
    n_stages, n_channels = len(funnel.stages), len(funnel.channels)
    tally = Tally.zeros(reps, cal.periods, n_channels, n_stages)
    inputs = draw_inputs(funnel, rep_keys)
    draws = StayDraws(funnel, inputs)
    new = arrivals(funnel, rep_keys, inputs.volume)
    opening, entry = opening_leads(funnel, rep_keys)
    open_stage = funnel.open_stage[entry]
    open_slot = np.zeros(len(opening), dtype=np.intp)
    open_days = np.zeros(len(opening))
    for s in np.unique(open_stage).tolist():
        index = np.flatnonzero(open_stage == s)
        open_slot[index], open_days[index] = draws.opening(
            s, opening.take(index), funnel.open_age[entry[index]]
        )
    open_value = funnel.open_value[entry]
    for r in range(reps):
        mine = np.flatnonzero(new.rep == r)
        mine = mine[np.argsort(new.t[mine], kind="stable")]
        run = _Replication(funnel, draws, tally, r)
        if len(opening):
            o = np.flatnonzero(opening.rep == r)
            run.add_opening(
                opening.take(o), open_stage[o], open_slot[o], open_days[o], open_value[o]
            )
        run.add_arrivals(new.take(mine))
        run.run()
    return tally


class _Replication:
    """One replication: the SimPy environment, the leads and the running counts."""

    def __init__(self, funnel: Funnel, draws: StayDraws, tally: Tally, row: int):
        self.funnel, self.draws, self.tally, self.row = funnel, draws, tally, row
        cal = funnel.calendar
        self.env = simpy.Environment()
        self.horizon = cal.horizon
        self.inner_edges = cal.edges[1:-1].tolist()
        self.n_stages = len(funnel.stages)
        self.targets = draws.targets.tolist()
        self.won_code, self.lost_code = funnel.won, funnel.lost
        periods, channels, stages = cal.periods, len(funnel.channels), self.n_stages
        self.by_channel = {
            name: [[0.0] * channels for _ in range(periods)]
            for name in ("won", "lost", "revenue", "cycle_days", "cycle_count")
        }
        self.by_stage = {
            name: [[0.0] * stages for _ in range(periods)] for name in ("entered", "stay_days")
        }
        self.occupancy = [0] * stages
        self.snapshots: list[list[int]] = []
        # lead state, filled by add_opening / add_arrivals
        self.channel: list[int] = []
        self.born: list[float] = []
        self.value: list[float] = []
        self.keys: list[np.ndarray] = []
        self.first_slot: list[np.ndarray] = []
        self.first_days: list[np.ndarray] = []
        self.visits: dict[tuple[int, int], int] = {}
        self.loops = funnel.has_loops
        for boundary in cal.edges[1:-1]:
            event = simpy.Event(self.env)
            event._ok = True
            event._value = None
            event.callbacks.append(self._snapshot)
            self.env.schedule(event, URGENT, float(boundary))

    # ---------------------------------------------------------------- setting up the leads
    def _register(self, leads: Leads, value: np.ndarray) -> int:
        """Bulk-draw the first visit of every stage for these leads; returns the first index."""
        start = len(self.channel)
        n = len(leads)
        self.channel.extend(leads.channel.tolist())
        self.value.extend(value.tolist())
        deal = self.draws.deal_value(leads.channel, leads.key)
        nan = np.isnan(value)
        value = np.where(nan, deal, value)
        self.value[start:] = value.tolist()
        slots = np.empty((n, self.n_stages), dtype=np.int64)
        days = np.empty((n, self.n_stages))
        cell = leads.rep * self.draws.channels + leads.channel
        for s in range(self.n_stages):
            slots[:, s] = self.draws.outcome(s, cell, leads.key)
            days[:, s] = self.draws.duration(s, slots[:, s], cell, leads.key)
        self.keys.append(leads.key)
        self.first_slot.extend(slots.tolist())
        self.first_days.extend(days.tolist())
        return start

    def add_opening(self, leads, stage, slot, days, value) -> None:
        start = self._register(leads, value)
        self.born.extend([float("nan")] * len(leads))
        rows = zip(stage.tolist(), slot.tolist(), days.tolist(), strict=True)
        for j, (s, k, d) in enumerate(rows):
            self._stay(start + j, s, k, d, 0.0)

    def add_arrivals(self, leads: Leads) -> None:
        start = self._register(leads, np.full(len(leads), np.nan))
        self.born.extend(leads.t.tolist())
        self._next_arrival = start
        self._arrival_end = start + len(leads)
        self._schedule_arrival()

    # ---------------------------------------------------------------- events
    def _schedule_arrival(self) -> None:
        i = self._next_arrival
        if i >= self._arrival_end:
            return
        event = Timeout(self.env, self.born[i] - self.env.now, i)
        event.callbacks.append(self._arrive)

    def _arrive(self, event) -> None:
        i = event._value
        self._next_arrival = i + 1
        self._schedule_arrival()
        self._enter(i, 0)

    def _enter(self, i: int, s: int) -> None:
        visit = self.visits.get((i, s), 0) if self.loops else 0
        if visit == 0:
            slot, days = self.first_slot[i][s], self.first_days[i][s]
        else:
            slot, days = self._redraw(i, s, visit)
        now = self.env.now
        p = bisect.bisect_right(self.inner_edges, now)
        self.by_stage["entered"][p][s] += 1
        self.by_stage["stay_days"][p][s] += days
        self._stay(i, s, slot, days, now)

    def _stay(self, i: int, s: int, slot: int, days: float, now: float) -> None:
        self.occupancy[s] += 1
        if now + days < self.horizon:
            event = Timeout(self.env, days, (i, s, slot))
            event.callbacks.append(self._leave)

    def _leave(self, event) -> None:
        i, s, slot = event._value
        self.occupancy[s] -= 1
        if self.loops:
            self.visits[(i, s)] = self.visits.get((i, s), 0) + 1
        target = self.targets[s][slot]
        now = self.env.now
        if target == self.won_code or target == self.lost_code:
            p = bisect.bisect_right(self.inner_edges, now)
            c = self.channel[i]
            counts = self.by_channel
            if target == self.won_code:
                counts["won"][p][c] += 1
                counts["revenue"][p][c] += self.value[i]
                born = self.born[i]
                if born == born:  # not NaN: a new lead, not the opening pipeline
                    counts["cycle_days"][p][c] += now - born
                    counts["cycle_count"][p][c] += 1
            else:
                counts["lost"][p][c] += 1
        else:
            self._enter(i, target)

    def _snapshot(self, event) -> None:
        self.snapshots.append(list(self.occupancy))

    def _redraw(self, i: int, s: int, visit: int) -> tuple[int, float]:
        """Draws of a repeated visit (loops), made when needed."""
        block, offset = self._locate(i)
        key = self.keys[block][offset : offset + 1]
        cell = np.array([self.row * self.draws.channels + self.channel[i]])
        visits = np.array([visit])
        slot = self.draws.outcome(s, cell, key, visits)
        days = self.draws.duration(s, slot, cell, key, visits)
        return int(slot[0]), float(days[0])

    def _locate(self, i: int) -> tuple[int, int]:
        for block, keys in enumerate(self.keys):
            if i < keys.size:
                return block, i
            i -= keys.size
        raise IndexError(i)

    # ---------------------------------------------------------------- run and tally
    def run(self) -> None:
        self.env.run(until=self.horizon)
        self.snapshots.append(list(self.occupancy))
        t, r = self.tally, self.row
        for name, table in self.by_channel.items():
            getattr(t, name)[r] = table
        for name, table in self.by_stage.items():
            getattr(t, name)[r] = table
        t.open[r] = self.snapshots
        channel = np.asarray(self.channel, dtype=np.int64)
        born = np.asarray(self.born)
        new = ~np.isnan(born)
        if new.any():
            period = self.funnel.calendar.period_of(born[new])
            np.add.at(t.leads[r], (period, channel[new]), 1)
