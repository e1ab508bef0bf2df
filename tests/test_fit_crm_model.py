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


@pytest.mark.parametrize("family", crm.FAMILIES)
def test_pointwise_densities_are_scipys(family):
    rng = np.random.default_rng(1)
    d = rng.gamma(2.0, 5.0, 50)
    theta = np.array([[np.log(3.0), np.log(0.7)], [np.log(1.4), np.log(9.0)]])
    got = crm._log_pdf(family, np.log(d), d, theta)
    for row, (a, b) in zip(got, np.exp(theta), strict=True):
        if family == "lognormal":
            expected = stats.lognorm.logpdf(d, b, scale=a)
        elif family == "gamma":
            expected = stats.gamma.logpdf(d, a, scale=b)
        else:
            expected = stats.weibull_min.logpdf(d, a, scale=b)
        np.testing.assert_allclose(row, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "family, sample",
    [
        ("lognormal", lambda rng, n: rng.lognormal(np.log(10.0), 0.6, n)),
        ("gamma", lambda rng, n: rng.gamma(3.0, 4.0, n)),
        ("weibull", lambda rng, n: 15.0 * rng.weibull(1.5, n)),
    ],
)
def test_waic_picks_the_family_the_stays_came_from(family, sample):
    days = sample(np.random.default_rng(8), 2000)
    fits = {f: crm._fit_family(f, days) for f in crm.FAMILIES}
    waic = {f: crm._waic(f, days, fit[2]) for f, fit in fits.items()}
    assert min(waic, key=waic.get) == family
    # with 2 parameters and 2,000 stays WAIC is AIC's asymptotic equal (both estimate the
    # out-of-sample deviance): within a few units of each other, far less than the gaps
    # between families
    for f, (ll, _, _) in fits.items():
        assert abs(waic[f] - (4.0 - 2.0 * ll)) < 3.0
