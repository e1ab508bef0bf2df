"""Scenario files: the schema, safe YAML loading, ``--set`` overrides and validation.

A scenario describes a sales system: the channels that bring leads, the funnel stages they go
through, what a won deal is worth and, optionally, the deals already open on the start date.
:func:`load_scenario` reads a YAML file and returns a validated, frozen :class:`Scenario`, or
raises :class:`~funnelsim.errors.InputError` whose message names the file, the field path,
the bad value and what was expected. Nothing here simulates or prints.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from funnelsim.distributions import Distribution, _Dist
from funnelsim.errors import InputError, Problem, did_you_mean, path_str, read_text
from funnelsim.strict import Strict

WON, LOST, SILENT_LOSS = "won", "lost", "silent_loss"
OUTCOME_WORDS = (WON, LOST, SILENT_LOSS)
"""The outcomes that close a lead: won, lost, and a loss the CRM never records."""
RESERVED_NAMES = frozenset(
    {WON, LOST, SILENT_LOSS, "dirichlet", "file", "dist", "count", "channel"}
)
"""Words that cannot name a stage (they are outcomes or schema keywords)."""

PROBABILITY_TOLERANCE = 1e-9
DAYS_PER_MONTH = 365.25 / 12
"""Days in an average month: the unit that turns ``leads_per_month`` into a daily rate."""


# ---------------------------------------------------------------- schema building blocks


Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Dirichlet(Strict):
    """Uncertain outcome probabilities: Dirichlet concentrations, drawn once per replication."""

    dirichlet: dict[str, Positive] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _alone(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > 1:
            others = ", ".join(str(k) for k in data if k != "dirichlet")
            raise PydanticCustomError(
                "mixed_next",
                "mixes a dirichlet block with plain probabilities ({others}); give either "
                "probabilities summing to 1 or only a dirichlet block",
                {"others": others},
            )
        return data


def _by_key(key: str, section: type[BaseModel], otherwise: Any) -> Any:
    """A field that is ``section`` when its mapping has ``key`` (or is one), else ``otherwise``.

    A tagged union, so a bad value gets the one error of the form it was meant as. (Tags are
    named so that they cannot be keys of a scenario: error paths drop them.)
    """

    def tag(value: Any) -> str:
        if isinstance(value, section) or (isinstance(value, dict) and key in value):
            return f"as {key}"
        return f"not {key}"

    return Annotated[
        Annotated[section, Tag(f"as {key}")] | Annotated[otherwise, Tag(f"not {key}")],
        Discriminator(tag),
    ]


Next = _by_key("dirichlet", Dirichlet, dict[str, Probability])
"""Outcomes of a stage: ``{outcome: probability}`` or ``{dirichlet: {outcome: concentration}}``."""


def _duration_tag(value: Any) -> str:
    if isinstance(value, dict) and "dist" not in value and not isinstance(value, _Dist):
        return "as per_outcome"
    return "as single"


Duration = Annotated[
    Annotated[Distribution, Tag("as single")]
    | Annotated[dict[str, Distribution], Tag("as per_outcome")],
    Discriminator(_duration_tag),
]
"""Days in a stage: one distribution, or one per outcome ``{won: ..., lost: ...}``."""


def _plan_months(plan: dict[str, float]) -> dict[str, float]:
    for key in plan:
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", key):
            raise PydanticCustomError(
                "plan_month",
                "month '{key}' in the plan is not of the form YYYY-MM (e.g. 2027-03)",
                {"key": key},
            )
    return plan


MonthlyPlan = Annotated[dict[str, NonNegative], AfterValidator(_plan_months)]
"""Expected leads in each calendar month ``{YYYY-MM: leads}``; months not listed have 0."""


def _volume_tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "as number"
    if isinstance(value, _Dist) or (isinstance(value, dict) and "dist" in value):
        return "as distribution"
    if isinstance(value, dict):
        return "as plan"
    return None


Volume = Annotated[
    Annotated[NonNegative, Tag("as number")]
    | Annotated[Distribution, Tag("as distribution")]
    | Annotated[MonthlyPlan, Tag("as plan")],
    Discriminator(
        _volume_tag,
        custom_error_type="volume",
        custom_error_message=(
            "expected a number of leads per month, a distribution {dist: ...} drawn once per "
            "replication, or a plan {YYYY-MM: leads, ...}"
        ),
    ),
]


class Channel(Strict):
    """A marketing channel: where leads come from and how many (per month)."""

    leads_per_month: Volume | None = Field(
        default=None,
        description="Expected new leads per month: a number, a distribution (uncertain, drawn "
        "once per replication) or a plan {YYYY-MM: leads} (months not listed: 0). May be left "
        "out when costs.channels gives a budget_per_month and a cost_per_lead.",
    )
    seasonality: list[NonNegative] | None = Field(
        default=None, description="12 multipliers, January to December (not rescaled)."
    )
    growth_per_month: float = Field(
        default=0.0, gt=-1, allow_inf_nan=False, description="Compound growth per month."
    )
    deal_value: Distribution | None = Field(
        default=None, description="Value of a won deal from this channel (currency)."
    )
    leads_per_active_customer_per_month: NonNegative | None = Field(
        default=None,
        description="Word of mouth: expected new leads per month per active customer (existing "
        "customers still active, plus customers won before the month and still active), "
        "counted at the start of each month; seasonality and growth_per_month multiply it. "
        "Needs a repeat section; instead of leads_per_month.",
    )


class ChannelOverride(Strict):
    """A stage's behaviour for leads of one channel."""

    next: Next | None = None
    duration: Duration | None = None


class Stage(Strict):
    """A funnel stage: how long a lead stays (days) and where it goes next."""

    duration: Duration = Field(description="Days in the stage before its outcome.")
    next: Next = Field(
        description="Outcomes: other stages, won, lost, silent_loss (leaves at once with "
        "nothing recorded); probabilities sum to 1."
    )
    channels: dict[str, ChannelOverride] = Field(
        default_factory=dict, description="Optional per-channel overrides of next/duration."
    )
    stale_after: Positive | None = Field(
        default=None,
        description="Days: a lead still in the stage after this long is closed as lost "
        "(the CRM's rotting rule).",
    )


class PipelineEntry(Strict):
    """Open deals in one stage on the start date."""

    count: int = Field(ge=0)
    channel: str | None = None
    days_in_stage: NonNegative = 0.0

    @model_validator(mode="before")
    @classmethod
    def _from_count(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"count": data}
        return data


class PipelineFile(Strict):
    """Open deals listed in a CSV: lead_id,channel,stage,days_in_stage[,value]."""

    file: str


Pipeline = _by_key("file", PipelineFile, dict[str, PipelineEntry])


@dataclass(frozen=True)
class CustomerHistory:
    """Existing customers' purchase histories (days), from a customers file."""

    customer_id: tuple[str, ...]
    repeat_purchases: np.ndarray  # x: purchases after the first
    recency_days: np.ndarray  # t_x: days from the first to the last purchase
    age_days: np.ndarray  # T: days from the first purchase to the start date
    mean_spend: np.ndarray  # mean value of the repeat purchases; NaN when unknown


@dataclass(frozen=True)
class OpenLead:
    """One lead of the opening pipeline, as resolved from counts or from a file."""

    lead_id: str
    channel: str
    stage: str
    days_in_stage: float
    value: float | None = None
    row: int | None = None  # the row of the pipeline file it came from


def parse_date(value: Any) -> date:
    """A ``YYYY-MM-DD`` date from YAML text (dates are not resolved by the YAML loader)."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("date", "expected a date YYYY-MM-DD", {"value": value})


class Hire(Strict):
    """A change of team size: from this date the team has ``reps`` reps."""

    from_: date = Field(alias="from", description="First day with the new team size.")
    reps: int = Field(ge=0)
    ramp_months: int = Field(
        default=0, ge=0, le=120, description="New reps ramp from half to full over these months."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @field_validator("from_", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        return parse_date(value)


class SalesTeam(Strict):
    """Reps with a limited number of leads each: leads wait for a slot, may go cold."""

    reps: int = Field(ge=0, description="Reps at the start.")
    leads_per_rep: int = Field(ge=1, description="Leads one rep works on at once.")
    stages: list[str] = Field(
        min_length=1, description="Stages whose duration occupies a slot of the lead's rep."
    )
    patience: Distribution | None = Field(
        default=None, description="Days a lead waits for a slot before going cold; omit = waits."
    )
    queue: Literal["fifo", "highest_value_first"] = "fifo"
    hiring: list[Hire] = Field(default_factory=list)
    skill: list[Positive] = Field(
        default_factory=list, description="Per rep (by index); reps beyond the list have 1.0."
    )


class ChannelCost(Strict):
    """What a channel's leads cost: a monthly budget, a price per lead, or both."""

    budget_per_month: NonNegative | None = Field(
        default=None, description="Marketing spend per month (currency)."
    )
    cost_per_lead: NonNegative | None = Field(
        default=None, description="Cost of one lead (currency)."
    )


class Costs(Strict):
    """What the sales system costs and earns (money in the scenario's currency)."""

    channels: dict[str, ChannelCost] = Field(default_factory=dict)
    rep_per_month: NonNegative | None = Field(default=None, description="Cost of one rep a month.")
    gross_margin: Probability = Field(
        default=1.0, description="Share of revenue that is gross margin (default 1)."
    )
    discount_rate_per_year: NonNegative = Field(
        default=0.0, description="Discount rate for the lifetime value (default 0)."
    )
    ltv_years: Annotated[float, Field(gt=0, le=100)] = Field(
        default=10.0, description="Cut-off of the lifetime value, in years (default 10)."
    )


class GammaGammaSpend(Strict):
    """Gamma-Gamma spend (Fader, Hardie & Lee 2005): each customer's purchases are
    Gamma(p, ν) with its own ν ~ Gamma(q, γ) (shape, rate); mean p·γ/(q − 1)."""

    model: Literal["gamma_gamma"]
    p: Positive
    q: Annotated[float, Field(gt=1, allow_inf_nan=False)]
    gamma: Positive


Spend = _by_key("model", GammaGammaSpend, Distribution)
"""Value of a repeat purchase: Gamma-Gamma, or any distribution (currency)."""

TimeUnit = Literal["day", "week", "month", "year"]
DAYS_PER_UNIT = {"day": 1.0, "week": 7.0, "month": DAYS_PER_MONTH, "year": 365.25}


class BGNBD(Strict):
    """BG/NBD (Fader, Hardie & Lee 2005): while alive a customer buys at rate λ ~ Gamma(r, α)
    per ``unit``; after each repeat purchase it drops out with probability p ~ Beta(a, b)."""

    model: Literal["bg_nbd"]
    unit: TimeUnit = "week"
    r: Positive
    alpha: Positive
    a: Positive
    b: Positive
    spend: Spend


class ParetoNBD(Strict):
    """Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at rate λ ~ Gamma(r, α),
    lifetime exponential with rate μ ~ Gamma(s, β), both per ``unit``."""

    model: Literal["pareto_nbd"]
    unit: TimeUnit = "week"
    r: Positive
    alpha: Positive
    s: Positive
    beta: Positive
    spend: Spend


class BetaChurn(Strict):
    """Shifted-beta-geometric churn (Fader & Hardie 2007): each customer's churn
    probability per billing period is drawn from Beta(α, β)."""

    beta: Annotated[list[Positive], Field(min_length=2, max_length=2)]


class Subscription(Strict):
    """Contractual repeat sales: each billing period a customer renews (pays) or churns."""

    model: Literal["subscription"]
    billing: Literal["week", "month", "year"] = "month"
    price: NonNegative = Field(description="Paid at the close and at every renewal (currency).")
    churn: _by_key("beta", BetaChurn, Probability) = Field(
        description="Churn probability per period, or {beta: [α, β]}."
    )


Repeat = Annotated[
    BGNBD | ParetoNBD | Subscription,
    Field(discriminator="model"),
]


class ExistingCount(Strict):
    """A cohort of customers whose first purchase was just before the start."""

    count: int = Field(ge=0)


class ExistingFile(Strict):
    """Customers with their own history, one row each:
    customer_id,repeat_purchases,recency_days,age_days[,mean_spend]."""

    file: str


Existing = _by_key("file", ExistingFile, ExistingCount)


class PosteriorFile(Strict):
    """Joint posterior draws of fitted parameters (ArviZ InferenceData, netCDF): the
    funnel's and/or the repeat model's; each replication uses one draw of all of them."""

    file: str
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Checked when the file is read."
    )


def _number_text(value: Any) -> Any:
    """``2e6`` or ``2_000_000`` written as text (YAML reads ``2e6`` as a string) → a number."""
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            return value
    return value


TargetNumber = Annotated[float, BeforeValidator(_number_text), Field(allow_inf_nan=False)]


class Target(Strict):
    """A target for a total metric: reached when the metric is at least, or at most, a value."""

    at_least: TargetNumber | None = None
    at_most: TargetNumber | None = None

    @model_validator(mode="after")
    def _one(self) -> Target:
        if (self.at_least is None) == (self.at_most is None):
            raise PydanticCustomError(
                "target", "give exactly one of at_least and at_most (in the metric's unit)"
            )
        return self


def _target_tag(value: Any) -> str:
    return "as bound" if isinstance(value, dict | BaseModel) else "as number"


TargetSpec = Annotated[
    Annotated[Target, Tag("as bound")] | Annotated[TargetNumber, Tag("as number")],
    Discriminator(_target_tag),
]
"""A target: a number (at least it; at most it for costs, CAC, payback, days, lost and leads
gone cold), or ``{at_least: x}`` / ``{at_most: x}``."""

AT_MOST_METRICS = frozenset(
    {
        "lost",
        "silent_lost",
        "cycle_days",
        "went_cold",
        "marketing_cost",
        "sales_cost",
        "cac",
        "cac_marketing",
        "payback_months",
    }
)
"""Total metrics where less is better: a target given as a bare number is an upper bound."""


def _step_text(value: Any) -> Any:
    """A step as ``0.1`` or ``"10%"``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            return value
    return value


Step = Annotated[float, BeforeValidator(_step_text), Field(gt=0, lt=1, allow_inf_nan=False)]


class LeverCost(Strict):
    """What an improvement costs (currency): once, and/or every month of the horizon."""

    once: NonNegative = 0.0
    per_month: NonNegative = 0.0


LeverCostSpec = Annotated[
    Annotated[LeverCost, Tag("as bound")] | Annotated[NonNegative, Tag("as number")],
    Discriminator(_target_tag),
]
"""A lever's cost: a number (over the horizon), or ``{once: ..., per_month: ...}``."""


class Levers(Strict):
    """What improving each element of the sales system by ``step`` would cost."""

    step: Step = Field(
        default=0.1,
        description="The improvement the costs are for, e.g. 0.1 or '10%' (also the default "
        "step of `funnelsim levers`).",
    )
    costs: dict[str, LeverCostSpec] = Field(
        default_factory=dict,
        description="Cost of each improvement over the horizon (currency), by lever name "
        "(see `funnelsim levers`): a number, or {once: ..., per_month: ...}.",
    )


class Scenario(Strict):
    """A validated scenario. Build it with :func:`load_scenario` or :func:`scenario_from_dict`."""

    version: Literal[1] = Field(description="Scenario file format version (1).")
    name: str | None = Field(default=None, description="Defaults to the file name.")
    start: date = Field(description="First day of the forecast.")
    months: int = Field(ge=1, le=600, description="Horizon in calendar months.")
    replications: int = Field(default=1000, ge=1, le=10_000_000)
    seed: int = Field(default=1, ge=0, description="Seed of the random streams (reproducible).")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD, EUR.")
    channels: dict[str, Channel] = Field(min_length=1)
    stages: dict[str, Stage] = Field(
        min_length=1, description="The funnel; new leads enter the first stage listed."
    )
    deal_value: Distribution | None = Field(
        default=None, description="Value of a won deal (currency) unless its channel sets one."
    )
    pipeline: Pipeline | None = Field(
        default=None, description="Leads already in the funnel on the start date."
    )
    sales_team: SalesTeam | None = Field(
        default=None, description="Reps whose capacity limits the rep-worked stages."
    )
    costs: Costs | None = None
    repeat: Repeat | None = Field(
        default=None, description="What customers do after their first purchase."
    )
    existing_customers: Existing | None = Field(
        default=None, description="Customers from before the start (need `repeat`)."
    )
    posterior: PosteriorFile | None = Field(
        default=None,
        description="Posterior draws of the repeat model (funnelsim fit): each replication "
        "uses one joint draw.",
    )
    targets: dict[str, TargetSpec] | None = Field(
        default=None,
        description="Targets for total metrics, e.g. {revenue: 2000000}: `run` reports the "
        "probability of reaching each.",
    )
    levers: Levers | None = Field(
        default=None, description="The cost of each improvement (funnelsim levers)."
    )

    _source: Path | None = PrivateAttr(default=None)
    _open_leads: tuple[OpenLead, ...] = PrivateAttr(default=())
    _customers: CustomerHistory | None = PrivateAttr(default=None)
    _posterior: dict[str, np.ndarray] | None = PrivateAttr(default=None)
    _sha256: str = PrivateAttr(default="")

    @field_validator("start", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        return parse_date(value)

    # --- derived facts, used by the engines and reports -------------------------------------
    @property
    def source(self) -> Path | None:
        """The file the scenario was read from (None when built from a dict)."""
        return self._source

    @property
    def title(self) -> str:
        """The scenario's name, or its file name."""
        if self.name:
            return self.name
        return self._source.stem if self._source else "scenario"

    @property
    def open_leads(self) -> tuple[OpenLead, ...]:
        """The opening pipeline, one entry per lead."""
        return self._open_leads

    @property
    def posterior_draws(self) -> dict[str, np.ndarray] | None:
        """Joint posterior draws of the repeat parameters, by name (one array each)."""
        return self._posterior

    @property
    def customer_history(self) -> CustomerHistory | None:
        """The existing customers read from ``existing_customers: {file: ...}``."""
        return self._customers

    @property
    def sha256(self) -> str:
        """Hash of everything the forecast depends on (after ``--set``, pipeline file included)."""
        return self._sha256

    @property
    def end(self) -> date:
        """The horizon end: the same day ``months`` calendar months after ``start``."""
        return add_months(self.start, self.months)

    @property
    def entry_stage(self) -> str:
        return next(iter(self.stages))

    def deal_value_of(self, channel: str) -> _Dist:
        return self.channels[channel].deal_value or self.deal_value  # type: ignore[return-value]


# ---------------------------------------------------------------- calendar


def add_months(day: date, months: int) -> date:
    """``day`` plus whole calendar months; the day is clamped to the month's length."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def month_label(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


# ---------------------------------------------------------------- YAML


class _SafeLoader(yaml.SafeLoader):
    """Safe YAML; duplicate keys are refused (a silent overwrite hides typos), dates are
    left as text for the schema to parse, so a bad date is reported with its field path, and
    floats are read as YAML 1.2 writes them too (``1e4``, ``2.5e6``: YAML 1.1, which PyYAML
    follows, wants a dot and a signed exponent, ``1.0e+4``, and reads ``1e4`` as text)."""


_SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver(  # after YAML 1.1's own: it adds only what they miss
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _mapping_no_duplicates(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first given on line {first}); each key may appear once",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; tags that would construct objects are refused."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in problem:
            problem = problem.replace(
                "could not determine a constructor for the tag",
                "tags that construct objects are not allowed:",
            )
        raise InputError(source, [Problem(where, f"invalid YAML: {problem}")]) from None


# ---------------------------------------------------------------- --set overrides


def apply_overrides(data: Any, overrides: Sequence[str], source: str) -> Any:
    """Apply ``PATH=VALUE`` overrides (dotted paths, integer segments index lists).

    Values are parsed as YAML. Missing mapping keys are created, so optional fields the file
    lacks can be set; the result is validated like the file itself.
    """
    for item in overrides:
        if "=" not in item:
            raise InputError("--set", f"{item!r}: expected PATH=VALUE, e.g. months=24")
        path, raw = item.split("=", 1)
        parts = [p for p in path.strip().split(".")]
        if not path.strip() or any(p == "" for p in parts):
            raise InputError("--set", f"{item!r}: the path {path!r} has an empty segment")
        value = parse_yaml(raw, f"--set {path}")
        if not isinstance(data, dict):
            raise InputError(source, "the scenario is not a mapping of keys to values")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part):
                    raise InputError(
                        "--set", f"{path}: {where} indexes a list; expected an integer"
                    )
                index = int(part)
                if not -len(node) <= index < len(node):
                    raise InputError(
                        "--set", f"{path}: index {index} is outside the list of {len(node)} items"
                    )
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                key: Any = part
                if part not in node and re.fullmatch(r"\d+", part) and int(part) in node:
                    key = int(part)
                if last:
                    node[key] = value
                else:
                    if node.get(key) is None:
                        _refuse_new_name(data, parts, depth, node, path)
                        if re.fullmatch(r"-?\d+", parts[depth + 1]):
                            parent = ".".join(parts[:depth]) or "the scenario"
                            raise InputError(
                                "--set",
                                f"{path}: {parent} has no {part} list to index with "
                                f"{parts[depth + 1]}; give it whole, e.g. {where}=[...]",
                            )
                        node[key] = {}
                    node = node[key]
            else:
                parent = ".".join(parts[:depth])
                raise InputError(
                    "--set", f"{path}: {parent} is a value ({node!r}), not a section with keys"
                )
    return data


NAMED_SECTIONS = {
    ("channels",): None,
    ("stages",): None,
    ("stages", "*", "channels"): "channels",
    ("costs", "channels"): "channels",
    ("pipeline",): "stages",
    ("targets",): None,
    ("levers", "costs"): None,
}
"""Sections whose keys are names (a channel, a stage, ...), and the section whose names they
may also take (a channel override names a channel). A ``--set`` path through another name
is a typo, not a new entry: a new entry is given whole."""


def _refuse_new_name(root: Any, parts: list[str], depth: int, node: dict, path: str) -> None:
    section = parts[:depth]
    matches = [
        names_from
        for pattern, names_from in NAMED_SECTIONS.items()
        if len(pattern) == len(section)
        and all(p == "*" or p == part for p, part in zip(pattern, section, strict=True))
    ]
    if not matches:
        return
    names_from = matches[0]
    names = [str(k) for k in node]
    source = root.get(names_from) if names_from and isinstance(root, dict) else None
    if isinstance(source, dict):
        names += [str(k) for k in source if str(k) not in names]
    name = parts[depth]
    if name in names:
        return
    where = ".".join(section)
    raise InputError(
        "--set",
        f"{path}: {where} has no '{name}'{did_you_mean(name, names)}; expected one of: "
        f"{', '.join(names) or 'none given'} (to add one, give it whole: "
        f"{where}.{name}={{...}})",
    )


# ---------------------------------------------------------------- loading


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file.

    Raises :class:`InputError` naming the file, field path, bad value and what was expected.
    """
    path = Path(path)
    text = read_text(path, "scenario file")
    data = parse_yaml(text, str(path))
    return scenario_from_dict(data, overrides=overrides, source=path)


def scenario_from_dict(
    data: Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    source: str | Path | None = None,
) -> Scenario:
    """Validate a scenario given as a dict (e.g. in a notebook).

    Relative file paths (the pipeline file) resolve against ``source``'s folder, or the
    working directory when there is no source.
    """
    label = str(source) if source is not None else "scenario"
    if data is None:
        raise InputError(label, "the file is empty; expected a scenario (see `funnelsim schema`)")
    if not isinstance(data, dict):
        raise InputError(label, f"expected a mapping of keys to values, got {type(data).__name__}")
    data = json.loads(json.dumps(data, default=str)) if overrides else dict(data)
    data = apply_overrides(data, overrides, label)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = _blame_overrides(_problems_from_pydantic(exc, data), overrides)
        raise InputError(label, problems) from None
    problems = list(_check(scenario))
    if problems:
        raise InputError(label, _blame_overrides(problems, overrides))
    base = Path(source).parent if source is not None else Path.cwd()
    open_leads = _resolve_pipeline(scenario, base, label)
    scenario._source = Path(source) if source is not None else None
    scenario._open_leads = open_leads
    if isinstance(scenario.existing_customers, ExistingFile):
        scenario._customers = read_customers(base / scenario.existing_customers.file)
    if scenario.posterior is not None:
        scenario._posterior = read_posterior(scenario, base / scenario.posterior.file)
    problems = list(_check_pipeline_ages(scenario))
    if problems:
        raise InputError(label, problems)
    scenario._sha256 = _fingerprint(scenario)
    return scenario


def _blame_overrides(problems: list[Problem], overrides: Sequence[str]) -> list[Problem]:
    """Say which ``--set`` made a problem, when a path it is about (its own, by default) is
    at, under or above the one set."""
    blamed = []
    for problem in problems:
        abouts = problem.about or (problem.where.replace(" -> ", "."),)
        culprits = [
            item
            for item in overrides
            if any(_related(where, item.split("=", 1)[0].strip()) for where in abouts)
        ]
        if culprits:
            problem = Problem(problem.where, f"{problem.message} [from --set {culprits[-1]}]")
        blamed.append(problem)
    return blamed


def _related(a: str, b: str) -> bool:
    """Dotted paths ``a`` and ``b`` are the same, or one is inside the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _fingerprint(scenario: Scenario) -> str:
    body = scenario.model_dump(mode="json")
    for key in ("targets", "levers"):  # absent: the hash of a scenario without them is as before
        if body.get(key) is None:
            body.pop(key, None)
    body["open_leads"] = [
        [lead.lead_id, lead.channel, lead.stage, lead.days_in_stage, lead.value]
        for lead in scenario.open_leads
    ]
    if scenario.posterior_draws is not None:
        body["posterior"] = {k: v.tolist() for k, v in scenario.posterior_draws.items()}
    history = scenario.customer_history
    if history is not None:
        body["customers"] = [
            list(history.customer_id),
            history.repeat_purchases.tolist(),
            history.recency_days.tolist(),
            history.age_days.tolist(),
            [None if np.isnan(v) else v for v in history.mean_spend.tolist()],
        ]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_SECTION_TYPES = {"model_type", "dict_type", "model_attributes_type"}


def _problems_from_pydantic(exc: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _real_location(err["loc"], data, missing=err["type"] == "missing")
        value = err.get("input")
        message = err["msg"]
        about: tuple[str, ...] = ()
        if err["type"] == "value_error":  # a ValueError raised in a validator: no prefix
            message = str(err.get("ctx", {}).get("error", message.removeprefix("Value error, ")))
        if err["type"] == "unknown_key":  # the unknown key is under the path: a --set of it
            about = (".".join(str(part) for part in [*loc, err["ctx"]["key"]]),)
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] in _SECTION_TYPES:
            message = f"expected a section of keys and values, got {_yaml_value(value)}"
        elif err["type"] == "distribution" and isinstance(value, dict) and "dist" in value:
            from funnelsim.distributions import DIST_NAMES

            message = (
                f"unknown distribution '{value['dist']}'{did_you_mean(value['dist'], DIST_NAMES)}"
                f"; expected one of: {', '.join(DIST_NAMES)}"
            )
        elif err["type"] != "unknown_key":
            message = f"{message} (got {_yaml_value(value)})"
        if len(loc) == 3 and loc[:2] == ["sales_team", "skill"] and isinstance(loc[2], int):
            message = f"rep {loc[2] + 1}'s skill: {message}"  # the path counts from 0
        problems.append(Problem(path_str(loc) or "(top level)", message, about))
    return problems


def _real_location(loc: Sequence[Any], data: Any, *, missing: bool) -> list[Any]:
    """The path as the user wrote it: pydantic's union tags and wrappers are dropped.

    A part is kept when it is a key or index present in the input; the last part of a
    ``missing`` error is the absent key itself.
    """
    real: list[Any] = []
    node = data
    for depth, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            real.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            real.append(part)
            node = node[part]
        elif missing and depth == len(loc) - 1:
            real.append(part)
    return real


def _yaml_value(value: Any) -> str:
    """A value as the user wrote it in YAML (``true``, ``null``, ``'abc'``), shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


# ---------------------------------------------------------------- semantic checks


def outcome_probabilities(next_: Any) -> dict[str, float]:
    """Mean outcome probabilities of a ``next`` field (Dirichlet means for uncertain ones)."""
    if isinstance(next_, Dirichlet):
        total = sum(next_.dirichlet.values())
        return {k: v / total for k, v in next_.dirichlet.items()}
    return dict(next_)


def has_silent_loss(scenario: Scenario) -> bool:
    """Whether some stage lists ``silent_loss`` among its outcomes (for some channel): then
    a forecast has the metric ``silent_lost``."""
    return any(
        SILENT_LOSS in outcome_probabilities(stage_next(scenario, name, channel))
        for name in scenario.stages
        for channel in scenario.channels
    )


def stage_next(scenario: Scenario, stage: str, channel: str) -> Any:
    override = scenario.stages[stage].channels.get(channel)
    return override.next if override and override.next is not None else scenario.stages[stage].next


def stage_duration(scenario: Scenario, stage: str, channel: str) -> Any:
    override = scenario.stages[stage].channels.get(channel)
    if override and override.duration is not None:
        return override.duration
    return scenario.stages[stage].duration


LAST_END = date(9999, 12, 1)
"""The latest horizon end: the calendar of months then ends on 9999-12-31, the last day a
date can hold."""


def _check_horizon(s: Scenario) -> Iterable[Problem]:
    """The horizon must end on a date the calendar can hold (at the latest ``LAST_END``)."""
    months_left = (LAST_END.year * 12 + LAST_END.month) - (s.start.year * 12 + s.start.month)
    months_left -= s.start.day > LAST_END.day
    if months_left < 1:
        yield Problem(
            "start",
            f"{s.start} leaves no whole month before {LAST_END}, the latest horizon end "
            "(dates stop at 9999-12-31); expected an earlier start",
        )
    elif s.months > months_left:
        yield Problem(
            "months",
            f"{s.months} months from start {s.start} would end after {LAST_END}, the latest "
            f"horizon end (dates stop at 9999-12-31); expected at most {months_left} "
            f"month{'s' if months_left > 1 else ''} from this start, or an earlier start",
            about=("months", "start"),
        )


def _check(s: Scenario) -> Iterable[Problem]:
    horizon = list(_check_horizon(s))
    if horizon:
        yield from horizon
        return  # the other checks need the horizon end
    stages, channels = list(s.stages), list(s.channels)
    targets = stages + list(OUTCOME_WORDS)
    for name in stages:
        if name in RESERVED_NAMES:
            yield Problem(f"stages -> {name}", f"'{name}' is reserved and cannot name a stage")
    if SILENT_LOSS in channels:
        yield Problem(
            f"channels -> {SILENT_LOSS}",
            f"'{SILENT_LOSS}' is reserved (an outcome) and cannot name a channel",
        )
    for kind, names in (("stages", stages), ("channels", channels)):
        for name in names:
            if "." in name or not name.strip():
                yield Problem(
                    f"{kind} -> {name}", f"name {name!r} must be non-empty and contain no '.'"
                )
    first_month = month_label(s.start)
    last_month = month_label(date.fromordinal(s.end.toordinal() - 1))
    for cname, ch in s.channels.items():
        where = f"channels -> {cname}"
        if ch.seasonality is not None and len(ch.seasonality) != 12:
            yield Problem(
                f"{where} -> seasonality",
                f"has {len(ch.seasonality)} values; expected 12 (January to December)",
            )
        if isinstance(ch.leads_per_month, dict):
            if ch.seasonality is not None or ch.growth_per_month:
                yield Problem(
                    where,
                    "a monthly plan gives each month's leads itself; seasonality and "
                    "growth_per_month apply only to a leads_per_month rate",
                )
            for month in ch.leads_per_month:
                if not first_month <= month <= last_month:
                    yield Problem(
                        f"{where} -> leads_per_month -> {month}",
                        f"is outside the horizon {first_month} to {last_month}",
                    )
    if s.deal_value is None and not isinstance(s.repeat, Subscription):
        missing = [c for c, ch in s.channels.items() if ch.deal_value is None]
        if missing:
            yield Problem(
                "deal_value",
                "is required (the value of a won deal, in the scenario's currency) unless every "
                f"channel sets its own; missing for: {', '.join(missing)}",
            )
    for sname, stage in s.stages.items():
        where = f"stages -> {sname}"
        yield from _check_next(stage.next, f"{where} -> next", targets)
        yield from _check_duration(stage.duration, stage.next, f"{where} -> duration")
        for cname, override in stage.channels.items():
            owhere = f"{where} -> channels -> {cname}"
            if cname not in s.channels:
                yield Problem(
                    owhere,
                    f"unknown channel '{cname}'{did_you_mean(cname, channels)}; "
                    f"expected one of: {', '.join(channels)}",
                )
                continue
            if override.next is not None:
                yield from _check_next(override.next, f"{owhere} -> next", targets)
            if override.duration is not None:
                yield from _check_duration(
                    override.duration, stage_next(s, sname, cname), f"{owhere} -> duration"
                )
            elif override.next is not None:  # inherits the stage's durations
                yield from _check_duration(
                    stage.duration, override.next, f"{owhere} -> next", extra_ok=True
                )
    yield from _check_graph(s)
    if s.sales_team is not None:
        yield from _check_team(s, s.sales_team)
    yield from _check_money(s)
    yield from _check_volumes(s)
    yield from _check_targets(s)
    yield from _check_levers(s)
    if isinstance(s.pipeline, dict):
        for sname, entry in s.pipeline.items():
            where = f"pipeline -> {sname}"
            if sname not in s.stages:
                yield Problem(
                    where,
                    f"unknown stage '{sname}'{did_you_mean(sname, stages)}; "
                    f"expected one of: {', '.join(stages)}",
                )
            if entry.channel is not None and entry.channel not in s.channels:
                yield Problem(
                    f"{where} -> channel",
                    f"unknown channel '{entry.channel}'{did_you_mean(entry.channel, channels)}; "
                    f"expected one of: {', '.join(channels)}",
                )


def _check_next(next_: Any, where: str, targets: list[str]) -> Iterable[Problem]:
    probs = next_.dirichlet if isinstance(next_, Dirichlet) else next_
    if not probs:
        yield Problem(where, "is empty; expected at least one outcome (a stage, won or lost)")
        return
    for outcome in probs:
        if outcome not in targets:
            yield Problem(
                f"{where} -> {outcome}",
                f"unknown outcome '{outcome}'{did_you_mean(outcome, targets)}; "
                "expected a stage, won, lost or silent_loss",
            )
    if not isinstance(next_, Dirichlet):
        total = sum(probs.values())
        if abs(total - 1.0) > PROBABILITY_TOLERANCE:
            yield Problem(where, f"probabilities sum to {total:.12g}; expected 1")


def _check_duration(
    duration: Any, next_: Any, where: str, *, extra_ok: bool = False
) -> Iterable[Problem]:
    """With per-outcome durations, every outcome needs one (and, unless ``extra_ok``, every
    duration must belong to an outcome)."""
    if not isinstance(duration, dict):
        return
    if SILENT_LOSS in duration:
        yield Problem(
            f"{where} -> {SILENT_LOSS}",
            f"{SILENT_LOSS} has no time in the stage (the lead leaves at once, with nothing "
            f"recorded); got a duration {duration[SILENT_LOSS].describe()}; expected none: "
            "remove it",
        )
    outcomes = list((next_.dirichlet if isinstance(next_, Dirichlet) else next_).keys())
    for outcome in outcomes:
        if outcome != SILENT_LOSS and outcome not in duration:
            yield Problem(
                where,
                f"has no duration for outcome '{outcome}'; with per-outcome durations every "
                f"outcome needs one (outcomes: {', '.join(outcomes)}; durations given for: "
                f"{', '.join(duration)})",
            )
    if extra_ok:
        return
    for outcome in duration:
        if outcome not in outcomes and outcome != SILENT_LOSS:
            yield Problem(
                f"{where} -> {outcome}",
                f"'{outcome}' is not an outcome of this stage{did_you_mean(outcome, outcomes)}; "
                f"expected one of: {', '.join(outcomes)}",
            )


def _edges(s: Scenario, channel: str) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for sname in s.stages:
        probs = outcome_probabilities(stage_next(s, sname, channel))
        edges[sname] = {t for t, p in probs.items() if p > 0}
    return edges


def _reachable(edges: Mapping[str, set[str]], starts: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(edges.get(node, ()))
    return seen


def _check_graph(s: Scenario) -> Iterable[Problem]:
    stages = list(s.stages)
    known = set(stages) | set(OUTCOME_WORDS)
    if any(t not in known for st in s.stages.values() for t in outcome_probabilities(st.next)):
        return  # reported above; the graph is not meaningful yet
    entry = stages[0]
    reached: set[str] = set()
    stuck: dict[str, list[str]] = {}
    for channel in s.channels:
        edges = _edges(s, channel)
        if any(t not in known for targets in edges.values() for t in targets):
            return
        reach = _reachable(edges, [entry])
        reached |= reach
        reverse: dict[str, set[str]] = {}
        for src, targets in edges.items():
            for t in targets:
                reverse.setdefault(t, set()).add(src)
        can_close = _reachable(reverse, OUTCOME_WORDS)
        for stage in stages:
            if stage in reach and stage not in can_close:
                stuck.setdefault(stage, []).append(channel)
    for stage in stages:
        if stage not in reached:
            yield Problem(
                f"stages -> {stage}",
                f"cannot be reached from the entry stage '{entry}' (new leads enter the first "
                "stage listed; no outcome with probability > 0 leads here)",
            )
    if stuck:
        names = ", ".join(stuck)
        channels = sorted({c for cs in stuck.values() for c in cs}, key=list(s.channels).index)
        whose = (
            ""
            if len(channels) == len(s.channels)
            else f" (for channel {', '.join(channels)}, through its overrides)"
        )
        yield Problem(
            "stages",
            f"leads in {names}{whose} can never reach won or lost: a loop with no exit "
            "(give one of these stages an outcome won or lost with probability > 0)",
        )


def _check_money(s: Scenario) -> Iterable[Problem]:
    """Channel costs, where volumes come from budgets, and what repeat sales need."""
    costs = s.costs.channels if s.costs else {}
    for name in costs:
        if name not in s.channels:
            yield Problem(
                f"costs -> channels -> {name}",
                f"unknown channel '{name}'{did_you_mean(name, s.channels)}; "
                f"expected one of: {', '.join(s.channels)}",
            )
    for name, channel in s.channels.items():
        if channel.leads_per_active_customer_per_month is not None:
            yield from _check_word_of_mouth(s, name, channel)
            continue
        if channel.leads_per_month is not None:
            continue
        cost = costs.get(name)
        if cost is None or cost.budget_per_month is None or not cost.cost_per_lead:
            yield Problem(
                f"channels -> {name} -> leads_per_month",
                "is required unless costs -> channels -> "
                f"{name} gives both budget_per_month and a cost_per_lead above 0 "
                "(leads per month = budget ÷ cost per lead)",
            )
    if s.existing_customers is not None and s.repeat is None:
        yield Problem(
            "existing_customers",
            "needs a repeat section: existing customers matter only for their repeat purchases",
        )
    if isinstance(s.existing_customers, ExistingFile) and not isinstance(
        s.repeat, (BGNBD, ParetoNBD)
    ):
        yield Problem(
            "existing_customers -> file",
            "a customers file (purchase histories) works with repeat models bg_nbd and "
            f"pareto_nbd; with {getattr(s.repeat, 'model', 'this model')} give "
            "existing_customers: {count: N}",
        )


MAX_LEADS = 1e8
"""The most new leads one replication may expect: every lead is simulated, and 1e7 already
take seconds and more than a gigabyte per replication (1e12 would ask for terabytes)."""


def _leads_bound(s: Scenario, name: str) -> float:
    """An upper bound of channel ``name``'s expected new leads over the horizon in one
    replication: its volume (a plan's total; a budget ÷ cost per lead) × the highest
    seasonality × the growth of the last month, every month (word of mouth: 0)."""
    channel = s.channels[name]
    volume = channel.leads_per_month
    cost = s.costs.channels.get(name) if s.costs else None
    if volume is None and cost is not None and cost.budget_per_month and cost.cost_per_lead:
        volume = cost.budget_per_month / cost.cost_per_lead
    if volume is None:
        return 0.0
    if isinstance(volume, dict):
        return float(sum(volume.values()))
    mean = volume.expected_value() if isinstance(volume, _Dist) else float(volume)
    season = max(channel.seasonality or [1.0])
    if mean <= 0 or season <= 0:
        return 0.0
    growth = max(channel.growth_per_month, 0.0)
    log_bound = math.log(mean * season * (s.months + 1)) + s.months * math.log1p(growth)
    return math.exp(min(log_bound, 700.0))


def _e(x: float) -> str:
    """A large number as ``8.4e12``."""
    return re.sub(r"e\+?0*(\d)", r"e\1", f"{x:.2g}")


def _check_volumes(s: Scenario) -> Iterable[Problem]:
    bounds = {name: _leads_bound(s, name) for name in s.channels}
    total = sum(bounds.values())
    if total <= MAX_LEADS:
        return
    name = max(bounds, key=bounds.__getitem__)
    where = f"channels.{name}"
    yield Problem(
        f"channels -> {name} -> leads_per_month",
        f"makes up to {_e(total)} new leads over the horizon in one replication (this "
        f"channel {_e(bounds[name])}, from its leads_per_month or budget ÷ cost per lead, "
        f"seasonality and growth over {s.months} months); expected at most "
        f"{_e(MAX_LEADS)}: every lead is simulated, and 1e7 already take seconds and more "
        "than a gigabyte per replication",
        about=(where, "months", f"costs.channels.{name}"),
    )


def _check_word_of_mouth(s: Scenario, name: str, channel: Channel) -> Iterable[Problem]:
    where = f"channels -> {name}"
    if channel.leads_per_month is not None:
        yield Problem(
            f"{where} -> leads_per_month",
            "a channel has either leads_per_month or leads_per_active_customer_per_month "
            "(word of mouth), not both",
        )
    if s.repeat is None:
        yield Problem(
            f"{where} -> leads_per_active_customer_per_month",
            "needs a repeat section: word of mouth comes from active customers, and customers "
            "are active only as the repeat model says",
        )


def _check_team(s: Scenario, team: SalesTeam) -> Iterable[Problem]:
    stages = list(s.stages)
    for i, name in enumerate(team.stages):
        if name not in s.stages:
            yield Problem(
                f"sales_team -> stages -> {i}",
                f"unknown stage '{name}'{did_you_mean(name, stages)}; "
                f"expected one of: {', '.join(stages)}",
            )
    if len(set(team.stages)) != len(team.stages):
        yield Problem("sales_team -> stages", "lists a stage twice")
    previous = None  # the last entry in the horizon: an entry outside is reported alone
    for i, hire in enumerate(team.hiring):
        where = f"sales_team -> hiring -> {i} -> from"
        dates = f"a hiring date after {s.start} and before {s.end}"
        if hire.from_ == s.start:
            yield Problem(
                where,
                f"{hire.from_} is the start date: the team on the start date is sales_team -> "
                f"reps ({team.reps}); set reps: {hire.reps} there, or give {dates}",
            )
        elif hire.from_ < s.start:
            yield Problem(
                where,
                f"{hire.from_} is before the start date (the team on the start date is "
                f"sales_team -> reps); expected {dates}",
            )
        elif hire.from_ >= s.end:
            yield Problem(where, f"{hire.from_} is outside the horizon; expected {dates}")
        elif previous is not None and hire.from_ <= previous:
            yield Problem(where, f"{hire.from_} is not after the previous entry ({previous})")
        else:
            previous = hire.from_
    most = max([team.reps, len(team.skill)] + [h.reps for h in team.hiring])
    skills = list(team.skill) + [1.0] * (most - len(team.skill))
    for name in team.stages:
        if name not in s.stages:
            continue
        for channel in s.channels:
            probs = outcome_probabilities(stage_next(s, name, channel))
            kept = sum(p for k, p in probs.items() if k != LOST)
            for rep, skill in enumerate(skills):
                if skill * kept > 1.0 + PROBABILITY_TOLERANCE:
                    yield Problem(
                        f"sales_team -> skill -> {rep}",
                        f"rep {rep + 1}'s skill {skill:g} × P(not lost) {kept:g} = "
                        f"{skill * kept:.4g} in stage '{name}' (channel {channel}) would leave "
                        f"lost below 0; expected a skill of at most {1 / kept:.4g} there",
                    )
                    break
            else:
                continue
            break
        duration = s.stages[name].duration
        lost_listed = LOST in outcome_probabilities(s.stages[name].next)
        if isinstance(duration, dict) and not lost_listed and any(x != 1.0 for x in skills):
            yield Problem(
                f"stages -> {name} -> duration",
                "has no duration for 'lost', which a rep with skill below 1 makes possible in "
                "this rep-worked stage; add one",
            )


def scenario_warnings(s: Scenario) -> list[Problem]:
    """What is valid but probably not meant, each with its field path (nothing raised)."""
    warnings = []
    team = s.sales_team
    if team is not None and team.reps == 0 and all(h.reps == 0 for h in team.hiring):
        fate = "waits for a rep to the end" if team.patience is None else "goes cold waiting"
        warnings.append(
            Problem(
                "sales_team -> reps",
                f"0 reps{' and no hiring' if not team.hiring else ', and hiring adds none'}: "
                f"no rep ever works {', '.join(team.stages)}, so every lead that reaches "
                f"{'it' if len(team.stages) == 1 else 'them'} {fate}",
            )
        )
    return warnings


def total_metrics(s: Scenario) -> list[str]:
    """The metrics a forecast of ``s`` has in total over the horizon (targets may name them)."""
    from funnelsim.forecast import (
        ECONOMICS_METRICS,
        FUNNEL_METRICS,
        REPEAT_METRICS,
        SILENT_METRICS,
        TEAM_METRICS,
    )

    names = list(FUNNEL_METRICS)
    if has_silent_loss(s):
        names += SILENT_METRICS
    if s.repeat is not None:
        names += REPEAT_METRICS
    if s.sales_team is not None:
        names += TEAM_METRICS
    if s.costs is not None:
        names += ECONOMICS_METRICS
    return names


def lever_names(s: Scenario) -> list[str]:
    """The levers of a scenario (what ``funnelsim levers`` improves, one at a time), by name:
    each channel's volume, each stage's advance probability and duration, the deal value,
    the sales team's size and patience, and the repeat model's purchase rate, churn and
    spend (as the scenario has them)."""
    names = [f"channels.{c}.leads_per_month" for c in s.channels]
    for stage in s.stages:
        names += [f"stages.{stage}.advance", f"stages.{stage}.duration"]
    if s.deal_value is not None or any(ch.deal_value is not None for ch in s.channels.values()):
        names.append("deal_value")
    if s.sales_team is not None:
        names.append("sales_team.reps")
        if s.sales_team.patience is not None:
            names.append("sales_team.patience")
    if s.repeat is not None:
        if not isinstance(s.repeat, Subscription):
            names.append("repeat.purchase_rate")
        names += ["repeat.churn", "repeat.spend"]
    return names


def _check_targets(s: Scenario) -> Iterable[Problem]:
    if not s.targets:
        return
    valid = total_metrics(s)
    for name in s.targets:
        if name not in valid:
            yield Problem(
                f"targets -> {name}",
                f"unknown metric '{name}'{did_you_mean(name, valid)}; expected a total metric "
                f"of this scenario: {', '.join(valid)}",
            )


def _check_levers(s: Scenario) -> Iterable[Problem]:
    if s.levers is None:
        return
    valid = lever_names(s)
    for name in s.levers.costs:
        if name not in valid:
            yield Problem(
                f"levers -> costs -> {name}",
                f"unknown lever '{name}'{did_you_mean(name, valid)}; expected one of: "
                f"{', '.join(valid)}",
            )


# ---------------------------------------------------------------- the opening pipeline


def _resolve_pipeline(s: Scenario, base: Path, label: str) -> tuple[OpenLead, ...]:
    if s.pipeline is None:
        return ()
    if isinstance(s.pipeline, PipelineFile):
        return _read_pipeline_file(s, base / s.pipeline.file)
    default_channel = next(iter(s.channels))
    leads = []
    for sname, entry in s.pipeline.items():
        channel = entry.channel or default_channel
        for j in range(entry.count):
            leads.append(OpenLead(f"{sname}#{j}", channel, sname, float(entry.days_in_stage)))
    return tuple(leads)


def _read_pipeline_file(s: Scenario, path: Path) -> tuple[OpenLead, ...]:
    source = str(path)
    text = read_text(path, "pipeline file", "pipeline -> file")
    reader, header = _csv_with_columns(
        text, source, ["lead_id", "channel", "stage", "days_in_stage"], optional="value"
    )
    problems: list[Problem] = []
    leads: list[OpenLead] = []
    seen: dict[str, int] = {}
    for row in reader:
        row_number = reader.line_num
        where = f"row {row_number}"
        if None in row:
            problems.append(
                Problem(
                    where,
                    f"has {len(header) + len(row[None])} values but the header has "
                    f"{len(header)} columns ({','.join(header)})",
                )
            )
            continue
        if any("\n" in (value or "") for value in row.values()):
            problems.append(Problem(where, "a quoted field is not closed (a stray '\"')"))
            continue
        lead_id = (row.get("lead_id") or "").strip()
        channel = (row.get("channel") or "").strip()
        stage = (row.get("stage") or "").strip()
        if not lead_id:
            problems.append(Problem(where, "lead_id is empty"))
        elif lead_id in seen:
            problems.append(
                Problem(where, f"lead_id {lead_id!r} repeats row {seen[lead_id]}; expected unique")
            )
        seen.setdefault(lead_id, row_number)
        if channel not in s.channels:
            problems.append(
                Problem(
                    where,
                    f"channel {channel!r} is not a channel of the scenario"
                    f"{did_you_mean(channel, s.channels)}; "
                    f"expected one of: {', '.join(s.channels)}",
                )
            )
        if stage not in s.stages:
            problems.append(
                Problem(
                    where,
                    f"stage {stage!r} is not a stage of the scenario{did_you_mean(stage, s.stages)}"
                    f"; expected one of: {', '.join(s.stages)}",
                )
            )
        age = _csv_number(row.get("days_in_stage"), "days_in_stage", where, problems)
        value = None
        if "value" in header and (row.get("value") or "").strip():
            value = _csv_number(row.get("value"), "value", where, problems)
        if age is not None and stage in s.stages and channel in s.channels:
            leads.append(OpenLead(lead_id, channel, stage, age, value, row_number))
    if problems:
        raise InputError(source, problems)
    return tuple(leads)


POSTERIOR_PARAMETERS = {
    "bg_nbd": ("r", "alpha", "a", "b"),
    "pareto_nbd": ("r", "alpha", "s", "beta"),
}
SPEND_PARAMETERS = ("p", "q", "gamma")


def read_posterior(scenario: Scenario, path: Path) -> dict[str, np.ndarray]:
    """Every scalar variable of the posterior, its draws (chains × draws) flattened.

    Reads the ``posterior`` group of an ArviZ InferenceData netCDF file with xarray (no PyMC).
    With a bg_nbd or pareto_nbd repeat model its parameters must be there (and Gamma-Gamma's
    are used when present); the funnel's fitted parameters (named ``p__<stage>__<channel>__
    <outcome>``, ``duration__<stage>__<outcome>__<parameter>``, ``value__<channel>__
    <parameter>``, ``arrivals__<channel>__<parameter>``) are checked against the funnel
    when it is compiled.
    """
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(source, "posterior file not found (posterior -> file)") from None
    except OSError as exc:
        raise InputError(source, f"cannot read the posterior file: {exc}") from None
    expected = scenario.posterior.sha256
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise InputError(
            source,
            "the file's sha256 is not the one the scenario names (posterior -> sha256): it "
            "changed since the fit; refit, or update the hash",
        )
    import xarray as xr

    try:
        with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
            draws = {
                str(name): np.asarray(var.values, dtype=float).reshape(-1)
                for name, var in ds.data_vars.items()
                if set(var.dims) <= {"chain", "draw"}
            }
    except (OSError, ValueError) as exc:
        raise InputError(
            source, f"not a posterior netCDF file with a posterior group: {exc}"
        ) from None
    model = scenario.repeat
    if model is not None and model.model in POSTERIOR_PARAMETERS:
        names = list(POSTERIOR_PARAMETERS[model.model])
        missing = [n for n in names if n not in draws]
        if missing:
            raise InputError(
                source,
                f"the posterior group has no {', '.join(missing)}; expected the "
                f"{model.model} parameters {', '.join(names)}",
            )
    bad = [n for n, v in draws.items() if not np.isfinite(v).all()]
    if bad:
        raise InputError(source, f"posterior draws of {', '.join(bad[:5])} must be finite")
    problems = _funnel_posterior_problems(scenario, draws)
    if problems:
        raise InputError(source, problems)
    return draws


ARRIVAL_FIELDS = ("leads_per_month", "growth_per_month", *(f"season_{m}" for m in range(1, 13)))


def _funnel_posterior_problems(
    scenario: Scenario, draws: Mapping[str, np.ndarray]
) -> list[Problem]:
    """The funnel's posterior variables must name this scenario's stages, channels, outcomes
    and distribution fields (else the engines would silently not use them), with draws in
    range; a stage's probabilities must cover all its outcomes for that channel."""
    problems: list[Problem] = []
    covered: dict[tuple[str, str], set[str]] = {}

    def bad(name: str, message: str) -> None:
        problems.append(Problem(f"variable {name}", message))

    def known(name: str, what: str, value: str, choices: Iterable[str], where="") -> bool:
        choices = list(choices)
        if value in choices:
            return True
        bad(
            name,
            f"{what} {value!r} is not in the scenario{where}{did_you_mean(value, choices)}; "
            f"expected one of {', '.join(choices)}",
        )
        return False

    for name, values in draws.items():
        kind, sep, rest = name.partition("__")
        parts = rest.split("__")
        if not sep or kind not in _POSTERIOR_NAMES:  # the repeat model's r, alpha, p, ...
            continue
        if len(parts) != (2 if kind in ("value", "arrivals") else 3):
            bad(name, f"expected {_POSTERIOR_NAMES[kind]}")
            continue
        if kind == "p":
            stage, channel, outcome = parts
            if known(name, "stage", stage, scenario.stages) and known(
                name, "channel", channel, scenario.channels
            ):
                targets = _outcomes_of(scenario, stage, channel)
                if known(name, f"outcome of {stage}", outcome, targets):
                    covered.setdefault((stage, channel), set()).add(outcome)
            if ((values < 0) | (values > 1)).any():
                bad(name, "draws must be probabilities between 0 and 1")
        elif kind == "duration":
            stage, label, fld = parts
            if not known(name, "stage", stage, scenario.stages):
                continue
            duration = scenario.stages[stage].duration
            per_outcome = duration if isinstance(duration, dict) else {}
            if label == "all":
                dists = list(per_outcome.values()) or [duration]
            elif not per_outcome:
                bad(name, f"stage {stage} has one duration: expected duration__{stage}__all__{fld}")
                continue
            elif known(name, f"outcome of {stage}", label, per_outcome):
                dists = [per_outcome[label]]
            else:
                continue
            fits = all(
                known(name, "field", fld, _dist_fields(d), f"'s {d.dist} of {stage}") for d in dists
            )
            if fits and (values <= 0).any():
                bad(name, "draws must be positive")
        elif kind == "value":
            channel, fld = parts
            if not known(name, "channel", channel, scenario.channels):
                continue
            dist = scenario.deal_value_of(channel)
            if (
                known(name, "field", fld, _dist_fields(dist), f"'s {dist.dist} deal value")
                and (values <= 0).any()
            ):
                bad(name, "draws must be positive")
        else:
            channel, fld = parts
            if known(name, "channel", channel, scenario.channels):
                known(name, "arrival field", fld, [*ARRIVAL_FIELDS, "k"])
    for (stage, channel), outcomes in covered.items():
        missing = [o for o in _outcomes_of(scenario, stage, channel) if o not in outcomes]
        if missing:
            bad(
                f"p__{stage}__{channel}__{missing[0]}",
                f"is missing: the posterior gives {stage}'s other outcomes for {channel}, so "
                "it must give all of them",
            )
    return problems


_POSTERIOR_NAMES = {
    "p": "p__<stage>__<channel>__<outcome>",
    "duration": "duration__<stage>__<outcome or all>__<field>",
    "value": "value__<channel>__<field>",
    "arrivals": "arrivals__<channel>__<field>",
}


def _outcomes_of(scenario: Scenario, stage: str, channel: str) -> list[str]:
    spec = scenario.stages[stage]
    override = spec.channels.get(channel)
    chosen = override.next if override is not None and override.next is not None else spec.next
    return list(chosen.dirichlet if isinstance(chosen, Dirichlet) else chosen)


def _dist_fields(dist: _Dist) -> list[str]:
    return [f for f in type(dist).model_fields if f != "dist"]


def read_customers(path: Path) -> CustomerHistory:
    """Read a customers file: customer_id,repeat_purchases,recency_days,age_days[,mean_spend].

    ``repeat_purchases`` counts purchases after the first; ``recency_days`` is the time from
    the first to the last purchase (0 without repeat purchases); ``age_days`` the time from the
    first purchase to the start date. ``funnelsim fit --transactions`` writes such files.
    """
    source = str(path)
    text = read_text(path, "customers file", "existing_customers -> file")
    required = ["customer_id", "repeat_purchases", "recency_days", "age_days"]
    reader, header = _csv_with_columns(text, source, required, optional="mean_spend")
    problems: list[Problem] = []
    ids: list[str] = []
    columns: dict[str, list[float]] = {c: [] for c in required[1:] + ["mean_spend"]}
    seen: dict[str, int] = {}
    for row in reader:
        where = f"row {reader.line_num}"
        if None in row:
            problems.append(Problem(where, f"has more values than the {len(header)} columns"))
            continue
        cid = (row.get("customer_id") or "").strip()
        if not cid:
            problems.append(Problem(where, "customer_id is empty"))
        elif cid in seen:
            problems.append(Problem(where, f"customer_id {cid!r} repeats row {seen[cid]}"))
        seen.setdefault(cid, reader.line_num)
        values = {c: _csv_number(row.get(c), c, where, problems) for c in required[1:]}
        spend = None
        if "mean_spend" in header and (row.get("mean_spend") or "").strip():
            spend = _csv_number(row.get("mean_spend"), "mean_spend", where, problems)
        x, recency, age = values["repeat_purchases"], values["recency_days"], values["age_days"]
        if x is not None and x != int(x):
            problems.append(Problem(where, f"repeat_purchases {x:g} is not a whole number"))
        if None not in (x, recency, age):
            if recency > age:
                problems.append(
                    Problem(where, f"recency_days {recency:g} is more than age_days {age:g}")
                )
            if x == 0 and recency > 0:
                problems.append(
                    Problem(where, f"recency_days {recency:g} with no repeat purchase; expected 0")
                )
            ids.append(cid)
            columns["repeat_purchases"].append(x)
            columns["recency_days"].append(recency)
            columns["age_days"].append(age)
            columns["mean_spend"].append(np.nan if spend is None else spend)
    if problems:
        raise InputError(source, problems)
    return CustomerHistory(
        customer_id=tuple(ids),
        **{name: np.asarray(values, dtype=float) for name, values in columns.items()},
    )


def _csv_with_columns(
    text: str, source: str, required: list[str], *, optional: str
) -> tuple[csv.DictReader, list[str]]:
    """A CSV reader over ``text`` whose header has the ``required`` columns, perhaps the
    ``optional`` one, and no other, or an error naming the columns missing or unknown.

    Spaces around column names are ignored (``lead_id, channel`` is ``lead_id,channel``).
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if reader.fieldnames is not None:
        reader.fieldnames = header  # the rows' keys are the stripped names
    expected = f"{','.join(required)}[,{optional}]"
    found = ", ".join(repr(name) for name in header) or "nothing"
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            source,
            f"missing column(s) {', '.join(missing)}; expected a header {expected} "
            f"(found: {found}; spaces around names are ignored)",
        )
    problems = []
    known = [*required, optional]
    for i, name in enumerate(header):
        if name in header[:i]:
            problems.append(Problem("header", f"column {name!r} appears twice"))
        elif not name:
            problems.append(
                Problem("header", f"column {i + 1} has no name; expected a header {expected}")
            )
        elif name not in known:
            problems.append(
                Problem(
                    "header",
                    f"unknown column {name!r}{did_you_mean(name, known)}; expected a header "
                    f"{expected}",
                )
            )
    if problems:
        raise InputError(source, problems)
    return reader, header


def _csv_number(raw: str | None, column: str, where: str, problems: list[Problem]) -> float | None:
    text = (raw or "").strip()
    try:
        value = float(text)
    except ValueError:
        problems.append(Problem(where, f"{column} {text!r} is not a number"))
        return None
    if not np.isfinite(value) or value < 0:
        problems.append(Problem(where, f"{column} {text!r} must be a finite number >= 0"))
        return None
    return value


def _check_pipeline_ages(s: Scenario) -> Iterable[Problem]:
    """An aged open lead must be able to still be in its stage: some S_k(age) > 0."""
    checked: dict[tuple[str, str, float], bool] = {}
    for lead in s.open_leads:
        key = (lead.stage, lead.channel, lead.days_in_stage)
        if key not in checked:
            checked[key] = _can_still_be_open(s, *key)
            if not checked[key]:
                where = (
                    f"pipeline -> {lead.stage}"
                    if isinstance(s.pipeline, dict)
                    else f"pipeline file {s.pipeline.file}, row {lead.row} (lead {lead.lead_id})"
                )
                yield Problem(
                    where,
                    f"days_in_stage {lead.days_in_stage:g}: no lead of channel {lead.channel} "
                    f"stays that long in '{lead.stage}' "
                    "(every outcome's duration has ended by then)",
                )


def survival_weights(s: Scenario, stage: str, channel: str, age: float) -> dict[str, float]:
    """P(outcome k | still in ``stage`` after ``age`` days) ∝ p_k · S_k(age) (unnormalised;
    S = 1 for silent_loss: a lead still open may have been lost silently)."""
    probs = outcome_probabilities(stage_next(s, stage, channel))
    duration = stage_duration(s, stage, channel)
    weights = {}
    for outcome, p in probs.items():
        if outcome == SILENT_LOSS:
            weights[outcome] = p
            continue
        dist = duration[outcome] if isinstance(duration, dict) else duration
        weights[outcome] = p * (float(dist.sf(age)) if age > 0 else 1.0)
    return weights


def _can_still_be_open(s: Scenario, stage: str, channel: str, age: float) -> bool:
    stale_after = s.stages[stage].stale_after
    if stale_after is not None and age >= stale_after:
        return True  # stale: lost on the start date
    return sum(survival_weights(s, stage, channel, age).values()) > 0


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editor completion and validation.

    Unions are given as ``anyOf``: a bare number is both a count and a fixed distribution.
    """

    def relax(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                ("anyOf" if k == "oneOf" else k): relax(v)
                for k, v in node.items()
                if k != "discriminator"
            }
        if isinstance(node, list):
            return [relax(v) for v in node]
        return node

    schema = relax(Scenario.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "funnelsim scenario (version 1)"
    return schema


def with_posterior_draws(scenario: Scenario, draws: dict[str, np.ndarray]) -> Scenario:
    """A copy of ``scenario`` whose joint posterior draws are ``draws`` (same names, e.g.
    scaled by a lever); its sha256 covers them."""
    copy = scenario.model_copy()
    copy._posterior = draws
    copy._sha256 = _fingerprint(copy)
    return copy


def scenario_with(scenario: Scenario, overrides: Sequence[str]) -> Scenario:
    """A copy of ``scenario`` with ``--set``-style changes, validated like a file."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    return scenario_from_dict(data, overrides=overrides, source=scenario.source)
