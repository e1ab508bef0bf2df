"""The command line: thin wrappers over the library, and the only place that prints.

Bad input (a scenario, a data file, an option) is reported in one message naming the file,
the field path or row, the bad value and what was expected, with exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
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


class _OutFolder(click.Path):
    """A folder to write into, checked before anything is simulated: it, or the nearest of
    its parents that exists, must be a folder this user can write in."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value, param, ctx) -> Path:
        path = super().convert(value, param, ctx)
        existing = Path(path).absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            self.fail(f"{existing} is a file; expected a folder (or a new folder's name)")
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"no permission to write in {existing}; expected a writable folder")
        return path


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
    from funnelsim.scenario import load_scenario, scenario_warnings
    from funnelsim.text import funnel_text

    loaded = load_scenario(scenario, overrides)
    click.echo(f"{scenario}: valid")
    for problem in scenario_warnings(loaded):
        click.echo(f"warning: {scenario}: {problem}", err=True)
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
    type=_OutFolder(),
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
    try:
        with _Progress() as bar:
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
    summary = forecast.summary(by)
    extra = {}
    if loaded.targets:
        from funnelsim.experiments import target_report, target_specs

        extra["targets"] = target_report(forecast.totals(), target_specs(loaded), loaded.currency)
        summary = {**summary, **extra}
    if out is not None:
        written = forecast.write(out, by=by, extra=extra)
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
@click.option(
    "--max-cold",
    type=click.FloatRange(min=0, max=100),
    metavar="PCT",
    help="Also mark the smallest team with at most PCT percent of the leads that reach the "
    "team gone cold (with --max-wait: the smallest meeting both).",
)
@_monte_carlo_options
@click.option(
    "--out",
    type=_OutFolder(),
    help="Write staff.json and staff.csv into this folder.",
)
@_bad_input
def staff(
    scenario: Path,
    overrides: tuple[str, ...],
    sizes: str,
    max_wait: float | None,
    max_cold: float | None,
    replications: int | None,
    seed: int | None,
    workers: int | None,
    out: Path | None,
) -> None:
    """How many reps? Runs the scenario for each team size on the same random numbers.

    Reports revenue, won deals, leads gone cold (and their share of the leads that reached
    the team), the mean wait for a rep, utilization and the reps' cost
    (costs.rep_per_month) per size, and marks the size with the most revenue minus rep
    cost, and the smallest size within --max-wait and --max-cold.
    """
    from funnelsim.scenario import load_scenario
    from funnelsim.staffing import parse_sizes, write_staff
    from funnelsim.staffing import staff as run_staff
    from funnelsim.text import staff_text

    loaded = load_scenario(scenario, overrides)
    with _Progress() as bar:
        result = run_staff(
            loaded,
            parse_sizes(sizes),
            max_wait=max_wait,
            max_cold=None if max_cold is None else max_cold / 100,
            replications=replications,
            seed=seed,
            workers=workers,
            progress=bar.update,
        )
    if out is not None:
        written = write_staff(result, out)
    click.echo(staff_text(result))
    team = loaded.sales_team
    if max_wait is not None and max_cold is None and team is not None and team.patience:
        click.echo(
            "note: with patience a lead stops waiting when it goes cold, so the mean wait "
            "stays short however many go cold; add --max-cold PCT to limit those",
            err=True,
        )
    if out is not None:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


_out_option = functools.partial(click.option, "--out", type=_OutFolder())


@main.command()
@click.argument("base", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("variant_files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--variant",
    "variant_options",
    multiple=True,
    metavar="NAME:PATH=VALUE",
    help="A variant named NAME: the base with PATH set to VALUE (repeat with the same NAME "
    "for several changes), e.g. --variant more_search:channels.paid_search.leads_per_month=160.",
)
@_set_option
@_monte_carlo_options
@_out_option(help="Write compare.json and compare.csv into this folder.")
@_bad_input
def compare(
    base: Path,
    variant_files: tuple[Path, ...],
    variant_options: tuple[str, ...],
    overrides: tuple[str, ...],
    replications: int | None,
    seed: int | None,
    workers: int | None,
    out: Path | None,
) -> None:
    """Compare variants with a base scenario, on common random numbers.

    Every scenario runs with the base's seed and replications (or -n/--seed), so
    replication i of a variant is paired with replication i of the base and the difference
    is the variant's doing, not chance. Reports, per variant, the mean, P5, P50 and P95 of
    the paired difference (variant - base) of revenue, won, revenue_new, revenue_repeat,
    marketing_cost, sales_cost and ROI where present, and P(variant > base). VARIANT files
    are whole scenarios (named by their file names); --set applies to every scenario.
    """
    from funnelsim.experiments import Variant, parse_variant_options, variant_of, write_compare
    from funnelsim.experiments import compare as run_compare
    from funnelsim.scenario import load_scenario
    from funnelsim.text import compare_text

    options = parse_variant_options(variant_options)
    loaded = load_scenario(base, overrides)
    variants = [
        Variant(path.stem, load_scenario(path, overrides), str(path)) for path in variant_files
    ]
    variants += [variant_of(loaded, name, changes) for name, changes in options.items()]
    with _Progress() as bar:
        result = run_compare(
            loaded,
            variants,
            replications=replications,
            seed=seed,
            workers=workers,
            progress=bar.update,
        )
    _report(result, compare_text, write_compare, out)


@main.command()
@_scenario_arg
@_set_option
@click.option(
    "--step",
    metavar="SHARE",
    help="How much to improve each lever, e.g. 10% or 0.1 (default: the scenario's "
    "levers.step, else 10%).",
)
@click.option(
    "--rank",
    type=click.Choice(["revenue", "return"]),
    default="revenue",
    show_default=True,
    help="Rank by mean revenue uplift, or by uplift per unit of cost (levers.costs plus the "
    "change in the scenario's own costs).",
)
@_monte_carlo_options
@_out_option(help="Write levers.json and levers.csv into this folder.")
@_bad_input
def levers(
    scenario: Path,
    overrides: tuple[str, ...],
    step: str | None,
    rank: str,
    replications: int | None,
    seed: int | None,
    workers: int | None,
    out: Path | None,
) -> None:
    """Which element to improve? Improves each lever alone and ranks them by revenue uplift.

    Levers: each channel's leads per month, each stage's probability of advancing (its
    other outcomes scaled down in proportion) and its duration (shorter), the deal value,
    and, where the scenario has them, one more rep, the leads' patience, the repeat
    purchase rate, churn and spend. Each runs on the same random numbers as the base; the
    uplift is reported with the P5-P95 of the paired difference and P(uplift > 0).
    """
    from funnelsim.experiments import levers as run_levers
    from funnelsim.experiments import parse_step, write_levers
    from funnelsim.scenario import load_scenario
    from funnelsim.text import levers_text

    share = parse_step(step) if step is not None else None
    loaded = load_scenario(scenario, overrides)
    with _Progress() as bar:
        result = run_levers(
            loaded,
            step=share,
            rank_by=rank,
            replications=replications,
            seed=seed,
            workers=workers,
            progress=bar.update,
        )
    _report(result, levers_text, write_levers, out)


EXIT_TARGET_UNREACHABLE = 3


@main.command()
@_scenario_arg
@_set_option
@click.option(
    "--target",
    required=True,
    metavar="METRIC=VALUE",
    help="A total metric and its target, e.g. revenue=2e6 (at least; at most for costs, CAC, "
    "payback, days and lost), or revenue>=2e6, cac<=400.",
)
@click.option(
    "--probability",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.8,
    show_default=True,
    help="The probability with which the target must be reached.",
)
@click.option(
    "--lever",
    required=True,
    metavar="PATH",
    help="What to change: a number of the scenario by its --set path, e.g. "
    "channels.paid_search.leads_per_month or sales_team.reps, or a lever of `funnelsim "
    "levers` (searched as a multiplier), e.g. stages.demo.advance.",
)
@click.option("--min", "low", type=float, help="Lower end of the search (default: 0, or × 0.25).")
@click.option(
    "--max", "high", type=float, help="Upper end (default: 4 × the current value, or × 4)."
)
@click.option(
    "--precision",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop when the answer is known to within this (default: 1% of the current value; "
    "1 for whole numbers; 0.01 for a multiplier).",
)
@_monte_carlo_options
@_out_option(help="Write goal.json and goal.csv (every value tried) into this folder.")
@_bad_input
def goal(
    scenario: Path,
    overrides: tuple[str, ...],
    target: str,
    probability: float,
    lever: str,
    low: float | None,
    high: float | None,
    precision: float | None,
    replications: int | None,
    seed: int | None,
    workers: int | None,
    out: Path | None,
) -> None:
    """The least change of one lever that reaches a target with a given probability.

    A bisection over the lever's value on common random numbers: every value tried runs
    the same replications, so P(target reached) moves only because of the lever. Exit code
    3 when no value within --min/--max reaches the target (the closest is reported).
    """
    from funnelsim.experiments import goal as run_goal
    from funnelsim.experiments import parse_target, write_goal
    from funnelsim.scenario import load_scenario
    from funnelsim.text import goal_text

    loaded = load_scenario(scenario, overrides)
    spec = parse_target(target, loaded)
    with _Progress() as bar:
        result = run_goal(
            loaded,
            spec,
            lever,
            probability=probability,
            low=low,
            high=high,
            precision=precision,
            replications=replications,
            seed=seed,
            workers=workers,
            progress=bar.update,
        )
    _report(result, goal_text, write_goal, out)
    if result["status"] == "unreachable":
        sys.exit(EXIT_TARGET_UNREACHABLE)


@main.command()
@_scenario_arg
@_set_option
@click.option(
    "--compare",
    "variant_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="VARIANT.yaml",
    help="A variant scenario to compare with this one on common random numbers (repeatable).",
)
@click.option(
    "--variant",
    "variant_options",
    multiple=True,
    metavar="NAME:PATH=VALUE",
    help="A variant named NAME: this scenario with PATH set to VALUE (repeat with the same "
    "NAME for several changes).",
)
@click.option("--levers", "with_levers", is_flag=True, help="Rank the levers (a tornado chart).")
@click.option("--step", metavar="SHARE", help="The levers' improvement, e.g. 10% (default 10%).")
@_monte_carlo_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (default: reports/<scenario file name>.html).",
)
@click.option("--pdf", is_flag=True, help="Also print it to a PDF beside it (needs Chromium).")
@_bad_input
def report(
    scenario: Path,
    overrides: tuple[str, ...],
    variant_files: tuple[Path, ...],
    variant_options: tuple[str, ...],
    with_levers: bool,
    step: str | None,
    replications: int | None,
    seed: int | None,
    workers: int | None,
    output: Path | None,
    pdf: bool,
) -> None:
    """Write a forecast report for a client: one self-contained HTML file (and a PDF).

    The executive summary, monthly revenue with its bands, the funnel, new and repeat
    revenue, unit economics, the sales team, the levers (--levers) and compared variants
    (--compare, --variant) where there are any, every assumption of the scenario and how to
    reproduce the numbers. No network requests; charts are embedded.
    """
    from funnelsim import experiments
    from funnelsim.montecarlo import EngineError
    from funnelsim.montecarlo import run as run_forecast
    from funnelsim.report import ReportError, build_report, find_chromium, write_report
    from funnelsim.scenario import load_scenario

    if pdf and find_chromium() is None:
        raise BadInput(
            "error: --pdf needs Chromium (or Chrome) and none was found; on Debian or Ubuntu: "
            "apt install chromium (or set FUNNELSIM_CHROMIUM to the browser's path)"
        )
    if step is not None and not with_levers:
        raise BadInput("error: --step: applies to the levers; add --levers")
    target = output if output is not None else Path("reports") / f"{scenario.stem}.html"
    if target.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"error: --output: {target}: expected a file name ending in .html")
    if target.is_dir():
        raise BadInput(f"error: --output: {target} is a folder; expected an .html file name")
    loaded = load_scenario(scenario, overrides)
    share = experiments.parse_step(step) if step is not None else None
    options = experiments.parse_variant_options(variant_options)
    variants = [
        experiments.Variant(p.stem, load_scenario(p, overrides), str(p)) for p in variant_files
    ]
    variants += [experiments.variant_of(loaded, n, c) for n, c in options.items()]
    for v in variants:
        experiments.check_comparable(loaded, v)
    runs = {"replications": replications, "seed": seed, "workers": workers}
    try:
        with _Progress() as bar:
            forecast = run_forecast(loaded, progress=bar.update, **runs)
        levers = compared = None
        if with_levers:
            with _Progress() as bar:
                levers = experiments.levers(loaded, step=share, progress=bar.update, **runs)
        if variants:
            with _Progress() as bar:
                compared = experiments.compare(loaded, variants, progress=bar.update, **runs)
    except EngineError as exc:
        raise BadInput(f"error: {scenario}: {exc}") from None
    command = _report_command(
        scenario,
        overrides,
        forecast,
        with_levers,
        share,
        variant_files,
        variant_options,
        target,
        pdf,
    )
    page = build_report(loaded, forecast, levers=levers, variants=compared, command=command)
    try:
        written = write_report(page, target, pdf=pdf)
    except ReportError as exc:
        raise BadInput(f"error: {exc}") from None
    click.echo("Wrote " + ", ".join(str(p) for p in written))


def _report_command(
    scenario, overrides, forecast, with_levers, share, files, options, target, pdf
) -> str:
    """The command line that makes this report again."""
    import shlex

    a = forecast.attrs
    parts = ["funnelsim", "report", str(scenario)]
    parts += [f"--set={o}" for o in overrides]
    parts += ["-n", str(a["replications"]), "--seed", str(a["seed"])]
    if with_levers:
        parts += ["--levers"] + ([f"--step={share:g}"] if share is not None else [])
    parts += [f"--compare={f}" for f in files] + [f"--variant={v}" for v in options]
    parts += ["-o", str(target)] + (["--pdf"] if pdf else [])
    return shlex.join(parts)


def _report(result, text: Callable, writer: Callable, out: Path | None) -> None:
    """Write the files (if asked) first, so that the table is shown only when they exist."""
    written = writer(result, out) if out is not None else None
    click.echo(text(result))
    if written:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


def _columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping = {}
    for part in text.split(","):
        if "=" not in part:
            raise BadInput(
                f"error: --columns: {part!r}: expected NAME=COLUMN, e.g. customer_id=Client"
            )
        name, column = part.split("=", 1)
        mapping[name.strip()] = column.strip()
    return mapping


_day = click.DateTime(formats=["%Y-%m-%d"])


@main.command()
@click.option(
    "--events",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CRM stage history: lead_id,channel,stage,entered_at[,value], one row per stage "
    "entered, terminal stages 'won' (with the value) and 'lost' (CSV or Parquet).",
)
@click.option(
    "--stages",
    metavar="A,B,C",
    help="With --events: the funnel's stages in order (default: as the history shows them); "
    "a stage not listed is an error.",
)
@click.option(
    "--won",
    default="won",
    show_default=True,
    help="With --events: the CRM's name of the won stage, e.g. 'Closed Won' (any case).",
)
@click.option(
    "--lost",
    default="lost",
    show_default=True,
    help="With --events: the CRM's name of the lost stage, e.g. 'Closed Lost'.",
)
@click.option(
    "--losses",
    "losses_mode",
    type=click.Choice(["auto", "recorded", "silent"]),
    default="auto",
    show_default=True,
    help="With --events: whether the CRM records losses. 'silent': leads that go nowhere "
    "are never closed (a share of them is modelled as lost unrecorded); 'recorded': every "
    "loss has its row; 'auto': decided per stage from the open leads far older than any "
    "completed stay (a likelihood-ratio test), and reported.",
)
@click.option(
    "--drift",
    "drift_mode",
    type=click.Choice(["auto", "none", "trend"]),
    default="auto",
    show_default=True,
    help="With --events: whether a stage's outcome probabilities change with the leads' "
    "arrival month. 'trend': a linear trend of each outcome's logit; 'auto': per stage, "
    "kept when it improves WAIC by more than two standard errors; the forecast starts from "
    "the latest month's level.",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    metavar="DAYS",
    help="With --events: a lead open longer than DAYS in a stage counts as lost at DAYS "
    "(the CRM's 'rotting' rule); the scenario written carries the rule.",
)
@click.option(
    "--transactions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Transaction log: customer_id,date,amount (CSV or Parquet).",
)
@click.option(
    "--columns",
    metavar="NAME=COLUMN,...",
    help="Map the files' column names, e.g. lead_id=Deal ID,entered_at=Changed or "
    "customer_id=Client,date=Order Date,amount=Total.",
)
@click.option(
    "--as-of",
    type=_day,
    help="End of the history used; later rows are held out (default: the last day).",
)
@click.option(
    "--model",
    type=click.Choice(["bg_nbd", "pareto_nbd"]),
    default="bg_nbd",
    show_default=True,
    help="With --transactions: the count model of the scenario (both are fitted by maximum "
    "likelihood).",
)
@click.option(
    "--unit",
    type=click.Choice(["day", "week", "month"]),
    default="week",
    show_default=True,
    help="With --transactions: time unit of the fitted rates.",
)
@click.option(
    "--holdout-until",
    type=_day,
    help="With --transactions: compare predicted and actual repeat purchases after --as-of "
    "until this day.",
)
@click.option("--lenient", is_flag=True, help="Skip bad rows (with a count) instead of stopping.")
@click.option(
    "--allow-zero-amounts", is_flag=True, help="Accept purchases of amount 0 (e.g. free orders)."
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Accept rows repeating another exactly (two equal orders on one day).",
)
@click.option(
    "--accept-warnings",
    is_flag=True,
    help="Exit 0 even if the sampler's diagnostics are poor (they are still reported).",
)
@click.option(
    "--draws",
    type=click.IntRange(min=100),
    help="NUTS draws per chain kept (default: 1000).",
)
@click.option(
    "--tune",
    type=click.IntRange(min=100),
    help="NUTS tuning steps per chain, discarded (default: 300 with --events, else as --draws).",
)
@click.option(
    "--chains", type=click.IntRange(min=1), default=4, show_default=True, help="NUTS chains."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Seed of the sampler (the fit is reproducible).",
)
@click.option(
    "--months",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Horizon of the scenario written.",
)
@click.option("--currency", default="USD", show_default=True, help="Currency of the amounts.")
@click.option(
    "--out",
    type=_OutFolder(),
    required=True,
    help="Folder for estimates.json, posterior.nc, diagnostics.txt, scenario.yaml and, "
    "as fitted, open_leads.csv, customers.csv and holdout.json.",
)
@_bad_input
def fit(
    events,
    stages,
    won,
    lost,
    losses_mode,
    drift_mode,
    stale_after,
    transactions,
    columns,
    as_of,
    model,
    unit,
    holdout_until,
    lenient,
    allow_zero_amounts,
    allow_duplicates,
    accept_warnings,
    draws,
    tune,
    chains,
    seed,
    months,
    currency,
    out,
) -> None:
    """Fit a runnable scenario to history: the funnel from a CRM stage history (--events),
    repeat purchases from a transaction log (--transactions), or both.

    --events: stage-to-stage probabilities per channel (partially pooled), time in stage
    per outcome (lognormal, gamma or Weibull) with open leads censored, deal values and
    lead arrivals per month, jointly by NUTS (PyMC); the scenario starts the day after
    --as-of with every open lead in its pipeline. --transactions: BG/NBD, Pareto/NBD and
    Gamma-Gamma by maximum likelihood and the chosen model by NUTS. Every replication of
    `funnelsim run` on the scenario draws one joint posterior sample. Exit code 3 when the
    sampler's diagnostics are poor.
    """
    import warnings

    if events is None and transactions is None:
        raise BadInput("error: fit: give --events (a CRM stage history), --transactions, or both")
    if not re_currency(currency):
        raise BadInput(f"error: --currency: {currency!r}: expected an ISO code like USD")
    if events is None:
        given = [
            f"--{n}"
            for n, v, default in (
                ("stages", stages, None),
                ("won", won, "won"),
                ("lost", lost, "lost"),
                ("losses", losses_mode, "auto"),
                ("drift", drift_mode, "auto"),
                ("stale-after", stale_after, None),
            )
            if v is not None and v != default
        ]
        if given:
            raise BadInput(f"error: {given[0]}: only with --events")
    as_of_day = as_of.date() if as_of else None
    event_columns, tx_columns = _split_columns(_columns(columns), events, transactions)
    repeat_options = {
        "as_of": as_of_day,
        "model": model,
        "unit": unit,
        "columns": tx_columns,
        "lenient": lenient,
        "allow_zero_amounts": allow_zero_amounts,
        "allow_duplicates": allow_duplicates,
        "holdout_until": holdout_until.date() if holdout_until else None,
    }
    # pip's PyTensor finds no BLAS; the models here need none, so the warning is only noise
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
    if events is not None:
        from funnelsim.fit.funnel_fit import DRAWS, TUNE, fit_events
        from funnelsim.text import events_fit_text as report

        draws, tune = draws or DRAWS, tune or TUNE
        source = events
        run = functools.partial(
            fit_events,
            events,
            out,
            as_of=as_of_day,
            columns=event_columns,
            stages=_stage_names(stages),
            won=won,
            lost=lost,
            lenient=lenient,
            losses_mode=losses_mode,
            drift_mode=drift_mode,
            stale_after=stale_after,
            transactions=None if transactions is None else {"path": transactions, **repeat_options},
        )
    else:
        from funnelsim.fit.transactions import fit_transactions
        from funnelsim.text import fit_text as report

        draws = draws or 1000
        source = transactions
        run = functools.partial(fit_transactions, transactions, out, **repeat_options)
    try:
        result = run(
            draws=draws,
            tune=tune or draws,
            chains=chains,
            seed=seed,
            months=months,
            currency=currency,
        )
    except ValueError as exc:
        raise BadInput(f"error: {source}: {exc}") from None
    if result.skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in result.skipped_reasons.items())
        click.echo(
            f"warning: --lenient: skipped {_count(result.skipped, 'bad row')} ({reasons})"
            + _first_rows(result.skipped_rows),
            err=True,
        )
    if result.dropped_leads:
        click.echo(
            f"warning: left out {_count(result.dropped_leads, 'inconsistent lead')} whole "
            "(their rows are among those skipped)",
            err=True,
        )
    if result.dropped_customers:
        click.echo(
            f"warning: left out {_count(result.dropped_customers, 'customer')} whose "
            "purchases all come after --as-of",
            err=True,
        )
    click.echo(report(result))
    click.echo("\nWrote " + ", ".join(str(p) for p in result.written))
    if not result.ok and not accept_warnings:
        click.echo(
            "error: the sampler's diagnostics are poor (see above); rerun with more --draws "
            "and --tune, or pass --accept-warnings to use these draws anyway",
            err=True,
        )
        sys.exit(3)


def _count(n: int, noun: str) -> str:
    """``1 bad row``, ``2 bad rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _first_rows(problems, limit: int = 5) -> str:
    """The first few skipped rows and why, one a line, for the --lenient warning."""
    if not problems:
        return ""
    lines = [f"\n  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"\n  ... and {len(problems) - limit} more")
    return "; the first:" + "".join(lines) if len(problems) > limit else ":" + "".join(lines)


def _split_columns(mapping, events, transactions):
    """``--columns`` names the columns of both files: split it by the names each reads."""
    if mapping is None:
        return None, None
    from funnelsim.fit.events import COLUMNS as EVENT_COLUMNS
    from funnelsim.fit.io import COLUMNS as TX_COLUMNS

    known = set(EVENT_COLUMNS) | set(TX_COLUMNS)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise BadInput(
            f"error: --columns: {unknown[0]!r} is not a column funnelsim reads; expected "
            f"one of {', '.join(EVENT_COLUMNS if events else ())}"
            f"{', ' if events and transactions else ''}"
            f"{', '.join(TX_COLUMNS if transactions else ())}"
        )
    for name, given, columns in (
        ("--events", events, EVENT_COLUMNS),
        ("--transactions", transactions, TX_COLUMNS),
    ):
        stray = [k for k in mapping if k in columns and given is None]
        if stray:
            raise BadInput(f"error: --columns: {stray[0]!r} is a column of {name}, not given")

    def pick(names):
        return {k: v for k, v in mapping.items() if k in names} or None

    return pick(EVENT_COLUMNS), pick(TX_COLUMNS)


def _stage_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",")]


def re_currency(text: str) -> bool:
    import re

    return re.fullmatch(r"[A-Z]{3}", text) is not None


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

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


if __name__ == "__main__":  # pragma: no cover
    main()
