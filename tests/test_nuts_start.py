"""NUTS started near the posterior mode (``funnelsim.fit.bayes``): the mode search and its
curvature against closed forms, and sampling from that start against a known posterior."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymc")

from funnelsim.fit import bayes  # noqa: E402


def gaussian(mean, precision):
    def logp_dlogp(x):
        d = x - mean
        return -0.5 * d @ precision @ d, -precision @ d

    return logp_dlogp


def test_independent_gaussian_mode_and_variances_are_exact():
    mean = np.array([3.0, -20.0, 0.5])
    sd = np.array([0.01, 5.0, 1.0])  # scales 500 apart, as a stage with 10,000 stays and one with 4
    mode, variance = bayes.mode_and_scale(gaussian(mean, np.diag(sd**-2.0)), np.zeros(3))
    np.testing.assert_allclose(mode, mean, atol=1e-6)
    np.testing.assert_allclose(variance, sd**2, rtol=1e-3)


def test_correlated_gaussian_mode_and_conditional_variances():
    mean = np.array([1.0, 2.0])
    precision = np.array([[4.0, 1.5], [1.5, 2.0]])
    mode, variance = bayes.mode_and_scale(gaussian(mean, precision), np.array([-5.0, 8.0]))
    np.testing.assert_allclose(mode, mean, atol=0.02)
    # each coordinate's variance with the other held fixed: 1 / the precision's diagonal
    np.testing.assert_allclose(variance, 1 / np.diag(precision), rtol=1e-3)


def test_poisson_log_rate_mode_and_curvature():
    # k events in exposure n, flat prior on x = log rate: mode log(k/n), curvature k
    k, n = 250.0, 40.0

    def logp_dlogp(x):
        return float(k * x[0] - n * np.exp(x[0])), np.array([k - n * np.exp(x[0])])

    mode, variance = bayes.mode_and_scale(logp_dlogp, np.array([5.0]))
    assert mode[0] == pytest.approx(np.log(k / n), abs=1e-4)
    assert variance[0] == pytest.approx(1 / k, rel=1e-2)


def test_steps_into_impossible_values_are_backtracked():
    # logp = 1.5 x + log(1 - x) is -inf from x = 1 on; from x = -0.5 the first Newton step
    # (0.83 / 0.44 = 1.9) lands there and must shrink; the mode is 1 - 1/1.5
    def logp_dlogp(x):
        if x[0] >= 1.0:
            return -np.inf, np.array([np.nan])
        return float(1.5 * x[0] + np.log1p(-x[0])), np.array([1.5 - 1 / (1 - x[0])])

    mode, variance = bayes.mode_and_scale(logp_dlogp, np.array([-0.5]))
    sd = 1 - 1 / 3  # 1 / √curvature, 1/(1-x)², at the mode
    # the search stops when a step gains under 1e-3 in logp: within √(2e-3) ≈ 0.045 sd
    assert mode[0] == pytest.approx(1 / 3, abs=0.05 * sd)
    assert variance[0] == pytest.approx(sd**2, rel=0.1)


@pytest.fixture(scope="module")
def normal_model():
    import pymc as pm

    rng = np.random.default_rng(3)
    y = rng.normal(40.0, 2.0, 400)
    with pm.Model() as m:
        mu = pm.Normal("mu", 0.0, 100.0)
        sigma = pm.HalfNormal("sigma", 10.0)
        pm.Normal("y", mu, sigma, observed=y)
    return m, y


def test_sampling_from_the_mode_agrees_with_the_posterior(normal_model):
    m, y = normal_model
    idata = bayes.sample(m, draws=500, tune=300, chains=2, seed=5, cores=1, from_mode=True)
    mu = idata.posterior["mu"].values.ravel()
    # posterior of mu ≈ Normal(ȳ, s/√n). With at least 200 effective draws (of 1,000), the
    # Monte Carlo error of its mean is at most se/√200 and of its sd about 1/√(2·200) = 5%:
    # tolerances of 4 of those errors
    se = y.std(ddof=1) / np.sqrt(y.size)
    assert abs(mu.mean() - y.mean()) < 4 * se / np.sqrt(200)
    assert mu.std() == pytest.approx(se, rel=0.2)
    assert int(idata.sample_stats["diverging"].sum()) == 0


def test_sampling_from_the_mode_is_reproducible(normal_model):
    m, _ = normal_model
    first, again = (
        bayes.sample(m, draws=50, tune=50, chains=2, seed=9, cores=1, from_mode=True)
        for _ in range(2)
    )
    np.testing.assert_array_equal(first.posterior["mu"].values, again.posterior["mu"].values)
