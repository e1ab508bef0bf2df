"""funnelsim: simulate and forecast a company's sales system.

The Python API for notebooks::

    import funnelsim
    scenario = funnelsim.load_scenario("scenarios/b2b_saas.yaml", overrides=["months=24"])
    forecast = funnelsim.run(scenario, replications=2000)
    forecast.summary()["totals"]["revenue"]      # mean, sd, p5, p50, p95 (currency)
    forecast.metrics("quarter")                   # xarray.Dataset, one row per replication
    funnelsim.expectations(scenario)              # Markov-chain expectations, no simulation
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Scenario",
    "__version__",
    "expectations",
    "load_scenario",
    "run",
    "scenario_from_dict",
]

from funnelsim.errors import InputError  # noqa: E402
from funnelsim.scenario import Scenario, load_scenario, scenario_from_dict  # noqa: E402


def run(scenario, **options):
    """Simulate a scenario; see :func:`funnelsim.montecarlo.run` for the options."""
    from funnelsim.montecarlo import run as _run

    return _run(scenario, **options)


def expectations(scenario):
    """Eventual per-channel expectations of the funnel as an absorbing Markov chain."""
    from funnelsim.analytic import channel_expectations
    from funnelsim.funnel import compile_funnel

    funnel = compile_funnel(scenario)
    return [channel_expectations(funnel, c) for c in range(len(funnel.channels))]
