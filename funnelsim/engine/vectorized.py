"""The vectorized engine: whole batches of replications as NumPy arrays.

Exact, not an approximation, whenever leads do not interact (no shared sales-team
capacity): every lead's stays are drawn from its own key exactly as the DES draws them, and
the leads of all replications in the batch take their next step together ("hops"), however
many loops a lead goes round. Pure: a funnel and replication keys in, a tally out.
"""

from __future__ import annotations

import numpy as np

from funnelsim.engine.common import StayDraws, Tally, arrivals, draw_inputs, opening_leads
from funnelsim.funnel import Funnel


def _add(target: np.ndarray, flat: np.ndarray, weights=None) -> None:
    """target.flat[flat] += weights (or 1), with repeated indices adding up."""
    counts = np.bincount(flat, weights=weights, minlength=target.size)
    target += counts.reshape(target.shape)


class _Stays:
    """The stays being processed in one hop: parallel arrays, one entry per lead."""

    __slots__ = ("rep", "channel", "stage", "t_in", "key", "born", "value", "visits")

    def __init__(self, rep, channel, stage, t_in, key, born, value, visits):
        self.rep, self.channel, self.stage, self.t_in = rep, channel, stage, t_in
        self.key, self.born, self.value, self.visits = key, born, value, visits

    def take(self, index: np.ndarray) -> _Stays:
        parts = (getattr(self, name) for name in self.__slots__)
        return _Stays(*(None if a is None else a[index] for a in parts))

    def visit(self) -> np.ndarray:
        if self.visits is None:
            return np.zeros(self.stage.size, dtype=np.int64)
        return self.visits[np.arange(self.stage.size), self.stage]


class _Run:
    """The counts of one batch, filled hop by hop."""

    def __init__(self, funnel: Funnel, draws: StayDraws, reps: int):
        self.funnel, self.draws = funnel, draws
        cal = funnel.calendar
        self.periods, self.stages = cal.periods, len(funnel.stages)
        self.channels = len(funnel.channels)
        self.bounds = cal.edges[1:]  # period ends; the last is the horizon
        self.horizon = cal.horizon
        self.tally = Tally.zeros(reps, self.periods, self.channels, self.stages)
        # stays counted in period p (entries, or the opening stays at 0) and left in p
        self.started = np.zeros((reps, self.periods + 1, self.stages))
        self.left = np.zeros((reps, self.periods + 1, self.stages))

    def stage_cell(self, rep, period, stage):
        return (rep * (self.periods + 1) + period) * self.stages + stage

    def channel_cell(self, rep, period, channel):
        return (rep * self.periods + period) * self.channels + channel

    def hops(self, stays: _Stays) -> None:
        while stays.stage.size:
            visit = stays.visit()
            d = self.draws
            slot = d.outcome(stays.rep, stays.stage, stays.channel, stays.key, visit)
            days = d.duration(stays.stage, stays.channel, slot, stays.key, visit)
            stays = self.settle(stays, slot, days, opening=False)

    def settle(self, stays: _Stays, slot, days, *, opening: bool) -> _Stays:
        """Record the stays (entries, open counts, closes); return those moving on."""
        t = self.tally
        t_out = stays.t_in + days
        p_in = np.searchsorted(self.bounds, stays.t_in, side="right")
        p_out = np.searchsorted(self.bounds, t_out, side="right")  # P when beyond the horizon
        cell = self.stage_cell(stays.rep, p_in, stays.stage)
        started = np.bincount(cell, minlength=self.started.size).reshape(self.started.shape)
        self.started += started
        if not opening:
            t.entered += started[:, : self.periods]
            stay = np.bincount(cell, weights=days, minlength=self.started.size)
            t.stay_days += stay.reshape(self.started.shape)[:, : self.periods]
        _add(self.left, self.stage_cell(stays.rep, p_out, stays.stage))

        closed = p_out < self.periods
        target = self.draws.targets[stays.stage, slot]
        funnel = self.funnel
        for code, counter in ((funnel.won, t.won), (funnel.lost, t.lost)):
            index = np.flatnonzero(closed & (target == code))
            if index.size == 0:
                continue
            rep, channel, period = stays.rep[index], stays.channel[index], p_out[index]
            cell_c = self.channel_cell(rep, period, channel)
            _add(counter, cell_c)
            if code != funnel.won:
                continue
            value = stays.value[index]
            unknown = np.isnan(value)
            if unknown.any():
                value[unknown] = self.draws.deal_value(channel[unknown], stays.key[index[unknown]])
            _add(t.revenue, cell_c, value)
            born = stays.born[index]
            new = ~np.isnan(born)
            if new.any():
                _add(t.cycle_days, cell_c[new], t_out[index[new]] - born[new])
                _add(t.cycle_count, cell_c[new])
        moving = np.flatnonzero(closed & (target < self.stages))
        nxt = stays.take(moving)
        if nxt.visits is not None:  # the stay just ended counts as a visit of its stage
            nxt.visits[np.arange(moving.size), nxt.stage] += 1
        nxt.stage = target[moving]
        nxt.t_in = t_out[moving]
        return nxt

    def finish(self) -> Tally:
        # open at the end of period p: stays with t_in < B_p <= t_out
        opened = np.cumsum(self.started, axis=1)[:, : self.periods]
        closed = np.cumsum(self.left, axis=1)[:, : self.periods]
        self.tally.open[:] = opened - closed
        return self.tally


def simulate(funnel: Funnel, rep_keys: np.ndarray) -> Tally:
    """Simulate one replication per key; returns their tally (rows in key order)."""
    reps, n_stages = len(rep_keys), len(funnel.stages)
    inputs = draw_inputs(funnel, rep_keys)
    draws = StayDraws(funnel, inputs)
    run = _Run(funnel, draws, reps)
    loops = funnel.has_loops

    new = arrivals(funnel, rep_keys, inputs.volume)
    p_new = funnel.calendar.period_of(new.t)
    _add(run.tally.leads, run.channel_cell(new.rep, p_new, new.channel))

    opening, entry = opening_leads(funnel, rep_keys)
    if len(opening):
        stage, slot, days = draws.opening(opening, entry)
        stays = _Stays(
            opening.rep,
            opening.channel,
            stage,
            np.zeros(len(opening)),
            opening.key,
            np.full(len(opening), np.nan),
            funnel.open_value[entry],
            np.zeros((len(opening), n_stages), dtype=np.int64) if loops else None,
        )
        run.hops(run.settle(stays, slot, days, opening=True))

    stays = _Stays(
        new.rep,
        new.channel,
        np.zeros(len(new), dtype=np.int64),
        new.t,
        new.key,
        new.t,
        np.full(len(new), np.nan),
        np.zeros((len(new), n_stages), dtype=np.int64) if loops else None,
    )
    run.hops(stays)
    return run.finish()
