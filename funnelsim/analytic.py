"""Exact expectations of the funnel as an absorbing Markov chain (no simulation).

Stages are the transient states, ``won``, ``lost`` and ``silent_loss`` the absorbing ones
(a silent loss takes no time). A stage's ``stale_after`` T turns outcome k's probability
p_k into p_k·F_k(T) and adds Σ_k p_k·S_k(T) (and a silent loss's probability) to lost,
after T days; the other outcomes' mean days become E[X_k | X_k ≤ T]. With ``Q`` the
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
    p_lost: float  # recorded losses (stale leads included)
    visits: dict[str, float]  # expected entries into each stage, re-entries counted
    days_to_close_won: float  # E[days from arrival to won | won]
    days_to_close: float  # E[days from arrival to won or lost]
    deal_value: float  # mean first purchase of a won deal: deal value (+ subscription price)
    revenue_per_lead: float  # p_won × deal_value (currency): new revenue, not repeat
    p_silent_lost: float = 0.0  # lost with nothing recorded (outcome silent_loss)


def transition_matrices(funnel: Funnel, channel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P`` (S × S+3, mean outcome probabilities) and ``D`` (S × S+3, mean days per outcome).

    Columns are stages, then won, lost and silent_loss. A stage's ``stale_after`` T moves
    the stays longer than T (and silent losses) to lost, after T days. Also returns
    ``N = (I − Q)⁻¹``.
    """
    n = len(funnel.stages)
    P = np.zeros((n, n + 3))
    days = np.zeros((n, n + 3))  # probability × mean days, per column
    for t in funnel.tables:
        stale = t.stale_after
        for k, code in enumerate(t.targets):
            p = t.probs[channel, k]
            if p <= 0:
                continue
            g = t.dist_of[channel, k]
            if code == funnel.silent or g < 0:  # no time in the stage
                if np.isfinite(stale) and code == funnel.silent:
                    P[t.index, funnel.lost] += p
                    days[t.index, funnel.lost] += p * stale
                else:
                    P[t.index, code] += p
                continue
            dist = t.dists[g]
            if np.isfinite(stale):
                late = float(dist.sf(stale))
                P[t.index, code] += p * (1.0 - late)
                days[t.index, code] += p * _mean_up_to(dist, stale)
                P[t.index, funnel.lost] += p * late
                days[t.index, funnel.lost] += p * late * stale
            else:
                P[t.index, code] += p
                days[t.index, code] += p * dist.expected_value()
    D = np.divide(days, P, out=np.zeros_like(P), where=P > 0)
    N = np.linalg.inv(np.eye(n) - P[:, :n])
    return P, D, N


def _mean_up_to(dist, limit: float) -> float:
    """E[X; X ≤ limit] = ∫₀^limit S(x) dx − limit·S(limit) (days), by quadrature (exact for
    fixed and empirical durations)."""
    values = getattr(dist, "values", None)
    if values is not None:  # empirical
        v = np.asarray(values, dtype=float)
        return float(v[v <= limit].sum() / v.size)
    if getattr(dist, "dist", "") == "fixed":
        return float(dist.value) if dist.value <= limit else 0.0
    x = np.linspace(0.0, limit, 20_001)
    s = np.asarray(dist.sf(x), dtype=float)
    integral = float(np.sum((s[1:] + s[:-1]) / 2) * (x[1] - x[0]))
    return max(integral - limit * float(dist.sf(limit)), 0.0)


def _absorption(funnel: Funnel, channel: int):
    n = len(funnel.stages)
    P, D, N = transition_matrices(funnel, channel)
    p_won = N @ P[:, n]  # P(won | at stage s)
    p_won_ext = np.concatenate([p_won, [1.0, 0.0, 0.0]])  # ... or at won / lost / silent
    won_time = N @ ((P * D) @ p_won_ext)  # E[T · 1{won} | at s]
    any_time = N @ (P * D).sum(axis=1)  # E[T | at s]
    return P, D, N, p_won, won_time, any_time


def channel_expectations(funnel: Funnel, channel: int) -> ChainExpectations:
    """Eventual expectations for a new lead of ``channel`` (entering the first stage)."""
    P, D, N, p_won, won_time, any_time = _absorption(funnel, channel)
    entry = 0
    value = first_purchase(funnel, channel)
    pw = float(p_won[entry])
    silent = float((N @ P[:, funnel.silent])[entry])
    return ChainExpectations(
        channel=funnel.channels[channel],
        p_won=pw,
        p_lost=1.0 - pw - silent,
        p_silent_lost=silent,
        visits={s: float(N[entry, i]) for i, s in enumerate(funnel.stages)},
        days_to_close_won=float(won_time[entry] / pw) if pw > 0 else float("nan"),
        days_to_close=float(any_time[entry]),
        deal_value=value,
        revenue_per_lead=pw * value,
    )


def pipeline_expectations(funnel: Funnel) -> dict[str, float]:
    """Expected eventual wins, losses, silent losses, revenue and stage entries of the
    opening pipeline.

    A lead aged ``a`` in its stage has outcome k with probability ∝ p_k·S_k(a) (S = 1 for
    silent_loss); after that it behaves like any lead arriving in the outcome's stage. With
    ``stale_after`` T it is lost if a ≥ T, else outcome k keeps p_k·(S_k(a) − S_k(T)) and
    lost gains p_k·S_k(T) (and the silent loss's weight). ``entries`` counts entries after
    the opening stay (the opening stay itself is not an entry).
    """
    n = len(funnel.stages)
    won = revenue = silent = 0.0
    entries = np.zeros(n)
    cache: dict[int, tuple] = {}
    for stage, channel, age, value in zip(
        funnel.open_stage, funnel.open_channel, funnel.open_age, funnel.open_value, strict=True
    ):
        if channel not in cache:
            P, _, N, p_won, _, _ = _absorption(funnel, int(channel))
            cache[channel] = (P, N, p_won, N @ P[:, funnel.silent])
        P, N, p_won, p_silent = cache[channel]
        weights = _opening_weights(funnel, funnel.tables[stage], int(channel), float(age))
        pw = weights[n] + weights[:n] @ p_won
        won += pw
        silent += weights[n + 2] + weights[:n] @ p_silent
        entries += weights[:n] @ N
        mean_value = first_purchase(funnel, channel) if np.isnan(value) else value
        revenue += pw * mean_value
    count = len(funnel.open_stage)
    return {
        "leads": float(count),
        "won": won,
        "lost": count - won - silent,
        "silent_lost": silent,
        "revenue": revenue,
        **{f"entered:{s}": float(entries[i]) for i, s in enumerate(funnel.stages)},
    }


def _opening_weights(funnel: Funnel, table, channel: int, age: float) -> np.ndarray:
    """P(the opening stay of a lead aged ``age`` ends in each column: stages, won, lost,
    silent_loss), as :meth:`StayDraws.opening` and :meth:`StayDraws.close` draw it."""
    n = len(funnel.stages)
    stale = table.stale_after
    weights = np.zeros(n + 3)
    if age >= stale:
        weights[funnel.lost] = 1.0
        return weights
    probs = table.probs[channel]
    survival = np.ones(table.targets.size)
    late = np.zeros(table.targets.size)  # S_k(T): still there at stale_after
    for k in range(table.targets.size):
        g = table.dist_of[channel, k]
        if probs[k] <= 0:
            continue
        if g < 0:  # silent_loss: never ends on its own in a stale stage
            late[k] = 1.0 if np.isfinite(stale) else 0.0
            continue
        dist = table.dists[g]
        if age > 0:
            survival[k] = float(dist.sf(age))
        if np.isfinite(stale):
            late[k] = float(dist.sf(stale))
    weights_k = probs * survival
    if weights_k.sum() <= 0:  # older than every duration: closes at once, unconditioned
        weights_k, late = probs.copy(), np.zeros_like(late)
    for k, code in enumerate(table.targets):
        weights[code] += weights_k[k] - probs[k] * late[k]
        weights[funnel.lost] += probs[k] * late[k]
    return weights / weights_k.sum()


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
