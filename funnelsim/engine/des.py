"""The discrete-event engine (SimPy): leads move through the funnel one event at a time.

It is the general engine: besides everything the vectorized engine does (with the same
draws, so on a scenario both can run they give the same tally) it models the sales team —
reps with a limited number of slots, leads waiting for one and going cold, skill, hiring.

For speed it runs no SimPy process per lead, and only what needs the team goes through the
event queue: a stay in a stage without reps depends on nothing but the lead's own draws, so
it is settled the moment the lead enters it (its end time, and where the lead goes next,
are known then), and a lead walks through such stages without events until it needs a rep
or closes. Events (plain timeouts with callbacks) remain for entering a rep-worked stage,
leaving it, and going cold. Open leads and queues per period are counted from each stay's
start and end period, so no snapshot needs to be taken in time order. The draws of every
lead's first visit to each stage are made in bulk up front, and counts go into Python lists.
Pure: a funnel and replication keys in, a tally out.

The sales team (see ``docs/scenario.md``): a lead entering a rep-worked stage needs a slot of
its rep. A lead without a rep takes a free slot of the active rep with the most free slots
(ties: the lowest index) and keeps that rep; when every slot is taken it waits in the team's
queue and takes the first slot that frees. A lead with a rep waits for that rep. Waiting
leads are served first-in first-out, or highest deal value first; a lead whose patience runs
out first goes cold (lost). The stage's duration runs while the lead holds the slot, and
the rep's skill scales the probabilities of the outcomes other than lost (silent_loss
included, like any outcome a rep's work decides). The outcome is drawn when the lead gets a
slot, so a silent loss in a rep-worked stage leaves then, taking none of the rep's time,
and ``stale_after`` counts the days from then (a wait for a slot is not counted).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import heapq
import math
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.events import NORMAL

from funnelsim import customers, streams
from funnelsim.engine.common import (
    Cohort,
    Leads,
    StayDraws,
    Tally,
    arrivals,
    arrivals_in,
    draw_inputs,
    opening_leads,
)
from funnelsim.funnel import Funnel


def simulate(funnel: Funnel, rep_keys: np.ndarray) -> Tally:
    """Simulate one replication per key; returns their tally (rows in key order)."""
    with _fewer_collections():
        return _simulate(funnel, rep_keys)


@contextlib.contextmanager
def _fewer_collections():
    """Run the garbage collector's youngest generation 100× less often meanwhile.

    A replication allocates a few objects per event (scheduled events, their values) and
    frees them almost at once; at the default threshold the collector runs thousands of
    times per replication, each time walking the young objects, for ~40% of the run. The
    simulation makes no reference cycles of its own, so little is lost by waiting longer.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 70_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@dataclass(frozen=True)
class Slots:
    """Every slot taken in a rep-worked stage in one replication, in the order taken.

    A stay took a slot of ``rep`` at ``start`` after waiting since ``since`` (when the lead
    entered the stage; the opening pipeline's since 0), holds it until ``end`` (days from
    the start date; may lie beyond the horizon) and then goes to ``outcome`` (a stage index,
    ``won`` or ``lost``).
    """

    lead: np.ndarray
    stage: np.ndarray
    rep: np.ndarray
    since: np.ndarray
    start: np.ndarray
    end: np.ndarray
    outcome: np.ndarray


@dataclass(frozen=True)
class Trace:
    """Every stage entry and close of one replication's leads, in time order.

    ``stage`` is a stage index, ``won`` or ``lost`` (the funnel's codes); a silent loss is
    not recorded (as in a CRM: the lead's last entry stays open); ``value`` is the
    lead's deal value (currency). Leads are numbered in arrival order, after the opening
    pipeline when it is traced (whose opening stays are not entries). With a sales team
    ``slots`` records the slots the leads took.
    """

    lead: np.ndarray
    channel: np.ndarray
    stage: np.ndarray
    t: np.ndarray  # days from the start date
    value: np.ndarray
    slots: Slots | None = None


def trace(funnel: Funnel, rep_key: int, *, pipeline: bool = False) -> Trace:
    """Simulate one replication and record what every lead did: the history a CRM would
    hold (funnelsim's own engine as its source). New leads only, unless ``pipeline``."""
    keys = np.array([rep_key], dtype=np.uint64)
    inputs = draw_inputs(funnel, keys)
    draws = StayDraws(funnel, inputs)
    new = arrivals(funnel, keys, inputs.rates)
    order = np.argsort(new.t, kind="stable")
    tally = Tally.zeros(
        1,
        funnel.calendar.periods,
        len(funnel.channels),
        len(funnel.stages),
        team=funnel.team is not None,
    )
    run = _Replication(funnel, draws, tally, 0)
    run.events = []
    run.served = [] if funnel.team is not None else None
    with _fewer_collections():
        if pipeline:
            run.add_opening(*_opening(funnel, draws, keys))
        run.add_arrivals(new.take(order))
        run.run()
    events = sorted(run.events, key=lambda e: (e[2], e[0]))
    lead = np.array([e[0] for e in events], dtype=np.int64)
    slots = None
    if run.served is not None:
        columns = list(zip(*run.served, strict=True)) or [()] * 7
        slots = Slots(
            *(np.array(c, dtype=np.int64) for c in columns[:3]),
            *(np.array(c, dtype=float) for c in columns[3:6]),
            np.array(columns[6], dtype=np.int64),
        )
    return Trace(
        lead=lead,
        channel=np.asarray(run.channel, dtype=np.int64)[lead],
        stage=np.array([e[1] for e in events], dtype=np.int64),
        t=np.array([e[2] for e in events]),
        value=np.asarray(run.value)[lead],
        slots=slots,
    )


class _Opening:
    """The opening pipeline of a batch of replications and the draws of its opening stays.

    In a stage without reps the outcome ``slot`` and the ``days`` left are drawn now. In a
    rep-worked stage the rep's skill changes the outcome probabilities, so only what does
    not depend on them is drawn now (see :meth:`StayDraws.opening_by_outcome`): the outcome
    uniform and, per outcome, the survival at the lead's age and the days left.
    """

    def __init__(self, funnel: Funnel, draws: StayDraws, rep_keys: np.ndarray):
        leads, entry = opening_leads(funnel, rep_keys)
        n, k_max = len(leads), draws.targets.shape[1]
        self.leads, self.stage = leads, funnel.open_stage[entry]
        self.value = funnel.open_value[entry]
        self.slot = np.zeros(n, dtype=np.intp)
        self.days = np.zeros(n)
        self.u = np.zeros(n)
        self.survival = np.zeros((n, k_max))
        self.by_outcome = np.full((n, k_max), np.nan)
        self.age = funnel.open_age[entry]
        worked = funnel.team.worked if funnel.team is not None else np.zeros(len(funnel.stages))
        for s in np.unique(self.stage).tolist():
            index = np.flatnonzero(self.stage == s)
            part, age = leads.take(index), funnel.open_age[entry[index]]
            if worked[s]:
                u, survival, days = draws.opening_by_outcome(s, part, age)
                k = survival.shape[1]
                self.u[index] = u
                self.survival[index, :k], self.by_outcome[index, :k] = survival, days
            else:
                self.slot[index], self.days[index] = draws.opening(s, part, age)

    def of(self, row: int) -> tuple:
        """The arguments of :meth:`_Replication.add_opening` for replication ``row``."""
        o = np.flatnonzero(self.leads.rep == row)
        return (
            self.leads.take(o),
            self.stage[o],
            self.slot[o],
            self.days[o],
            self.value[o],
            (self.u[o], self.survival[o], self.by_outcome[o], self.age[o]),
        )


def _opening(funnel: Funnel, draws: StayDraws, rep_keys: np.ndarray) -> tuple:
    return _Opening(funnel, draws, rep_keys).of(0)


def _simulate(funnel: Funnel, rep_keys: np.ndarray) -> Tally:
    cal = funnel.calendar
    reps = len(rep_keys)
    n_stages, n_channels = len(funnel.stages), len(funnel.channels)
    tally = Tally.zeros(reps, cal.periods, n_channels, n_stages, team=funnel.team is not None)
    inputs = draw_inputs(funnel, rep_keys)
    draws = StayDraws(funnel, inputs)
    new = arrivals(funnel, rep_keys, inputs.rates)
    opening = _Opening(funnel, draws, rep_keys)
    cohorts: list[Cohort] = []
    existing, models = _word_of_mouth_inputs(funnel, rep_keys)
    existing_active = None
    if existing is not None:
        existing_active = np.zeros((reps, cal.periods))
        for r, old in existing:
            existing_active[r] = old.active_start
        tally.existing = existing  # the repeat sales book them without drawing them again
    for r in range(reps):
        mine = np.flatnonzero(new.rep == r)
        mine = mine[np.argsort(new.t[mine], kind="stable")]
        run = _Replication(funnel, draws, tally, r)
        if len(opening.leads):
            run.add_opening(*opening.of(r))
        run.add_arrivals(new.take(mine))
        if existing_active is not None:
            model = funnel.repeat if models is None else models[r]
            run.word_of_mouth(rep_keys[r : r + 1], existing_active[r], model)
        run.run()
        if funnel.repeat is not None:
            cohorts.append(run.cohort)
    if funnel.repeat is not None:
        tally.customers = Cohort(
            *(
                np.concatenate([getattr(c, name) for c in cohorts])
                for name in ("rep", "channel", "t", "key")
            )
        )
    return tally


def _word_of_mouth_inputs(funnel: Funnel, rep_keys: np.ndarray):
    """With word-of-mouth channels: each replication's existing customers, [(row,
    Existing)], and its repeat model (None: the scenario's)."""
    if funnel.referral is None:
        return None, None
    models = customers.replication_models(funnel, rep_keys)
    return list(customers.existing_customers(funnel, rep_keys, models)), models


WAITING, SERVED, COLD = 0, 1, 2


class _Due:
    """A timeout scheduled straight into SimPy's event queue: what ``Environment.step``
    needs of an event (callbacks, _ok, _value) and nothing else, so that scheduling one is
    a fraction of the cost of a ``simpy.Timeout``."""

    __slots__ = ("callbacks", "_ok", "_value", "_defused")

    def __init__(self, callback, value):
        self.callbacks = [callback]
        self._ok = True
        self._value = value


class _Wait:
    """A lead waiting for a slot in a rep-worked stage."""

    __slots__ = ("lead", "stage", "draws", "since", "period", "state", "opening", "order")

    def __init__(self, lead, stage, draws, since, period, opening, order):
        # draws: (outcome uniform, duration per outcome), or for an opening stay (outcome
        # uniform, survival per outcome, days left per outcome): see _Opening
        self.lead, self.stage, self.draws, self.since = lead, stage, draws, since
        self.period, self.opening, self.order = period, opening, order
        self.state = WAITING


class _Replication:
    """One replication: the SimPy environment, the leads and the running counts."""

    def __init__(self, funnel: Funnel, draws: StayDraws, tally: Tally, row: int):
        self.funnel, self.draws, self.tally, self.row = funnel, draws, tally, row
        cal = funnel.calendar
        self.env = simpy.Environment()
        self.horizon = cal.horizon
        self.edges = cal.edges.tolist()
        self.inner_edges = self.edges[1:-1]
        self.n_stages = len(funnel.stages)
        self.targets = draws.targets.tolist()
        self.won_code, self.lost_code, self.silent_code = funnel.won, funnel.lost, funnel.silent
        periods, channels, stages = cal.periods, len(funnel.channels), self.n_stages
        self.by_channel = {
            name: [[0.0] * channels for _ in range(periods)]
            for name in ("won", "lost", "silent_lost", "revenue", "cycle_days", "cycle_count")
        }
        names = ("entered", "stay_days", "silent_lost_by_stage")
        if funnel.team is not None:
            names += ("cold", "wait_days", "waited", "unserved", "reached")
        self.by_stage = {name: [[0.0] * stages for _ in range(periods)] for name in names}
        self.periods = periods
        # stays (and waits for a slot) by the period they start and end in; P = after the
        # horizon. Open leads at the end of period p: started up to p minus ended up to p.
        self.started = [[0] * stages for _ in range(periods + 1)]
        self.ended = [[0] * stages for _ in range(periods + 1)]
        self.wait_started = [[0] * stages for _ in range(periods + 1)]
        self.wait_ended = [[0] * stages for _ in range(periods + 1)]
        self.worked = funnel.team.worked.tolist() if funnel.team is not None else [False] * stages
        # lead state, filled by add_opening / add_arrivals
        self.channel: list[int] = []
        self.born: list[float] = []
        self.value: list[float] = []
        self.keys: list[np.ndarray] = []
        # the first visit's draws, flat: lead i, stage s at i * S + s (flat lists of numbers
        # are cheap to build and keep the garbage collector out of the way)
        self.first_slot: list[int] = []
        self.first_days: list[float] = []
        self.visits: dict[tuple[int, int], int] = {}
        self.loops = funnel.has_loops
        self.events: list[tuple[int, int, float]] | None = None  # set by trace()
        self.served: list[tuple] | None = None  # set by trace(): the slots taken
        self.won_leads: list[tuple[int, float]] | None = [] if funnel.repeat is not None else None
        self.team = funnel.team
        if self.team is not None:
            self._init_team()

    # ---------------------------------------------------------------- setting up the leads
    def _register(self, leads: Leads, value: np.ndarray) -> int:
        """Bulk-draw the first visit of every stage for these leads; returns the first index."""
        start = len(self.channel)
        n = len(leads)
        self.channel.extend(leads.channel.tolist())
        deal = self.draws.deal_value(leads.rep * self.draws.channels + leads.channel, leads.key)
        self.value.extend(np.where(np.isnan(value), deal, value).tolist())
        slots = np.zeros((n, self.n_stages), dtype=np.int64)
        days = np.zeros((n, self.n_stages))
        cell = leads.rep * self.draws.channels + leads.channel
        worked = self.team.worked if self.team is not None else np.zeros(self.n_stages, bool)
        for s in range(self.n_stages):
            if not worked[s]:
                slot = self.draws.outcome(s, cell, leads.key)
                duration = self.draws.duration(s, slot, cell, leads.key)
                slots[:, s], days[:, s] = self.draws.close(s, slot, duration)
        self.keys.append(leads.key)
        self.first_slot.extend(slots.ravel().tolist())
        self.first_days.extend(days.ravel().tolist())
        if self.team is not None:
            self._register_team(leads, cell)
        return start

    def add_opening(self, leads, stage, slot, days, value, by_outcome) -> None:
        """The opening pipeline (see :class:`_Opening`)."""
        start = self._register(leads, value)
        self.born.extend([math.nan] * len(leads))
        u, survival, left, age = by_outcome
        rows = zip(stage.tolist(), slot.tolist(), days.tolist(), strict=True)
        for j, (s, k, d) in enumerate(rows):
            if self.loops:
                self.visits[(start + j, s)] = 1  # the opening stay is the lead's first here
            if self.worked[s]:
                drawn = (u[j], survival[j], left[j], float(age[j]))
                self._need_slot(start + j, s, 0, 0.0, opening=drawn)
            else:
                target = self._settle(start + j, s, k, d, 0.0)
                if target >= 0:
                    self._walk(start + j, target, d)

    def add_arrivals(self, leads: Leads) -> None:
        start = self._register(leads, np.full(len(leads), np.nan))
        self.born.extend(leads.t.tolist())
        for i, t in enumerate(leads.t.tolist(), start=start):
            self._walk(i, 0, t)

    def word_of_mouth(self, rep_key: np.ndarray, existing_active: np.ndarray, model) -> None:
        """Word-of-mouth channels: at the start of each month, leads arrive in it at a rate
        per customer active then (existing customers still active, and customers won before
        it and still active; their lives are drawn from their own keys, as the repeat sales
        draw them afterwards). The channels' arrival streams are those of any channel."""
        self.wom = (rep_key, existing_active, model)
        self.wom_seen = 0  # won leads whose lives are drawn
        self.wom_start: list[np.ndarray] = []
        self.wom_until: list[np.ndarray] = []
        for m, edge in enumerate(self.edges[:-1]):
            self._at(edge, self._refer, m)

    def _refer(self, event) -> None:
        m, now = event._value, self.env.now
        rep_key, existing_active, model = self.wom
        won = self.won_leads[self.wom_seen :]
        if won:  # leads settle ahead of time: some of these close later than now
            self.wom_seen = len(self.won_leads)
            start = np.array([t for _, t in won])
            keys = np.concatenate(self.keys)[np.array([i for i, _ in won], dtype=np.intp)]
            self.wom_start.append(start)
            life = customers.new_customer_lives(model, start, keys, self.funnel.calendar)
            self.wom_until.append(life.until)
        active = float(existing_active[m])
        if self.wom_start:
            start, until = np.concatenate(self.wom_start), np.concatenate(self.wom_until)
            active += np.count_nonzero((start <= now) & (until > now))
        funnel = self.funnel
        parts = []
        for c in np.flatnonzero(funnel.referral).tolist():
            rate = funnel.referral[c] * active * funnel.daily_rate[c, m]
            part = arrivals_in(funnel, rep_key, c, m, np.array([rate]))
            if part is not None:
                parts.append((c, part[1], part[2]))
        if not parts:
            return
        t = np.concatenate([p[1] for p in parts])
        order = np.argsort(t, kind="stable")
        sizes = [p[1].size for p in parts]
        self.add_arrivals(
            Leads(
                rep=np.full(t.size, self.row, dtype=np.intp),
                channel=np.repeat([p[0] for p in parts], sizes)[order],
                t=t[order],
                period=np.full(t.size, m, dtype=np.intp),
                key=np.concatenate([p[2] for p in parts])[order],
            )
        )

    # ---------------------------------------------------------------- moving leads on
    def _period(self, t: float) -> int:
        """The period of time t; P at or after the horizon."""
        return bisect.bisect_right(self.inner_edges, t) if t < self.horizon else self.periods

    def _walk(self, i: int, s: int, t: float) -> None:
        """Lead ``i`` enters stage ``s`` at time ``t``: settle its stays in stages without
        reps at once, until it closes, outlives the horizon or needs a rep."""
        while True:
            if self.worked[s]:
                if t == self.env.now:
                    self._need_slot(i, s, self._visit(i, s), t)
                else:
                    self._at(t - self.env.now, self._enter_worked, (i, s))
                return
            visit = self._visit(i, s)
            if visit == 0:
                slot, days = (
                    self.first_slot[i * self.n_stages + s],
                    self.first_days[i * self.n_stages + s],
                )
            else:
                slot, days = self._redraw(i, s, visit)
            p = bisect.bisect_right(self.inner_edges, t)
            self.by_stage["entered"][p][s] += 1
            self.by_stage["stay_days"][p][s] += days
            if self.events is not None:
                self.events.append((i, s, t))
            target = self._settle(i, s, slot, days, t)
            if target < 0:
                return
            s, t = target, t + days

    def _visit(self, i: int, s: int) -> int:
        """How many stays lead ``i`` had in stage ``s`` before this one (counts this one)."""
        if not self.loops:
            return 0
        visit = self.visits.get((i, s), 0)
        self.visits[(i, s)] = visit + 1
        return visit

    def _settle(self, i: int, s: int, slot: int, days: float, t: float) -> int:
        """Book a stay in a stage without reps; returns the next stage, or -1."""
        self.started[bisect.bisect_right(self.inner_edges, t)][s] += 1
        t_out = t + days
        p_out = self._period(t_out)
        self.ended[p_out][s] += 1
        if p_out == self.periods:
            return -1  # still in the stage at the horizon
        target = self.targets[s][slot]
        if target >= self.won_code:
            self._close(i, target, t_out, p_out, s)
            return -1
        return target

    def _close(self, i: int, target: int, t: float, p: int, s: int) -> None:
        """Lead ``i`` closes (won, lost or silent_loss) at ``t``, in period ``p``, leaving
        stage ``s``. A silent loss is not traced: the CRM never records it."""
        c = self.channel[i]
        counts = self.by_channel
        if target == self.silent_code:
            counts["silent_lost"][p][c] += 1
            self.by_stage["silent_lost_by_stage"][p][s] += 1
            return
        if self.events is not None:
            self.events.append((i, target, t))
        if target == self.won_code:
            if self.won_leads is not None:
                self.won_leads.append((i, t))
            counts["won"][p][c] += 1
            counts["revenue"][p][c] += self.value[i]
            born = self.born[i]
            if born == born:  # not NaN: a new lead, not the opening pipeline
                counts["cycle_days"][p][c] += t - born
                counts["cycle_count"][p][c] += 1
        else:
            counts["lost"][p][c] += 1

    def _at(self, delay: float, callback, value) -> None:
        """Call ``callback(event)`` after ``delay`` days, ``event._value`` being ``value``."""
        self.env.schedule(_Due(callback, value), NORMAL, delay)

    def _enter_worked(self, event) -> None:
        i, s = event._value
        self._need_slot(i, s, self._visit(i, s), self.env.now)

    def _leave(self, event) -> None:
        """A lead leaves a rep-worked stage: its slot frees and it moves on."""
        i, s, slot, rep = event._value
        self._release(rep)
        target = self.targets[s][slot]
        now = self.env.now
        if target >= self.won_code:
            self._close(i, target, now, bisect.bisect_right(self.inner_edges, now), s)
        else:
            self._walk(i, target, now)
        self._serve(rep)

    def _key(self, i: int) -> np.ndarray:
        for keys in self.keys:
            if i < keys.size:
                return keys[i : i + 1]
            i -= keys.size
        raise IndexError(i)

    def _redraw(self, i: int, s: int, visit: int) -> tuple[int, float]:
        """Draws of a repeated visit (loops), made when needed."""
        key = self._key(i)
        cell = np.array([self.row * self.draws.channels + self.channel[i]])
        visits = np.array([visit])
        slot = self.draws.outcome(s, cell, key, visits)
        days = self.draws.duration(s, slot, cell, key, visits)
        return self.draws.close(s, int(slot[0]), float(days[0]))

    # ---------------------------------------------------------------- the sales team
    def _init_team(self) -> None:
        team = self.team
        size = team.size
        self.slots = [0] * size
        self.busy = [0] * size
        self.skill = [1.0] * size
        self.active = [False] * size
        self.rep_queue: list[list] = [[] for _ in range(size)]
        self.team_queue: list = []
        self.rep_of: dict[int, int] = {}
        self.order = 0
        self.busy_total = 0
        self.available = 0
        self.t_acc = 0.0
        self.acc_period = 0
        periods = len(self.edges) - 1
        self.busy_days = [0.0] * periods
        self.slot_days = [0.0] * periods
        self.first_u: list[float] = []  # flat like first_slot
        self.first_by_slot: list[float] = []  # lead i, stage s, outcome k at (i*S + s)*K + k
        self.first_patience: list[float] = []
        self.k_max = self.draws.targets.shape[1]
        self._thresholds: dict[tuple[int, int, float], tuple[list[float], int]] = {}
        for day, rep, slots, skill, active in team.changes:
            if day <= 0:
                self._change(rep, slots, skill, active)
            else:
                self._at(day, self._team_event, (rep, slots, skill, active))

    def _register_team(self, leads: Leads, cell: np.ndarray) -> None:
        """Bulk-draw, for rep-worked stages, the outcome uniform, the duration of every
        possible outcome and the patience of each lead's first visit."""
        team, draws = self.team, self.draws
        n = len(leads)
        k_max = draws.targets.shape[1]
        u = np.zeros((n, self.n_stages))
        by_slot = np.zeros((n, self.n_stages, k_max))
        patience = np.full((n, self.n_stages), math.inf)
        for s in np.flatnonzero(team.worked).tolist():
            u[:, s] = streams.uniform(leads.key, draws.salt(streams.OUTCOME, s, None))
            for k in range(int((draws.targets[s] >= 0).sum())):
                slot = np.full(n, k, dtype=np.intp)
                by_slot[:, s, k] = draws.duration(s, slot, cell, leads.key)
            if team.patience is not None:
                keys = np.bitwise_xor(leads.key, streams.salt(streams.PATIENCE, draws.stage_ids[s]))
                patience[:, s] = team.patience.draw(keys)
        self.first_u.extend(u.ravel().tolist())
        self.first_by_slot.extend(by_slot.ravel().tolist())
        self.first_patience.extend(patience.ravel().tolist())

    def _team_draws(self, i: int, s: int, visit: int) -> tuple[float, list[float], float]:
        """Outcome uniform, duration per outcome and patience of a visit to a worked stage."""
        if visit == 0:
            at = i * self.n_stages + s
            by_slot = self.first_by_slot[at * self.k_max : (at + 1) * self.k_max]
            return self.first_u[at], by_slot, self.first_patience[at]
        draws = self.draws
        key = self._key(i)
        visits = np.array([visit])
        cell = np.array([self.row * draws.channels + self.channel[i]])
        u = float(streams.uniform(key, draws.salt(streams.OUTCOME, s, visits))[0])
        by_slot = [
            float(draws.duration(s, np.array([k]), cell, key, visits)[0])
            for k in range(int((draws.targets[s] >= 0).sum()))
        ]
        patience = math.inf
        if self.team.patience is not None:
            salt = streams.salt(streams.PATIENCE, draws.stage_ids[s], visit)
            patience = float(self.team.patience.draw(np.bitwise_xor(key, salt))[0])
        return u, by_slot, patience

    def _need_slot(self, i: int, s: int, visit: int, now: float, opening=None) -> None:
        """A lead enters a rep-worked stage: take a slot of its rep, or wait for one."""
        period = bisect.bisect_right(self.inner_edges, now)
        self.started[period][s] += 1
        if opening is None:
            self.by_stage["entered"][period][s] += 1
            if self.events is not None:
                self.events.append((i, s, now))
            u, by_slot, patience = self._team_draws(i, s, visit)
            drawn = (u, by_slot)
        else:
            drawn, patience = opening, self.first_patience[i * self.n_stages + s]
        self.order += 1
        wait = _Wait(i, s, drawn, now, period, opening is not None, self.order)
        rep = self.rep_of.get(i, -1)
        if rep < 0:
            # the lead reaches the team: once, as a lead that waits for its first rep gets
            # one, goes cold or is still waiting at the horizon
            self.by_stage["reached"][period][s] += 1
        elif not self.active[rep]:
            rep = -1  # its rep has left the team: it is reassigned
        if rep < 0:
            rep = self._most_free()
            if rep >= 0:
                self._start(wait, rep)
                return
            self._push(self.team_queue, wait)
        elif self.slots[rep] - self.busy[rep] > 0:
            self._start(wait, rep)
            return
        else:
            self._push(self.rep_queue[rep], wait)
        self.wait_started[period][s] += 1
        if now + patience < self.horizon:
            self._at(patience, self._cold, wait)

    def _most_free(self) -> int:
        best, most = -1, 0
        for rep, slots in enumerate(self.slots):
            free = slots - self.busy[rep]
            if self.active[rep] and free > most:
                best, most = rep, free
        return best

    def _push(self, queue: list, wait: _Wait) -> None:
        if self.team.highest_value_first:
            heapq.heappush(queue, (-self.value[wait.lead], wait.order, wait))
        else:
            heapq.heappush(queue, (wait.since, wait.order, wait))

    def _start(self, wait: _Wait, rep: int) -> None:
        """The lead gets a slot of ``rep``: its outcome and duration are drawn now."""
        now = self.env.now
        i, s = wait.lead, wait.stage
        wait.state = SERVED
        self.rep_of[i] = rep
        self._account(now)
        self.busy[rep] += 1
        self.busy_total += 1
        if not self.active[rep]:
            self.available += 1
        if wait.opening:
            slot, days = self._opening_outcome(s, self.channel[i], self.skill[rep], wait.draws)
        else:
            u, by_slot = wait.draws
            cum, last = self._cum(s, self.channel[i], self.skill[rep])
            slot = min(bisect.bisect_left(cum, u), last)
            slot, days = self.draws.close(s, slot, by_slot[slot])
            stage = self.by_stage
            waited = now - wait.since
            stage["wait_days"][wait.period][s] += waited
            if waited > 0:
                stage["waited"][wait.period][s] += 1
            stage["stay_days"][wait.period][s] += days
        p_out = self._period(now + days)
        self.ended[p_out][s] += 1
        if p_out < self.periods:
            self._at(days, self._leave, (i, s, slot, rep))
        if self.served is not None:
            self.served.append((i, s, rep, wait.since, now, now + days, self.targets[s][slot]))

    def _cum(self, s: int, channel: int, skill: float) -> tuple[list[float], int]:
        """Outcome thresholds of stage ``s`` for a rep with ``skill``."""
        key = (s, channel, skill)
        if key not in self._thresholds:
            p = self._skilled(s, channel, skill)
            cum = np.cumsum(p)[:-1].tolist()
            last = len(p) - 1 - int(np.argmax(p[::-1] > 0))
            self._thresholds[key] = (cum, last)
        return self._thresholds[key]

    def _skilled(self, s: int, channel: int, skill: float) -> np.ndarray:
        """Outcome probabilities of stage ``s`` for a rep with ``skill``: the probabilities
        of outcomes other than lost scale by the skill, lost takes the remainder."""
        p = self.draws.inputs.probs[s][self.row, channel].copy()
        if skill != 1.0:
            lost = list(self.targets[s]).index(self.lost_code)
            p *= skill
            p[lost] = 0.0
            p[lost] = max(0.0, 1.0 - p.sum())
            p /= p.sum()
        return p

    def _opening_outcome(self, s: int, channel: int, skill: float, drawn) -> tuple[int, float]:
        """Outcome and days left of an opening stay in a rep-worked stage, drawn with the
        rep's skill as :meth:`StayDraws.opening` draws it without: P(k | age a) ∝
        p_k·S_k(a), p the skilled probabilities; a lead older than every possible duration
        closes at once. Then :meth:`StayDraws.close` at the lead's age."""
        u, survival, left, age = drawn
        p = self._skilled(s, channel, skill)
        weights = p * survival[: p.size]
        outlived = weights.sum() <= 0
        if outlived:
            weights = p
        cum = np.cumsum(weights)
        cum /= cum[-1]
        slot = int((u > cum[:-1]).sum())
        slot = min(slot, p.size - 1 - int(np.argmax(weights[::-1] > 0)))
        return self.draws.close(s, slot, 0.0 if outlived else float(left[slot]), age)

    def _release(self, rep: int) -> None:
        self._account(self.env.now)
        self.busy[rep] -= 1
        self.busy_total -= 1
        if not self.active[rep]:
            self.available -= 1

    def _serve(self, rep: int) -> None:
        """Fill the free slots of ``rep`` from its own queue and the team's queue."""
        if not self.active[rep]:
            return
        while self.slots[rep] - self.busy[rep] > 0:
            own = self._head(self.rep_queue[rep])
            shared = self._head(self.team_queue)
            if own is None and shared is None:
                return
            queue = (
                self.rep_queue[rep]
                if shared is None or (own is not None and own[:2] <= shared[:2])
                else self.team_queue
            )
            wait = heapq.heappop(queue)[2]
            self.wait_ended[bisect.bisect_right(self.inner_edges, self.env.now)][wait.stage] += 1
            self._start(wait, rep)

    @staticmethod
    def _head(queue: list):
        while queue and queue[0][2].state != WAITING:
            heapq.heappop(queue)  # went cold while waiting
        return queue[0] if queue else None

    def _cold(self, event) -> None:
        wait = event._value
        if wait.state != WAITING:
            return
        wait.state = COLD
        now = self.env.now
        i, s = wait.lead, wait.stage
        p = bisect.bisect_right(self.inner_edges, now)
        self.ended[p][s] += 1
        self.wait_ended[p][s] += 1
        self.by_stage["cold"][p][s] += 1
        self.by_channel["lost"][p][self.channel[i]] += 1
        if self.events is not None:
            self.events.append((i, self.lost_code, now))
        if not wait.opening:
            stage = self.by_stage
            stage["wait_days"][wait.period][s] += now - wait.since
            stage["waited"][wait.period][s] += 1
            stage["unserved"][wait.period][s] += 1

    def _team_event(self, event) -> None:
        self._change(*event._value)

    def _change(self, rep: int, slots: int, skill: float, active: bool) -> None:
        """A rep joins, ramps up or leaves the team."""
        self._account(self.env.now)
        before = self.slots[rep] if self.active[rep] else self.busy[rep]
        was_active = self.active[rep]
        self.slots[rep], self.skill[rep], self.active[rep] = slots, skill, active
        self.available += (slots if active else self.busy[rep]) - before
        if was_active and not active:  # its waiting leads go back to the team's queue
            for _, _, wait in self.rep_queue[rep]:
                if wait.state == WAITING:
                    self._push(self.team_queue, wait)
            self.rep_queue[rep] = []
        for r in range(len(self.slots)):
            self._serve(r)

    def _account(self, now: float) -> None:
        """Add busy and available slot-days since the last change, period by period."""
        t0 = self.t_acc
        periods = len(self.busy_days)
        while now > t0 and self.acc_period < periods:
            end = self.edges[self.acc_period + 1]
            upto = now if now < end else end
            self.busy_days[self.acc_period] += self.busy_total * (upto - t0)
            self.slot_days[self.acc_period] += self.available * (upto - t0)
            if now < end:
                break
            t0 = end
            self.acc_period += 1
        self.t_acc = now

    def _finish_team(self) -> None:
        """Leads still waiting at the horizon: their wait so far counts."""
        self._account(self.horizon)
        stage = self.by_stage
        for queue in [self.team_queue, *self.rep_queue]:
            for _, _, wait in queue:
                if wait.state == WAITING and not wait.opening:
                    waited = self.horizon - wait.since
                    stage["wait_days"][wait.period][wait.stage] += waited
                    stage["waited"][wait.period][wait.stage] += waited > 0
                    stage["unserved"][wait.period][wait.stage] += 1
        t, r = self.tally, self.row
        t.busy_slot_days[r] = self.busy_days
        t.slot_days[r] = self.slot_days
        t.queue[r] = _stock(self.wait_started, self.wait_ended)

    # ---------------------------------------------------------------- run and tally
    def run(self) -> None:
        self.env.run(until=self.horizon)
        if self.team is not None:
            self._finish_team()
        t, r = self.tally, self.row
        for name, table in self.by_channel.items():
            getattr(t, name)[r] = table
        for name, table in self.by_stage.items():
            getattr(t, name)[r] = table
        t.open[r] = _stock(self.started, self.ended)
        if self.won_leads is not None:
            keys = np.concatenate(self.keys) if self.keys else np.zeros(0, dtype=np.uint64)
            index = np.array([i for i, _ in self.won_leads], dtype=np.intp)
            self.cohort = Cohort(
                np.full(index.size, r, dtype=np.intp),
                np.asarray(self.channel, dtype=np.intp)[index],
                np.array([when for _, when in self.won_leads]),
                keys[index],
            )
        channel = np.asarray(self.channel, dtype=np.int64)
        born = np.asarray(self.born)
        new = ~np.isnan(born)
        if new.any():
            period = self.funnel.calendar.period_of(born[new])
            np.add.at(t.leads[r], (period, channel[new]), 1)


def _stock(started: list[list[int]], ended: list[list[int]]) -> np.ndarray:
    """How many are in at the end of each period: begun up to it minus ended up to it."""
    both = np.cumsum(np.asarray(started), axis=0) - np.cumsum(np.asarray(ended), axis=0)
    return both[:-1]
