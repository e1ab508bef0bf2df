"""What both engines share: the tally they fill, and the random draws that belong to leads.

Every draw here is a pure function of the replication key and the lead's identity (see
:mod:`funnelsim.streams`), so the two engines see the same leads with the same outcomes and
durations: for a scenario both can run, they produce the same tally, replication by
replication. What differs is how they move leads through time.

Times are days from the start date. A lead is *in* a stage during ``[t_in, t_out)``; an
event at time t belongs to the period ``[edges[p], edges[p+1])`` that contains t, and a
lead counts as open at the end of period p (boundary B) when ``t_in < B <= t_out``, so that
open(p) = open(p−1) + entered(p) − left(p) holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from funnelsim import streams
from funnelsim.distributions import standard_gamma
from funnelsim.funnel import Funnel
from funnelsim.scenario import DAYS_PER_MONTH


@dataclass
class Tally:
    """Fixed-size counts of a batch of replications (R × periods × channels or stages)."""

    leads: np.ndarray  # (R, P, C) new leads that arrived
    won: np.ndarray  # (R, P, C) leads won (closed in the period)
    lost: np.ndarray  # (R, P, C)
    revenue: np.ndarray  # (R, P, C) deal values booked at close (currency)
    cycle_days: np.ndarray  # (R, P, C) sum of days from arrival to won, new leads won
    cycle_count: np.ndarray  # (R, P, C) how many such leads
    entered: np.ndarray  # (R, P, S) stage entries (opening pipeline not counted)
    stay_days: np.ndarray  # (R, P, S) sum of sampled durations of the stays begun
    open: np.ndarray  # (R, P, S) leads in the stage at the period's end
    # silent losses (outcome silent_loss: gone at once, nothing recorded), by channel and by
    # the stage they were lost from
    silent_lost: np.ndarray | None = None  # (R, P, C)
    silent_lost_by_stage: np.ndarray | None = None  # (R, P, S)
    # the sales team (DES only; None without one)
    cold: np.ndarray | None = None  # (R, P, S) leads that went cold waiting for a slot
    wait_days: np.ndarray | None = None  # (R, P, S) days waited for a slot, by entry period
    waited: np.ndarray | None = None  # (R, P, S) entries that had to wait at all
    unserved: np.ndarray | None = None  # (R, P, S) entries never served (cold or still waiting)
    # leads that needed a rep for the first time (new leads and the opening pipeline in a
    # rep-worked stage), by the stage and period they reached the team in
    reached: np.ndarray | None = None  # (R, P, S)
    queue: np.ndarray | None = None  # (R, P, S) leads waiting for a slot at the period's end
    busy_slot_days: np.ndarray | None = None  # (R, P) slot-days in use
    slot_days: np.ndarray | None = None  # (R, P) slot-days available
    # repeat sales (customers.py; None without a repeat model)
    first_payment: np.ndarray | None = None  # (R, P, C) subscription price paid at the close
    repeat_revenue: np.ndarray | None = None  # (R, P, C) repeat purchases of new customers
    existing_revenue: np.ndarray | None = None  # (R, P) repeat purchases of existing ones
    repeat_purchases: np.ndarray | None = None  # (R, P) repeat purchases (renewals)
    active_customers: np.ndarray | None = None  # (R, P) customers active at the period's end
    # the new customers of the batch, for customers.py (not a count)
    customers: Cohort | None = None
    # the existing customers, [(row, customers.Existing)], when the DES drew them already
    # (for word of mouth; not a count)
    existing: list | None = None

    @classmethod
    def zeros(
        cls,
        replications: int,
        periods: int,
        channels: int,
        stages: int,
        *,
        team: bool = False,
        repeat: bool = False,
    ) -> Tally:
        shapes = {
            "channel": (replications, periods, channels),
            "stage": (replications, periods, stages),
            "funnel": (replications, periods),
        }
        return cls(
            **{
                name: np.zeros(shapes[kind])
                for name, kind in TALLY_DIMS.items()
                if (team or name not in TEAM_FIELDS) and (repeat or name not in REPEAT_FIELDS)
            }
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields that are present (the sales-team ones only with a team)."""
        values = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("customers", "existing")
        }
        return {name: a for name, a in values.items() if a is not None}


_TEAM_BY_STAGE = ("cold", "wait_days", "waited", "unserved", "reached", "queue")
TALLY_DIMS = {
    **dict.fromkeys(
        ("leads", "won", "lost", "silent_lost", "revenue", "cycle_days", "cycle_count"), "channel"
    ),
    **dict.fromkeys(
        ("entered", "stay_days", "open", "silent_lost_by_stage", *_TEAM_BY_STAGE), "stage"
    ),
    **dict.fromkeys(("busy_slot_days", "slot_days"), "funnel"),
    **dict.fromkeys(("first_payment", "repeat_revenue"), "channel"),
    **dict.fromkeys(("existing_revenue", "repeat_purchases", "active_customers"), "funnel"),
}
"""What each tally field is broken down by, besides replication and period."""

TEAM_FIELDS = (*_TEAM_BY_STAGE, "busy_slot_days", "slot_days")
REPEAT_FIELDS = (
    "first_payment",
    "repeat_revenue",
    "existing_revenue",
    "repeat_purchases",
    "active_customers",
)


@dataclass
class Cohort:
    """New customers (won deals) of a batch: replication row, channel, close time, key."""

    rep: np.ndarray
    channel: np.ndarray
    t: np.ndarray
    key: np.ndarray


# ------------------------------------------------------------------ uncertain inputs


@dataclass(frozen=True)
class Inputs:
    """Per-replication draws shared by all leads of a replication."""

    volume: np.ndarray  # (R, C) leads_per_month base of each channel
    probs: tuple[np.ndarray, ...]  # per stage: (R, C, K) outcome probabilities
    rates: np.ndarray  # (R, C, P) expected new leads per day in each period
    # from posterior draws: a distribution per replication for a stage's duration
    # distribution g, {(stage, g): [dist of replication 0, 1, ...]}, and deal values
    # per replication and channel
    durations: dict[tuple[int, int], list] = field(default_factory=dict)
    deal_values: list[list] | None = None


def draw_inputs(funnel: Funnel, rep_keys: np.ndarray) -> Inputs:
    """Volumes given as distributions and Dirichlet probabilities, once per replication."""
    reps = len(rep_keys)
    volume = np.empty((reps, len(funnel.channels)))
    for c, base in enumerate(funnel.base_volume):
        if isinstance(base, float | int):
            volume[:, c] = base
        else:
            part = int(funnel.channel_ids[c])
            volume[:, c] = base.draw(streams.derive(rep_keys, streams.salt(streams.INPUT, part)))
    probs = []
    for table in funnel.tables:
        p = np.broadcast_to(table.probs, (reps, *table.probs.shape)).copy()
        for index, (part, alpha) in enumerate(table.sources):
            if alpha is None:
                continue
            keys = streams.derive(rep_keys, streams.salt(streams.INPUT, part))
            g = np.zeros((reps, alpha.size))
            for k, a in enumerate(alpha):
                if a > 0:
                    g[:, k] = standard_gamma(a, streams.indexed(keys, k))
            g /= g.sum(axis=1, keepdims=True)
            p[:, table.source_of == index, :] = g[:, None, :]
        probs.append(p)
    rates = volume[:, :, None] * funnel.daily_rate[None, :, :]
    inputs = Inputs(volume=volume, probs=tuple(probs), rates=rates)
    if funnel.posterior is not None:
        inputs = _posterior_inputs(funnel, rep_keys, inputs)
    return inputs


def _posterior_inputs(funnel: Funnel, rep_keys: np.ndarray, inputs: Inputs) -> Inputs:
    """Replace the inputs the posterior has draws of by each replication's joint draw:
    outcome probabilities, duration and deal-value parameters, and arrivals."""
    post = funnel.posterior
    size = next(iter(post.values())).size
    pick = streams.posterior_pick(rep_keys, size)
    stages, channels = funnel.stages, funnel.channels
    for t, probs in zip(funnel.tables, inputs.probs, strict=True):
        names = [funnel.target_name(int(code)) for code in t.targets]
        for c, channel in enumerate(channels):
            keys = [f"p__{stages[t.index]}__{channel}__{n}" for n in names]
            if any(k in post for k in keys):
                drawn = np.stack([post.get(k, np.zeros(size))[pick] for k in keys], axis=1)
                probs[:, c, :] = drawn / drawn.sum(axis=1, keepdims=True)
        for g, dist in enumerate(t.dists):
            labels = [names[k] for _c, k in zip(*np.nonzero(t.dist_of == g), strict=True)]
            for label in [*labels, "all"]:  # per outcome, or one for the stage
                prefix = f"duration__{stages[t.index]}__{label}__"
                params = _params(post, prefix, dist, pick)
                if params is not None:
                    inputs.durations[(t.index, g)] = [dist.model_copy(update=u) for u in params]
                    break
    deal = [[d] * len(rep_keys) for d in funnel.deal_value]
    found = False
    for c, channel in enumerate(channels):
        params = _params(post, f"value__{channel}__", funnel.deal_value[c], pick)
        if params is not None:
            deal[c] = [funnel.deal_value[c].model_copy(update=u) for u in params]
            found = True
    if found:
        inputs = replace(inputs, deal_values=[list(per_rep) for per_rep in zip(*deal, strict=True)])
    cal = funnel.calendar
    for c, channel in enumerate(channels):
        prefix = f"arrivals__{channel}__"
        if prefix + "leads_per_month" not in post:
            continue
        base = post[prefix + "leads_per_month"][pick]
        growth = post.get(prefix + "growth_per_month", np.zeros(size))[pick]
        season = np.ones((len(rep_keys), 12))
        for m in range(12):
            if f"{prefix}season_{m + 1}" in post:
                season[:, m] = post[f"{prefix}season_{m + 1}"][pick]
        rate = (
            base[:, None]
            * season[:, cal.calendar_month - 1]
            * (1.0 + growth[:, None]) ** cal.months_from_start[None, :]
            / DAYS_PER_MONTH
        )
        if prefix + "k" in post:  # negative binomial months: a gamma multiplier each
            k = post[prefix + "k"][pick]
            keys = streams.derive(
                rep_keys, streams.salt(streams.INPUT, int(funnel.channel_ids[c]), 7)
            )
            for r in range(len(rep_keys)):
                month_keys = streams.indexed(keys[r : r + 1], np.arange(cal.periods))
                rate[r] *= standard_gamma(k[r], month_keys) / k[r]
        inputs.rates[:, c, :] = rate
        inputs.volume[:, c] = base
    return inputs


def _params(post: dict, prefix: str, dist, pick: np.ndarray) -> list[dict] | None:
    """Per replication, the parameters of ``dist`` the posterior has draws of (by field)."""
    fields_ = [f for f in type(dist).model_fields if f != "dist" and prefix + f in post]
    if not fields_:
        return None
    values = {f: post[prefix + f][pick] for f in fields_}
    return [{f: float(values[f][r]) for f in fields_} for r in range(pick.size)]


# ------------------------------------------------------------------ arrivals


@dataclass
class Leads:
    """A set of leads (new arrivals or the opening pipeline) of a batch of replications."""

    rep: np.ndarray  # replication (row of the batch)
    channel: np.ndarray
    t: np.ndarray  # arrival time (days); 0 for the opening pipeline
    period: np.ndarray  # the period of t
    key: np.ndarray  # the lead's own random key

    def __len__(self) -> int:
        return self.rep.size

    def take(self, index) -> Leads:
        return Leads(
            self.rep[index], self.channel[index], self.t[index], self.period[index], self.key[index]
        )


def arrivals(
    funnel: Funnel, rep_keys: np.ndarray, rates: np.ndarray, periods: range | None = None
) -> Leads:
    """New leads: a Poisson process per channel, rate constant within each period.

    In period p of channel c, lead j arrives at ``edges[p] + Γ_j / rate`` with Γ_j the
    cumulative sum of Exp(1) gaps drawn from the lead keys; leads with Γ_j below
    ``rate × days`` arrive. A higher rate keeps every existing lead (with the same index and
    draws, a little earlier) and adds new ones at the end. ``periods`` (default: all)
    limits the leads to those arriving in these periods.
    """
    cal = funnel.calendar
    parts = []
    for c in range(len(funnel.channels)):
        for p in range(cal.periods) if periods is None else periods:
            part = arrivals_in(funnel, rep_keys, c, p, rates[:, c, p])
            if part is not None:
                parts.append((c, p, *part))
    if not parts:
        return _no_leads()
    sizes = [part[2].size for part in parts]
    return Leads(
        rep=np.concatenate([part[2] for part in parts]),
        channel=np.repeat([part[0] for part in parts], sizes),
        t=np.concatenate([part[3] for part in parts]),
        period=np.repeat([part[1] for part in parts], sizes),
        key=np.concatenate([part[4] for part in parts]),
    )


def arrivals_in(funnel: Funnel, rep_keys: np.ndarray, c: int, p: int, rate: np.ndarray):
    """The leads of channel ``c`` in period ``p`` at ``rate`` a day, one rate per
    replication (see :func:`arrivals`): (replication rows, times, keys), or None."""
    cal = funnel.calendar
    expected = rate * (cal.edges[p + 1] - cal.edges[p])
    if not (expected > 0).any():
        return None
    salt = streams.salt(streams.ARRIVAL, int(funnel.channel_ids[c]), _month_id(cal, p))
    seg = streams.derive(rep_keys, salt)
    top = float(expected.max())
    n = int(top + 6.0 * np.sqrt(top) + 16)
    while True:
        keys = streams.indexed(seg[:, None], np.arange(n, dtype=np.uint64)[None, :])
        gamma = np.log(streams.to_unit(keys.copy()))
        np.negative(gamma, out=gamma)
        np.cumsum(gamma, axis=1, out=gamma)
        if (gamma[:, -1] >= expected).all():
            break
        n *= 2
    inside = gamma < expected[:, None]
    counts = inside.sum(axis=1)
    t = gamma[inside]
    t /= np.repeat(rate, counts)
    t += cal.edges[p]
    return np.repeat(np.arange(len(rep_keys)), counts), t, keys[inside]


def _month_id(cal, p: int) -> int:
    """Absolute calendar month of period p (year × 12 + month − 1): the arrival stream key."""
    first = cal.start.year * 12 + cal.start.month - 1
    return first + int(cal.months_from_start[p])


def _no_leads() -> Leads:
    empty = np.zeros(0, dtype=np.intp)
    return Leads(empty, empty, np.zeros(0), empty, np.zeros(0, dtype=np.uint64))


def opening_leads(funnel: Funnel, rep_keys: np.ndarray) -> tuple[Leads, np.ndarray]:
    """The opening pipeline in every replication of the batch, and the index of each
    pipeline entry (into ``funnel.open_*``)."""
    n = funnel.open_stage.size
    if n == 0:
        return _no_leads(), np.zeros(0, dtype=np.int64)
    salts = streams.salts(streams.PIPELINE, funnel.open_ids)
    keys = streams.mix(np.bitwise_xor(rep_keys[:, None], salts[None, :])).reshape(-1)
    reps = np.repeat(np.arange(len(rep_keys)), n)
    entry = np.tile(np.arange(n), len(rep_keys))
    zero = np.zeros(reps.size, dtype=np.intp)
    leads = Leads(reps, funnel.open_channel[entry], np.zeros(reps.size), zero, keys)
    return leads, entry


# ------------------------------------------------------------------ draws of one stay


class StayDraws:
    """Outcome and duration of a lead's visit to a stage, from the lead's key.

    ``visit`` counts earlier entries of the same lead into the same stage (0 on the first),
    so re-entering a stage draws afresh and a lead's first visit to a stage draws the same
    numbers whatever route brought it there. Each method handles the stays of one stage.

    Two rules turn a drawn (outcome, days) into the stay that happens (:meth:`close`): a
    silent loss takes 0 days, and in a stage with ``stale_after`` T a stay longer than T (a
    silent loss counts as never-ending there) is lost after T days instead.
    """

    def __init__(self, funnel: Funnel, inputs: Inputs):
        self.funnel = funnel
        self.inputs = inputs
        n_stages = len(funnel.stages)
        k_max = max(t.targets.size for t in funnel.tables)
        self.targets = np.full((n_stages, k_max), -1, dtype=np.int64)
        self._choice = []  # per stage: thresholds (scalar / by channel / by replication)
        self._clip = []  # per stage: the last possible slot per (rep, channel), if needed
        self._durations = []  # per stage: ("one", dist) / ("slot", dists) / ("any", ids, dists)
        reps = inputs.volume.shape[0]
        self.channels = len(funnel.channels)
        for t, p in zip(funnel.tables, inputs.probs, strict=True):
            k = t.targets.size
            self.targets[t.index, :k] = t.targets
            # thresholds per cell (replication × channels + channel), one column per slot
            cum = np.cumsum(p, axis=2)[:, :, : k - 1].reshape(reps * self.channels, k - 1)
            if not (p == p[0, 0]).all():  # by channel, Dirichlet or posterior draws
                self._choice.append(("cell", np.ascontiguousarray(cum.T)))
            else:
                self._choice.append(("scalar", [float(x) for x in cum[0]]))
            positive = p > 0
            last = k - 1 - np.argmax(positive[:, :, ::-1], axis=2)
            self._clip.append(last.reshape(-1) if (last < k - 1).any() else None)
            ids = t.dist_of
            if (ids == ids[0, 0]).all() and ids[0, 0] >= 0:
                self._durations.append(("one", t.dists[ids[0, 0]]))
            elif (ids == ids[0]).all():
                self._durations.append(("slot", [t.dists[g] if g >= 0 else None for g in ids[0]]))
            else:
                self._durations.append(("any", ids, t.dists))
        self.stage_ids = [t.stable_id for t in funnel.tables]
        self._salts: dict[int, np.ndarray] = {}
        # per stage: the slots of silent_loss and lost (-1: none), and stale_after (days)
        self.silent_slot = [_slot_of(t.targets, funnel.silent) for t in funnel.tables]
        self.lost_slot = [_slot_of(t.targets, funnel.lost) for t in funnel.tables]
        self.stale_after = [t.stale_after for t in funnel.tables]

    def close(self, stage: int, slot, days, age=None):
        """The stays that happen, from drawn outcome slots and days (arrays or scalars;
        ``age``: days already spent in the stage, for the opening pipeline): a silent loss
        leaves at once; with stale_after T, a stay that would end after T (counting the
        age; a silent loss never ends there) is lost when it reaches T, at once if the lead
        is already T days old. Returns (slot, days)."""
        silent, stale = self.silent_slot[stage], self.stale_after[stage]
        if silent < 0 and stale == np.inf:
            return slot, days
        scalar = np.ndim(slot) == 0
        slot, days = np.array(slot, dtype=np.intp, ndmin=1), np.array(days, float, ndmin=1)
        quiet = slot == silent
        if stale == np.inf:
            days[quiet] = 0.0
        else:
            spent = np.zeros(slot.size) if age is None else np.broadcast_to(age, slot.size)
            late = quiet | (spent + days > stale) | (spent >= stale)
            slot[late] = self.lost_slot[stage]
            days[late] = np.maximum(stale - spent[late], 0.0)
        return (int(slot[0]), float(days[0])) if scalar else (slot, days)

    def salt(self, purpose: int, stage: int, visit: np.ndarray | None) -> np.uint64 | np.ndarray:
        """The salt of a stage's visits: one value for first visits, else per visit."""
        top = 0 if visit is None or visit.size == 0 else int(visit.max())
        table = self._salts.get(purpose)
        if table is None or table.shape[1] <= top:
            width = max(4, 2 * top + 1)
            table = np.array(
                [[streams.salt(purpose, sid, v) for v in range(width)] for sid in self.stage_ids],
                dtype=np.uint64,
            )
            self._salts[purpose] = table
        if top == 0:
            return table[stage, 0]
        return table[stage, visit]

    def outcome(self, stage: int, cell, key, visit=None) -> np.ndarray:
        """Outcome slot (index into the stage's targets) of each stay.

        ``cell`` is each lead's replication (row of the batch) × channels + channel.
        """
        u = streams.uniform(key, self.salt(streams.OUTCOME, stage, visit))
        kind, cum = self._choice[stage]
        slot = np.zeros(u.size, dtype=np.intp)
        for column in cum:  # slot k when u is above the first k thresholds
            slot += u > (column if kind == "scalar" else column[cell])
        last = self._clip[stage]
        if last is not None:  # never pick an impossible outcome because of rounding
            np.minimum(slot, last[cell], out=slot)
        return slot

    def duration(self, stage: int, slot, cell, key, visit=None) -> np.ndarray:
        """Days in the stage for each stay, from the outcome's distribution (0 for an
        outcome without one: silent_loss). The stays' rules are :meth:`close`'s."""
        keys = np.bitwise_xor(key, self.salt(streams.DURATION, stage, visit))
        if self.inputs.durations:
            ids = self.funnel.tables[stage].dist_of[cell % self.channels, slot]
            out = np.zeros(key.size)
            for g, m in _groups(ids + 1, len(self.funnel.tables[stage].dists) + 1):
                if g > 0:
                    out[m] = self._draw(stage, g - 1, keys[m], np.asarray(cell)[m] // self.channels)
            return out
        how = self._durations[stage]
        if how[0] == "one":
            return how[1].draw(keys)
        out = np.zeros(key.size)
        if how[0] == "slot":
            for k, m in _groups(slot, len(how[1])):
                if how[1][k] is not None:
                    out[m] = how[1][k].draw(keys[m])
        else:
            ids = how[1][cell % self.channels, slot]
            for g, m in _groups(ids + 1, len(how[2]) + 1):
                if g > 0:
                    out[m] = how[2][g - 1].draw(keys[m])
        return out

    def _dist(self, stage: int, g: int, rep: int):
        """Distribution g of a stage in replication ``rep`` (its posterior draw, if any)."""
        per_rep = self.inputs.durations.get((stage, g))
        return self.funnel.tables[stage].dists[g] if per_rep is None else per_rep[rep]

    def _draw(self, stage: int, g: int, keys: np.ndarray, reps: np.ndarray) -> np.ndarray:
        if (stage, g) not in self.inputs.durations:
            return self.funnel.tables[stage].dists[g].draw(keys)
        out = np.empty(keys.size)
        for rep, m in _groups(reps, len(self.inputs.durations[(stage, g)])):
            out[m] = self._dist(stage, g, rep).draw(keys[m])
        return out

    def opening(self, stage: int, leads: Leads, age: np.ndarray):
        """Outcome slot and remaining days of the opening stays of pipeline leads in a stage.

        A lead aged a days has outcome k with probability ∝ p_k·S_k(a) and then stays the
        residual of outcome k's duration given that it exceeds a (S = 1 and no stay for
        silent_loss: a lead still open may have been lost silently); then :meth:`close`.
        """
        u = streams.uniform(leads.key, self.salt(streams.OUTCOME, stage, None))
        probs = self.inputs.probs[stage][leads.rep, leads.channel]
        weights = probs * self._survival(stage, leads, age)
        # a lead older than every duration of its replication's draw (possible only with
        # bounded durations) closes at once, by the unconditioned probabilities
        outlived = weights.sum(axis=1) <= 0
        weights[outlived] = probs[outlived]
        cum = np.cumsum(weights, axis=1)
        cum /= cum[:, -1:]
        slot = (u[:, None] > cum[:, :-1]).sum(axis=1)
        last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
        slot = np.minimum(slot, last)
        days = self._opening_days(stage, leads, age, slot, outlived)
        return self.close(stage, slot, days, age)

    def opening_by_outcome(self, stage: int, leads: Leads, age: np.ndarray):
        """The draws of opening stays whose outcome probabilities are not known yet (a
        rep-worked stage: the rep's skill scales them), from the same random numbers as
        :meth:`opening`: per lead the outcome uniform u, and per outcome k the survival
        S_k(a) and the remaining days were k the outcome (NaN where S_k(a) = 0; 0 for a
        silent loss). The caller applies :meth:`close` to what it picks."""
        u = streams.uniform(leads.key, self.salt(streams.OUTCOME, stage, None))
        survival = self._survival(stage, leads, age)
        ids = self.funnel.tables[stage].dist_of[leads.channel]
        days = np.full(survival.shape, np.nan)
        for k in range(survival.shape[1]):
            index = np.flatnonzero((survival[:, k] > 0) & (ids[:, k] >= 0))
            none = np.zeros(index.size, dtype=bool)
            slot = np.full(index.size, k)
            days[index, k] = self._opening_days(stage, leads.take(index), age[index], slot, none)
        if self.silent_slot[stage] >= 0:
            days[:, self.silent_slot[stage]] = 0.0
        return u, survival, days

    def _survival(self, stage: int, leads: Leads, age: np.ndarray) -> np.ndarray:
        """S_k(a) per lead and outcome k: the chance outcome k's duration exceeds the lead's
        age (1 at age 0)."""
        table = self.funnel.tables[stage]
        survival = np.ones((len(leads), table.targets.size))
        aged = age > 0
        ids = table.dist_of[leads.channel]  # (n, K)
        for g in range(len(table.dists)):
            m = aged[:, None] & (ids == g)
            if m.any():
                rows, cols = np.nonzero(m)
                for rep, mm in _groups(leads.rep[rows], self.inputs.volume.shape[0]):
                    r, k = rows[mm], cols[mm]
                    survival[r, k] = self._dist(stage, g, rep).sf(age[r])
        return survival

    def _opening_days(self, stage, leads: Leads, age, slot, outlived) -> np.ndarray:
        """Days left of opening stays with outcome ``slot``: the residual given the age (a
        fresh draw at age 0; 0 for a lead that ``outlived`` every duration)."""
        table = self.funnel.tables[stage]
        aged = age > 0
        ids = table.dist_of[leads.channel]  # (n, K)
        keys = np.bitwise_xor(leads.key, self.salt(streams.DURATION, stage, None))
        chosen = ids[np.arange(slot.size), slot]
        days = np.zeros(slot.size)  # 0 for an outcome without a duration (silent_loss)
        for g, m in _groups(chosen + 1, len(table.dists) + 1):
            if g == 0:
                continue
            g -= 1
            index = np.arange(slot.size)[m]
            for rep, mm in _groups(leads.rep[index], self.inputs.volume.shape[0]):
                at = index[mm]
                dist = self._dist(stage, g, rep)
                old, new = at[aged[at] & ~outlived[at]], at[~aged[at]]
                days[old] = dist.residual(keys[old], age[old])
                days[new] = dist.draw(keys[new])
        days[outlived] = 0.0
        return np.maximum(days, 0.0)

    def deal_value(self, cell: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Value of each won deal (currency); ``cell`` = replication × channels + channel."""
        keys = np.bitwise_xor(key, _DEAL)
        out = np.empty(key.size)
        per_rep = self.inputs.deal_values
        if per_rep is None:
            for c, m in _groups(cell % self.channels, self.channels):
                out[m] = self.funnel.deal_value[c].draw(keys[m])
            return out
        for code, m in _groups(cell, len(per_rep) * self.channels):
            rep, c = divmod(code, self.channels)
            out[m] = per_rep[rep][c].draw(keys[m])
        return out


_DEAL = streams.salt(streams.DEAL_VALUE)


def _slot_of(targets: np.ndarray, code: int) -> int:
    """The slot of outcome ``code`` among a stage's targets, or -1."""
    found = np.flatnonzero(targets == code)
    return int(found[0]) if found.size else -1


def _groups(codes: np.ndarray, size: int):
    """(code, index) for each code present in ``codes`` (small non-negative ints)."""
    if codes.size == 0:
        return
    present = np.flatnonzero(np.bincount(codes, minlength=size))
    if present.size == 1:
        yield int(present[0]), slice(None)
        return
    for code in present.tolist():
        yield code, np.flatnonzero(codes == code)
