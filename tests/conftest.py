"""Shared fixtures: small scenarios built as dicts, and a Monte Carlo tolerance helper."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from funnelsim.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "version": 1,
    "name": "test funnel",
    "start": "2027-01-01",
    "months": 12,
    "replications": 200,
    "seed": 11,
    "currency": "USD",
    "channels": {"web": {"leads_per_month": 120}},
    "stages": {
        "new": {
            "duration": {"dist": "exponential", "mean": 3},
            "next": {"qualified": 0.5, "lost": 0.5},
        },
        "qualified": {
            "duration": {"dist": "lognormal", "median": 5, "sigma": 0.5},
            "next": {"proposal": 0.6, "lost": 0.4},
        },
        "proposal": {
            "duration": {
                "won": {"dist": "gamma", "mean": 12, "shape": 2},
                "lost": {"dist": "exponential", "mean": 6},
            },
            "next": {"won": 0.4, "lost": 0.6},
        },
    },
    "deal_value": {"dist": "lognormal", "median": 10000, "sigma": 0.4},
}


def build(changes: dict[str, Any] | None = None, *, base: dict[str, Any] | None = None, **kw):
    """A scenario from BASE with top-level keys replaced (``changes`` or keywords)."""
    data = copy.deepcopy(base if base is not None else BASE)
    data.update(copy.deepcopy(changes or {}))
    data.update(copy.deepcopy(kw))
    return scenario_from_dict(data)


def within(sample: np.ndarray, expected: float, *, k: float = 4.0) -> tuple[bool, str]:
    """Is the mean of ``sample`` within k standard errors of ``expected``?"""
    sample = np.asarray(sample, dtype=float)
    se = sample.std(ddof=1) / np.sqrt(sample.size)
    diff = sample.mean() - expected
    ok = abs(diff) <= k * se + 1e-9 * max(1.0, abs(expected))
    z = f"{diff / se:+.2f} SE" if se > 0 else "no spread"
    return ok, f"mean {sample.mean():.6g} vs expected {expected:.6g}: {z} (limit {k} SE)"


@pytest.fixture
def base_dict() -> dict[str, Any]:
    return copy.deepcopy(BASE)
