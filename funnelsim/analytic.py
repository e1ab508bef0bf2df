"""Exact expectations of the funnel as an absorbing Markov chain (no simulation).

Stages are the transient states, ``won`` and ``lost`` the absorbing ones. With ``Q`` the
stage-to-stage and ``R`` the stage-to-absorption probabilities, the fundamental matrix
``N = (I − Q)⁻¹`` gives expected visits; ``N R`` the absorption probabilities (Kemeny & Snell
1960, ch. 3). Expected times add mean durations per (stage, outcome), weighted by the
probability of ending won (first-step analysis). Uncertain (Dirichlet) probabilities and
volumes enter with their means. These are *eventual* values, without a horizon; the engines
are tested against them where the horizon cut is negligible. Expected arrivals per period,
which do depend on the horizon, are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelsim.funnel import Funnel

__all__ = [
    "ChainExpectations",
    "channel_expectations",
    "expected_leads",
    "pipeline_expectations",
    "transition_matrices",
]


@dataclass(frozen=True)
class ChainExpectations:
    """What a new lead of one channel is expected to do, eventually."""

    channel: str
    p_won: float
    p_lost: float
    visits: dict[str, float]  # expected entries into each stage, re-entries counted
    days_to_close_won: float  # E[days from arrival to won | won]
    days_to_close: float  # E[days from arrival to won or lost]
    deal_value: float  # mean first purchase of a won deal: deal value (+ subscription price)
    revenue_per_lead: float  # p_won × deal_value (currency): new revenue, not repeat


def transition_matrices(funnel: Funnel, channel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P`` (S × S+2, mean outcome probabilities) and ``D`` (S × S+2, mean days per outcome).

    Columns are stages, then won, then lost. Also returns ``N = (I − Q)⁻¹``.
    """
    n = len(funnel.stages)
    P = np.zeros((n, n + 2))
    D = np.zeros((n, n + 2))
    for t in funnel.tables:
        for k, code in enumerate(t.targets):
            p = t.probs[channel, k]
            P[t.index, code] += p
            if t.dist_of[channel, k] >= 0:
                D[t.index, code] = t.dists[t.dist_of[channel, k]].expected_value()
    N = np.linalg.inv(np.eye(n) - P[:, :n])
    return P, D, N


def _absorption(funnel: Funnel, channel: int):
    n = len(funnel.stages)
    P, D, N = transition_matrices(funnel, channel)
    p_won = N @ P[:, n]  # P(won | at stage s)
    p_won_ext = np.concatenate([p_won, [1.0, 0.0]])  # ... or at won / lost
    won_time = N @ ((P * D) @ p_won_ext)  # E[T · 1{won} | at s]
    any_time = N @ (P * D).sum(axis=1)  # E[T | at s]
    return P, D, N, p_won, won_time, any_time


def channel_expectations(funnel: Funnel, channel: int) -> ChainExpectations:
    """Eventual expectations for a new lead of ``channel`` (entering the first stage)."""
    P, D, N, p_won, won_time, any_time = _absorption(funnel, channel)
    entry = 0
    value = first_purchase(funnel, channel)
    pw = float(p_won[entry])
    return ChainExpectations(
        channel=funnel.channels[channel],
        p_won=pw,
        p_lost=1.0 - pw,
        visits={s: float(N[entry, i]) for i, s in enumerate(funnel.stages)},
        days_to_close_won=float(won_time[entry] / pw) if pw > 0 else float("nan"),
        days_to_close=float(any_time[entry]),
        deal_value=value,
        revenue_per_lead=pw * value,
    )


def pipeline_expectations(funnel: Funnel) -> dict[str, float]:
    """Expected eventual wins, losses, revenue and stage entries of the opening pipeline.

    A lead aged ``a`` in its stage has outcome k with probability ∝ p_k·S_k(a); after that
    it behaves like any lead arriving in the outcome's stage. ``entries`` counts entries
    after the opening stay (the opening stay itself is not an entry).
    """
    n = len(funnel.stages)
    won = revenue = 0.0
    entries = np.zeros(n)
    cache: dict[int, tuple] = {}
    for stage, channel, age, value in zip(
        funnel.open_stage, funnel.open_channel, funnel.open_age, funnel.open_value, strict=True
    ):
        if channel not in cache:
            P, _, N, p_won, _, _ = _absorption(funnel, int(channel))
            cache[channel] = (P, N, p_won)
        P, N, p_won = cache[channel]
        table = funnel.tables[stage]
        weights = np.zeros(n + 2)
        for k, code in enumerate(table.targets):
            p = table.probs[channel, k]
            if p > 0:
                dist = table.dists[table.dist_of[channel, k]]
                weights[code] += p * (float(dist.sf(age)) if age > 0 else 1.0)
        weights /= weights.sum()
        pw = weights[n] + weights[:n] @ p_won
        won += pw
        entries += weights[:n] @ N
        mean_value = first_purchase(funnel, channel) if np.isnan(value) else value
        revenue += pw * mean_value
    count = len(funnel.open_stage)
    return {
        "leads": float(count),
        "won": won,
        "lost": count - won,
        "revenue": revenue,
        **{f"entered:{s}": float(entries[i]) for i, s in enumerate(funnel.stages)},
    }


def first_purchase(funnel: Funnel, channel: int) -> float:
    """Mean value of a won deal's first purchase: its deal value, plus the first payment of a
    subscription (currency)."""
    value = funnel.deal_value[channel].expected_value()
    repeat = funnel.repeat
    if repeat is not None and repeat.model == "subscription":
        value += float(repeat.price)
    return value


def expected_leads(funnel: Funnel) -> np.ndarray:
    """Expected new leads per channel and period, (C, P): ∫ rate over each period, exactly."""
    volume = np.array([funnel.mean_volume(c) for c in range(len(funnel.channels))])
    return volume[:, None] * funnel.daily_rate * np.diff(funnel.calendar.edges)[None, :]


# ------------------------------------------------------------------ queueing oracles


def erlang_c(servers: int, arrival_rate: float, service_rate: float) -> dict[str, float]:
    """M/M/c in steady state (Erlang 1917): probability an arrival waits, and mean wait.

    ``arrival_rate`` and ``service_rate`` per day; the mean wait is in days, over all
    arrivals (those that do not wait count as 0). Requires arrival_rate < servers × service_rate.
    """
    a = arrival_rate / service_rate
    if a >= servers:
        raise ValueError(f"unstable: offered load {a:g} >= {servers} servers")
    term = 1.0
    below = 0.0
    for k in range(servers):
        below += term
        term *= a / (k + 1)  # term = a^(k+1) / (k+1)!
    top = term * servers / (servers - a)
    p_wait = top / (below + top)
    return {"p_wait": p_wait, "mean_wait": p_wait / (servers * service_rate - arrival_rate)}


def erlang_a(
    servers: int, arrival_rate: float, service_rate: float, patience_rate: float
) -> dict[str, float]:
    """M/M/c+M in steady state (Palm's Erlang A): waiting leads leave at ``patience_rate``.

    Solved as the birth-death chain of the number of leads present (births at the arrival
    rate; deaths at service_rate × min(n, c) + patience_rate × (n − c)⁺), truncated where the
    probabilities vanish. Returns the probability of waiting, the mean wait over all
    arrivals (days) and the fraction that abandons (goes cold), θ·E[queue]/λ.
    """
    weights = [1.0]
    n = 0
    while True:
        n += 1
        death = service_rate * min(n, servers) + patience_rate * max(n - servers, 0)
        weights.append(weights[-1] * arrival_rate / death)
        if n > servers and weights[-1] < 1e-16 * sum(weights):
            break
    total = sum(weights)
    pi = [w / total for w in weights]
    queue = sum(max(k - servers, 0) * p for k, p in enumerate(pi))
    return {
        "p_wait": sum(pi[servers:]),
        "mean_wait": queue / arrival_rate,
        "p_abandon": patience_rate * queue / arrival_rate,
    }
