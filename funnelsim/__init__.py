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

from collections.abc import Callable  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from funnelsim.errors import InputError  # noqa: E402
from funnelsim.scenario import Scenario, load_scenario, scenario_from_dict  # noqa: E402

if TYPE_CHECKING:
    from funnelsim.analytic import ChainExpectations
    from funnelsim.forecast import Forecast


def run(
    scenario: Scenario,
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    engine: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Forecast:
    """Simulate ``scenario`` (Monte Carlo) and return its :class:`~funnelsim.forecast.Forecast`.

    ``replications`` and ``seed`` default to the scenario's; ``workers`` (processes) to the
    number of CPUs, and the numbers do not depend on it. ``engine`` is ``"auto"`` (the
    vectorized engine unless the scenario has a sales team), ``"vectorized"`` or ``"des"``.
    ``progress(done, total)`` is called as replications finish. An engine that cannot run
    the scenario, or options below their minimum (1 replication, seed 0, 1 worker), raise
    ``ValueError``.
    """
    from funnelsim.montecarlo import run as _run  # numpy-heavy: loaded on first use

    return _run(
        scenario,
        replications=replications,
        seed=seed,
        workers=workers,
        engine=engine,
        progress=progress,
    )


def expectations(scenario: Scenario) -> list[ChainExpectations]:
    """Eventual per-channel expectations of the funnel as an absorbing Markov chain: one
    :class:`~funnelsim.analytic.ChainExpectations` per channel (in the scenario's order),
    with ``p_won``, ``visits`` per stage, ``days_to_close_won`` (days), ``deal_value`` and
    ``revenue_per_lead`` (currency). No simulation, no horizon."""
    from funnelsim.analytic import channel_expectations
    from funnelsim.funnel import compile_funnel

    funnel = compile_funnel(scenario)
    return [channel_expectations(funnel, c) for c in range(len(funnel.channels))]
