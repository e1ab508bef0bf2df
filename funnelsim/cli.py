"""The command line: thin wrappers over the library, and the only place that prints.

Bad input (a scenario, a data file, an option) is reported in one message naming the file,
the field path or row, the bad value and what was expected, with exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from funnelsim import __version__
from funnelsim.errors import InputError

EXIT_BAD_INPUT = 2


class BadInput(click.ClickException):
    """Bad input: the message is printed as it is (it starts with "error:"), exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def _bad_input(func: Callable) -> Callable:
    """Translate the library's input errors into a clean message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise BadInput(f"error: {exc.render()}") from None

    return wrapper


_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Change one scenario value (repeatable): dotted path, integer segments index lists, "
    "value parsed as YAML, e.g. --set months=24 --set channels.web.seasonality.3=1.2.",
)
_scenario_arg = click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))


def _monte_carlo_options(command: Callable) -> Callable:
    """-n/--replications, --seed and --workers, shared by the commands that simulate."""
    for option in reversed(
        [
            click.option(
                "-n", "--replications", type=click.IntRange(min=1), help="Default: the scenario's."
            ),
            click.option("--seed", type=click.IntRange(min=0), help="Default: the scenario's."),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                help="Worker processes (default: the number of CPUs). Results do not depend on it.",
            ),
        ]
    ):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="funnelsim")
def main() -> None:
    """Simulate and forecast a sales system: lead generation, the funnel, repeat sales.

    Durations are in days, periods in calendar months, money in the scenario's currency.
    """


@main.command()
@_scenario_arg
@_set_option
@_bad_input
def validate(scenario: Path, overrides: tuple[str, ...]) -> None:
    """Check a scenario file and show its funnel with the expected conversion per channel.

    The expectations come from the funnel as an absorbing Markov chain (no simulation, no
    horizon cut): P(won), days to win, revenue per new lead, expected visits per stage.
    """
    from funnelsim.scenario import load_scenario
    from funnelsim.text import funnel_text

    loaded = load_scenario(scenario, overrides)
    click.echo(f"{scenario}: valid")
    click.echo(funnel_text(loaded))


@main.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editor completion)."""
    from funnelsim.scenario import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@_scenario_arg
@_set_option
@_monte_carlo_options
@click.option(
    "--engine",
    type=click.Choice(["auto", "vectorized", "des"]),
    default="auto",
    show_default=True,
    help="auto picks the vectorized engine whenever the scenario allows it.",
)
@click.option(
    "--by",
    type=click.Choice(["month", "quarter", "year"]),
    default="month",
    show_default=True,
    help="Periods of the table, summary.json and periods.csv.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write summary.json, periods.csv and forecast.nc into this folder.",
)
@_bad_input
def run(
    scenario: Path,
    overrides: tuple[str, ...],
    replications: int | None,
    seed: int | None,
    workers: int | None,
    engine: str,
    by: str,
    out: Path | None,
) -> None:
    """Forecast a scenario by Monte Carlo simulation.

    Prints the mean, P5, P50 and P95 over replications of the totals, the funnel per stage,
    each channel and each period; with --out also writes the files.
    """
    from funnelsim.montecarlo import EngineError
    from funnelsim.montecarlo import run as run_forecast
    from funnelsim.scenario import load_scenario
    from funnelsim.text import forecast_text

    loaded = load_scenario(scenario, overrides)
    bar = _Progress()
    try:
        forecast = run_forecast(
            loaded,
            replications=replications,
            seed=seed,
            workers=workers,
            engine=engine,
            progress=bar.update,
        )
    except EngineError as exc:
        raise BadInput(f"error: {scenario}: {exc}") from None
    finally:
        bar.close()
    summary = forecast.summary(by)
    if out is not None:
        written = forecast.write(out, by=by)
    click.echo(forecast_text(summary))
    if out is not None:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


@main.command()
@_scenario_arg
@_set_option
@click.option(
    "--reps",
    "sizes",
    required=True,
    metavar="SIZES",
    help="Team sizes to try: 2..12, 2..12..2 (a step) or 3,5,8.",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Also mark the smallest team whose mean wait for a rep stays under DAYS.",
)
@_monte_carlo_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write staff.json and staff.csv into this folder.",
)
@_bad_input
def staff(
    scenario: Path,
    overrides: tuple[str, ...],
    sizes: str,
    max_wait: float | None,
    replications: int | None,
    seed: int | None,
    workers: int | None,
    out: Path | None,
) -> None:
    """How many reps? Runs the scenario for each team size on the same random numbers.

    Reports revenue, won deals, leads gone cold, the mean wait for a rep, utilization and
    the reps' cost (costs.rep_per_month) per size, and marks the size with the most revenue
    minus rep cost.
    """
    from funnelsim.scenario import load_scenario
    from funnelsim.staffing import parse_sizes, write_staff
    from funnelsim.staffing import staff as run_staff
    from funnelsim.text import staff_text

    loaded = load_scenario(scenario, overrides)
    bar = _Progress()
    try:
        result = run_staff(
            loaded,
            parse_sizes(sizes),
            max_wait=max_wait,
            replications=replications,
            seed=seed,
            workers=workers,
            progress=bar.update,
        )
    finally:
        bar.close()
    if out is not None:
        written = write_staff(result, out)
    click.echo(staff_text(result))
    if out is not None:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


class _Progress:
    """A progress bar on stderr, only when stderr is a terminal and the run takes > 1 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.bar = None
        self.shown = 0
        self.enabled = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < 1.0 or done >= total:
                return
            self.bar = click.progressbar(length=total, label="simulating", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


if __name__ == "__main__":  # pragma: no cover
    main()
