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

from dataclasses import dataclass, fields

import numpy as np

from funnelsim import streams
from funnelsim.distributions import standard_gamma
from funnelsim.funnel import Funnel


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

    @classmethod
    def zeros(cls, replications: int, periods: int, channels: int, stages: int) -> Tally:
        by_channel = (replications, periods, channels)
        by_stage = (replications, periods, stages)
        return cls(
            **{
                f.name: np.zeros(by_stage if f.name in _STAGE_FIELDS else by_channel)
                for f in fields(cls)
            }
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_STAGE_FIELDS = {"entered", "stay_days", "open"}


# ------------------------------------------------------------------ uncertain inputs


@dataclass(frozen=True)
class Inputs:
    """Per-replication draws shared by all leads of a replication."""

    volume: np.ndarray  # (R, C) leads_per_month base of each channel
    probs: tuple[np.ndarray, ...]  # per stage: (R, C, K) outcome probabilities


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
    return Inputs(volume=volume, probs=tuple(probs))


# ------------------------------------------------------------------ arrivals


@dataclass
class Leads:
    """A set of leads (new arrivals or the opening pipeline) of a batch of replications."""

    rep: np.ndarray  # replication (row of the batch)
    channel: np.ndarray
    t: np.ndarray  # arrival time (days); 0 for the opening pipeline
    key: np.ndarray  # the lead's own random key

    def __len__(self) -> int:
        return self.rep.size


_GAP = streams.salt(streams.ARRIVAL, 0x676170)  # "gap": the lead's inter-arrival draw


def arrivals(funnel: Funnel, rep_keys: np.ndarray, volume: np.ndarray) -> Leads:
    """New leads: a Poisson process per channel, rate constant within each period.

    In period p of channel c, lead j arrives at ``edges[p] + Γ_j / rate`` with Γ_j the
    cumulative sum of Exp(1) gaps drawn from the lead keys; leads with Γ_j below
    ``rate × days`` arrive. A higher rate keeps every existing lead (with the same index and
    draws, a little earlier) and adds new ones at the end.
    """
    cal = funnel.calendar
    out_rep, out_ch, out_t, out_key = [], [], [], []
    reps = np.arange(len(rep_keys))
    for c in range(len(funnel.channels)):
        for p in range(cal.periods):
            rate = volume[:, c] * funnel.daily_rate[c, p]
            days = cal.edges[p + 1] - cal.edges[p]
            expected = rate * days
            if not (expected > 0).any():
                continue
            month_id = _month_id(cal, p)
            seg = streams.derive(
                rep_keys, streams.salt(streams.ARRIVAL, int(funnel.channel_ids[c]), month_id)
            )
            top = float(expected.max())
            n = int(top + 6.0 * np.sqrt(top) + 16)
            while True:
                keys = streams.indexed(seg[:, None], np.arange(n, dtype=np.uint64)[None, :])
                gamma = np.cumsum(-np.log(streams.uniform(keys, _GAP)), axis=1)
                if (gamma[:, -1] >= expected).all():
                    break
                n *= 2
            inside = gamma < expected[:, None]
            r_idx, j_idx = np.nonzero(inside)
            out_rep.append(reps[r_idx])
            out_ch.append(np.full(r_idx.size, c, dtype=np.int64))
            out_t.append(cal.edges[p] + gamma[r_idx, j_idx] / rate[r_idx])
            out_key.append(keys[r_idx, j_idx])
    if not out_rep:
        return _no_leads()
    return Leads(
        rep=np.concatenate(out_rep),
        channel=np.concatenate(out_ch),
        t=np.concatenate(out_t),
        key=np.concatenate(out_key),
    )


def _month_id(cal, p: int) -> int:
    """Absolute calendar month of period p (year × 12 + month − 1): the arrival stream key."""
    first = cal.start.year * 12 + cal.start.month - 1
    return first + int(cal.months_from_start[p])


def _no_leads() -> Leads:
    empty = np.zeros(0, dtype=np.int64)
    return Leads(rep=empty, channel=empty, t=np.zeros(0), key=np.zeros(0, dtype=np.uint64))


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
    leads = Leads(rep=reps, channel=funnel.open_channel[entry], t=np.zeros(reps.size), key=keys)
    return leads, entry


# ------------------------------------------------------------------ draws of one stay


class StayDraws:
    """Outcome and duration of a lead's visit to a stage, from the lead's key.

    ``visit`` counts earlier entries of the same lead into the same stage (0 on the first),
    so re-entering a stage draws afresh and a lead's first visit to a stage draws the same
    numbers whatever route brought it there.
    """

    def __init__(self, funnel: Funnel, inputs: Inputs):
        self.funnel = funnel
        self.inputs = inputs
        n_stages = len(funnel.stages)
        k_max = max(t.targets.size for t in funnel.tables)
        reps = inputs.volume.shape[0]
        channels = len(funnel.channels)
        # thresholds[r, s, c, :] — u above the first k thresholds means outcome k
        self.thresholds = np.full((reps, n_stages, channels, k_max - 1), np.inf)
        self.last = np.zeros((reps, n_stages, channels), dtype=np.int64)
        self.targets = np.full((n_stages, k_max), -1, dtype=np.int64)
        self.dist_id = np.full((n_stages, channels, k_max), -1, dtype=np.int64)
        self.dists = []
        for t, p in zip(funnel.tables, inputs.probs, strict=True):
            k = t.targets.size
            cum = np.cumsum(p, axis=2)
            self.thresholds[:, t.index, :, : k - 1] = cum[:, :, : k - 1]
            positive = p > 0
            self.last[:, t.index, :] = k - 1 - np.argmax(positive[:, :, ::-1], axis=2)
            self.targets[t.index, :k] = t.targets
            offset = len(self.dists)
            self.dists.extend(t.dists)
            self.dist_id[t.index, :, :k] = np.where(t.dist_of >= 0, t.dist_of + offset, -1)
        self.stage_ids = [t.stable_id for t in funnel.tables]
        self._salts: dict[int, np.ndarray] = {}

    def _salt_table(self, purpose: int, stage: np.ndarray, visit: np.ndarray) -> np.ndarray:
        """The salt of each (stage, visit) pair: a table lookup, extended when needed."""
        top = int(visit.max()) if visit.size else 0
        table = self._salts.get(purpose)
        if table is None or table.shape[1] <= top:
            width = max(4, 2 * top + 1)
            table = np.array(
                [[streams.salt(purpose, sid, v) for v in range(width)] for sid in self.stage_ids],
                dtype=np.uint64,
            ).reshape(len(self.stage_ids), width)
            self._salts[purpose] = table
        return table[stage, visit]

    def outcome(self, rep, stage, channel, key, visit) -> np.ndarray:
        """Outcome slot (index into the stage's targets) of each stay."""
        u = streams.uniform(key, self._salt_table(streams.OUTCOME, stage, visit))
        thresholds = self.thresholds[rep, stage, channel]
        k = (u[:, None] > thresholds).sum(axis=1)
        return np.minimum(k, self.last[rep, stage, channel])

    def duration(self, stage, channel, slot, key, visit) -> np.ndarray:
        """Days in the stage for each stay, from the outcome's distribution."""
        keys = streams.derive(key, self._salt_table(streams.DURATION, stage, visit))
        ids = self.dist_id[stage, channel, slot]
        out = np.empty(key.size)
        for g, m in _groups(ids, len(self.dists)):
            out[m] = self.dists[g].draw(keys[m])
        return out

    def opening(self, leads: Leads, entry: np.ndarray):
        """Outcome slot and remaining days of the opening stays of pipeline leads.

        A lead aged a days has outcome k with probability ∝ p_k·S_k(a) and then stays the
        residual of outcome k's duration given that it exceeds a.
        """
        f = self.funnel
        stage = f.open_stage[entry]
        age = f.open_age[entry]
        visit = np.zeros(stage.size, dtype=np.int64)
        u = streams.uniform(leads.key, self._salt_table(streams.OUTCOME, stage, visit))
        slots = np.zeros(stage.size, dtype=np.int64)
        for s in np.unique(stage).tolist():
            m = np.flatnonzero(stage == s)
            table = f.tables[s]
            weights = self.inputs.probs[s][leads.rep[m], leads.channel[m]].copy()
            aged = age[m] > 0
            for k in range(table.targets.size):
                ids = table.dist_of[leads.channel[m], k]
                for g in np.unique(ids[ids >= 0]).tolist():
                    mm = aged & (ids == g)
                    weights[mm, k] *= table.dists[g].sf(age[m][mm])
            cum = np.cumsum(weights, axis=1)
            cum /= cum[:, -1:]
            k = (u[m, None] > cum[:, :-1]).sum(axis=1)
            last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
            slots[m] = np.minimum(k, last)
        keys = streams.derive(leads.key, self._salt_table(streams.DURATION, stage, visit))
        ids = self.dist_id[stage, leads.channel, slots]
        days = np.empty(stage.size)
        for g in np.unique(ids).tolist():
            m = ids == g
            aged = m & (age > 0)
            fresh = m & ~(age > 0)
            days[aged] = self.dists[g].residual(keys[aged], age[aged])
            days[fresh] = self.dists[g].draw(keys[fresh])
        return stage, slots, np.maximum(days, 0.0)

    def deal_value(self, channel: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Value of each won deal (currency)."""
        keys = streams.derive(key, _DEAL)
        out = np.empty(key.size)
        for c, m in _groups(channel, len(self.funnel.channels)):
            out[m] = self.funnel.deal_value[c].draw(keys[m])
        return out


_DEAL = streams.salt(streams.DEAL_VALUE)


def _groups(codes: np.ndarray, size: int):
    """(code, index array) for each code present in ``codes`` (small non-negative ints)."""
    if codes.size == 0:
        return
    present = np.flatnonzero(np.bincount(codes, minlength=size))
    if present.size == 1:
        yield int(present[0]), slice(None)
        return
    for code in present.tolist():
        yield code, np.flatnonzero(codes == code)
