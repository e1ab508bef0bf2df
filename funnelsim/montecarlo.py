"""Monte Carlo runs: replications, seeding, worker processes, and reduction into a Forecast.

Replication ``i`` always uses stream ``i`` of ``SeedSequence(seed).spawn(replications)``
(see :mod:`funnelsim.streams`), and every replication's tally is stored at its own row, so
the numbers do not depend on the number of workers, on how replications are batched or on
the order in which workers finish.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from funnelsim import __version__, analytic, economics, streams
from funnelsim.engine.common import Tally
from funnelsim.funnel import Funnel, compile_funnel
from funnelsim.scenario import Scenario

if TYPE_CHECKING:
    from funnelsim.forecast import Forecast

ENGINES = ("auto", "vectorized", "des")
_LEADS_PER_BATCH = 200_000  # vectorized: leads simulated together (bounds memory)
_BATCHES_PER_WORKER = 8  # at least: the last batches even out the workers' finishing times


class EngineError(ValueError):
    """The chosen engine cannot run this scenario."""


def choose_engine(scenario: Scenario, engine: str = "auto") -> str:
    """The engine a run uses: ``auto`` picks vectorized whenever the scenario allows it."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; expected one of: {', '.join(ENGINES)}")
    if scenario.sales_team is not None:
        if engine == "vectorized":
            raise EngineError(
                "the vectorized engine cannot model a sales team (leads wait for the same "
                "reps); use --engine des or auto"
            )
        return "des"
    referrals = [
        name
        for name, ch in scenario.channels.items()
        if ch.leads_per_active_customer_per_month is not None
    ]
    if referrals:
        if engine == "vectorized":
            raise EngineError(
                f"the vectorized engine cannot model word of mouth (channel {referrals[0]}: "
                "its leads come from the customers that earlier leads become); use --engine "
                "des or auto"
            )
        return "des"
    return "vectorized" if engine == "auto" else engine


def run(
    scenario: Scenario,
    *,
    replications: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    engine: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Forecast:
    """Simulate ``scenario`` and return its forecast.

    ``replications`` and ``seed`` default to the scenario's; ``workers`` to the number of
    CPUs. ``progress(done, total)`` is called as replications finish.
    """
    replications = scenario.replications if replications is None else int(replications)
    seed = scenario.seed if seed is None else int(seed)
    if replications < 1:
        raise ValueError(f"replications must be at least 1; got {replications}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    workers = os.cpu_count() or 1 if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    chosen = choose_engine(scenario, engine)
    funnel = compile_funnel(scenario)
    batches = _batches(funnel, chosen, replications, workers)
    tally = Tally.zeros(
        replications,
        funnel.calendar.periods,
        len(funnel.channels),
        len(funnel.stages),
        team=funnel.team is not None,
        repeat=funnel.repeat is not None,
    )
    done = 0
    if workers == 1 or len(batches) == 1:
        for start, stop in batches:
            _place(tally, start, simulate_batch(funnel, chosen, seed, start, stop))
            done += stop - start
            if progress:
                progress(done, replications)
    else:
        context = multiprocessing.get_context(
            "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        )
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(batches)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(funnel,),
        )
        try:
            futures = {
                pool.submit(_worker_batch, chosen, seed, start, stop): (start, stop)
                for start, stop in batches
            }
            import funnelsim.forecast  # noqa: F401 - xarray loads while the workers simulate

            for future in as_completed(futures):
                start, stop = futures[future]
                _place(tally, start, future.result())
                done += stop - start
                if progress:
                    progress(done, replications)
        except BaseException:
            _stop_now(pool)
            raise
        pool.shutdown()
    attrs = {
        "scenario": scenario.title,
        "scenario_file": str(scenario.source) if scenario.source else "",
        "scenario_sha256": scenario.sha256,
        "engine": chosen,
        "replications": replications,
        "seed": seed,
        "funnelsim_version": __version__,
        "currency": scenario.currency,
        "start": scenario.start.isoformat(),
        "end": scenario.end.isoformat(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sales_team_stages": ",".join(scenario.sales_team.stages) if scenario.sales_team else "",
        "rep_months": float(funnel.team.rep_months.sum()) if funnel.team else 0.0,
        "silent_loss": int(funnel.has_silent_loss),
    }
    arrays = tally.arrays()
    if scenario.costs is not None:
        arrays.update(economics.costs(funnel, tally))
        attrs.update(economics.customer_value(scenario, funnel))
    from funnelsim.forecast import from_tally

    return from_tally(
        arrays,
        labels=funnel.calendar.labels,
        stages=funnel.stages,
        channels=funnel.channels,
        attrs=attrs,
    )


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once (Ctrl-C, a failed batch): queued batches are dropped and the
    workers terminated instead of finishing them (Python 3.11 has no public way to).

    The pool's own manager thread reaps the terminated workers (it sees them die); reaping
    them here too would race with it for their exit status."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    if manager is not None:
        manager.join(timeout=30)


def simulate_batch(funnel: Funnel, engine: str, seed: int, start: int, stop: int) -> Tally:
    """Replications ``start`` to ``stop − 1`` with one engine."""
    _keep_freed_memory()
    keys = streams.replication_keys(seed, np.arange(start, stop))
    if engine == "des":
        from funnelsim.engine import des

        tally = des.simulate(funnel, keys)
    else:
        from funnelsim.engine import vectorized

        tally = vectorized.simulate(funnel, keys)
    if funnel.repeat is not None:
        from funnelsim.customers import add_repeat_sales

        add_repeat_sales(funnel, tally, keys)
        tally.customers = tally.existing = None  # per-customer records stay in the batch
    return tally


def _place(tally: Tally, start: int, part: Tally) -> None:
    for name, values in part.arrays().items():
        getattr(tally, name)[start : start + values.shape[0]] = values


def _batches(funnel: Funnel, engine: str, replications: int, workers: int) -> list[tuple[int, int]]:
    # Leads of a batch are simulated together (memory); existing customers one replication
    # at a time, so they do not count here.
    leads = float(analytic.expected_leads(funnel).sum()) + funnel.open_stage.size + 1.0
    if engine == "vectorized":
        size = max(1, int(_LEADS_PER_BATCH // leads))
    else:
        size = max(1, int(50_000 // leads))
    if workers > 1:  # enough batches to keep every worker busy to the end
        size = max(1, min(size, -(-replications // (_BATCHES_PER_WORKER * workers))))
    size = min(size, replications)
    return [(s, min(s + size, replications)) for s in range(0, replications, size)]


_FUNNEL: Funnel | None = None
_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """Ask glibc to reuse freed memory for large arrays instead of returning it at once.

    The vectorized engine allocates and frees arrays of a few MB many times per batch; by
    default glibc maps each from the kernel afresh and page-faults it in, which costs about a
    third of the engine's time. Raising the mmap and trim thresholds (``mallopt``, which
    may be called at any time) keeps those pages in the heap for reuse. Elsewhere a no-op.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum on 64-bit
        libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _init_worker(funnel: Funnel) -> None:
    global _FUNNEL
    _FUNNEL = funnel


def _worker_batch(engine: str, seed: int, start: int, stop: int) -> Tally:
    assert _FUNNEL is not None
    return simulate_batch(_FUNNEL, engine, seed, start, stop)
