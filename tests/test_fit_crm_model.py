"""The funnel model's hand-written pieces against their textbook forms: the transition
priors on logits are the hierarchical Dirichlet densities (SciPy's), and the layout maps
the logits back to each stage's probabilities."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("pymc")

from funnelsim.fit import crm  # noqa: E402


def fake_history():
    # stage 0 → 1 or lost (code 3); stage 1 → won (2), lost or back to 0; stage 2 has
    # one outcome only (lost): 3 stages with 2, 3 and 1 outcomes, 2 channels
    stay_stage = np.array([0, 0, 1, 1, 1, 2])
    stay_outcome = np.array([1, 4, 3, 4, 0, 4])
    return SimpleNamespace(
        stages=["new", "proposal", "parked"],
        channels=["web", "partners"],
        stay_stage=stay_stage,
        stay_outcome=stay_outcome,
    )


def test_layout_rows_and_round_trip():
    layout = crm.TransitionLayout.of(fake_history())
    assert layout.first_row == {0: 0, 1: 3}  # the one-outcome stage has no row
    assert layout.index.shape == (6, 3) and layout.free == 3 * 1 + 3 * 2
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(4, layout.free))
    p = layout.probabilities(theta)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)
    assert np.all(p[..., ~layout.real] == 0)
    # additive log-ratio: log p_k / p_K is θ's entry for outcome k
    row, stage_width = 4, 3  # proposal's first channel
    free = layout.index[row, : stage_width - 1]
    np.testing.assert_allclose(
        np.log(p[:, row, : stage_width - 1] / p[:, row, [stage_width - 1]]), theta[:, free]
    )


def test_transitions_prior_is_the_hierarchical_dirichlet_density():
    import pymc as pm
    import pytensor.tensor as pt

    layout = crm.TransitionLayout.of(fake_history())
    with pm.Model() as m:
        crm._transitions(pm, pt, layout)
    f = m.compile_logp()  # the Flat logits add 0: the potential alone
    rng = np.random.default_rng(5)
    gaps = []
    for _ in range(4):
        theta = rng.normal(0, 1.5, layout.free)
        x = layout.probabilities(theta)
        expected = 0.0
        for first in layout.first_row.values():
            k = int(layout.real[first].sum())
            mean = x[first, :k]
            # density of the simplex point times the Jacobian of the log-ratio map, Π x_k
            expected += stats.dirichlet.logpdf(mean, np.ones(k)) + np.log(mean).sum()
            for c in range(layout.channels):
                p = x[first + 1 + c, :k]
                expected += stats.dirichlet.logpdf(p, crm.POOLING * mean) + np.log(p).sum()
        gaps.append(f({"transition_logits": theta}) - expected)
    # equal up to the dropped constants (log Γ of the concentrations' sums)
    np.testing.assert_allclose(gaps, gaps[0], atol=1e-8)
