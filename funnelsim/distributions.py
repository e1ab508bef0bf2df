"""Distributions of durations (days), deal values (currency) and uncertain volumes.

Every distribution is a small frozen pydantic model that knows its mean, its survival
function, and how to draw from *keys*: one 64-bit key per draw (see :mod:`funnelsim.streams`),
from which it derives as many uniforms as it needs. Drawing from keys rather than from a
shared generator is what lets a draw belong to one lead. ``sample(rng, size)`` draws from an
ordinary NumPy generator. Nothing here touches global random state.

All supports are non-negative: durations, deal values and lead volumes cannot be below 0.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from funnelsim import streams
from funnelsim.strict import Strict

__all__ = ["Distribution", "DIST_NAMES", "as_distribution"]


@functools.lru_cache(maxsize=4096)
def _aux(j: int) -> np.uint64:
    """Salt of the j-th auxiliary uniform of a draw."""
    return streams.salt(0, 0x64697374, j)


def _u(keys: np.ndarray, j: int) -> np.ndarray:
    return streams.uniform(keys, _aux(j))


def _normal(keys: np.ndarray, j: int = 0) -> np.ndarray:
    """Standard normals by Box-Muller from auxiliary uniforms 2j and 2j+1 (exact)."""
    u1 = _u(keys, 2 * j)
    u2 = _u(keys, 2 * j + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


_GAMMA_BOOST = 1_000_003


def standard_gamma(shape: float | np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Gamma(shape, 1) draws by Marsaglia & Tsang (2000), exact, one key per draw.

    ``shape`` is one number or one per key. Rejected proposals are retried with the next
    auxiliary uniforms of the same key, so a key always gives the same value. Shapes below 1
    use the boost Gamma(a) = Gamma(a+1)·U^(1/a).
    """
    keys = np.asarray(keys, dtype=np.uint64)
    a = np.broadcast_to(np.asarray(shape, dtype=float), keys.shape).reshape(-1)
    boost = a < 1.0
    d = np.where(boost, a + 1.0, a) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    out = np.empty(keys.shape, dtype=np.float64)
    pending = np.arange(keys.size)
    flat = keys.reshape(-1)
    attempt = 0
    while pending.size:
        k, dk = flat[pending], d[pending]
        z = _normal(k, 3 * attempt)
        u = _u(k, 3 * attempt + 2)
        v = (1.0 + c[pending] * z) ** 3
        ok = v > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            ok &= np.log(u) < 0.5 * z * z + dk - dk * v + dk * np.log(np.where(ok, v, 1.0))
        out.reshape(-1)[pending[ok]] = dk[ok] * v[ok]
        pending = pending[~ok]
        attempt += 1
    if boost.any():
        b = np.flatnonzero(boost)
        out.reshape(-1)[b] *= _u(flat[b], _GAMMA_BOOST) ** (1.0 / a[b])
    return out


def poisson_from_uniform(u: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Poisson(mean) draws by inversion of the CDF at ``u``: the smallest k with
    P(X ≤ k) ≥ u. Exact for every mean (the search starts at a normal guess and steps
    with the probability mass function), and monotone in ``mean`` for a fixed ``u``."""
    from scipy.special import gammaln, ndtri, pdtr

    u = np.asarray(u, dtype=float)
    mean = np.broadcast_to(np.asarray(mean, dtype=float), u.shape)
    k = np.floor(np.maximum(mean + np.sqrt(mean) * ndtri(u), 0.0))
    cdf = pdtr(k, mean)  # P(X ≤ k)
    with np.errstate(divide="ignore"):
        log_mean = np.log(mean)

    def pmf(j, where):
        m = mean[where]
        return np.exp(np.where(m > 0, j * log_mean[where] - m - gammaln(j + 1), -np.inf))

    up = np.flatnonzero(cdf < u)  # step up until P(X ≤ k) ≥ u
    while up.size:
        k[up] += 1
        cdf[up] += pmf(k[up], up)
        up = up[(cdf[up] < u[up]) & (cdf[up] < 1.0)]
    down = np.flatnonzero(k > 0)  # step down while P(X ≤ k − 1) ≥ u
    while down.size:
        below = cdf[down] - pmf(k[down], down)
        step = below >= u[down]
        down = down[step]
        k[down] -= 1
        cdf[down] = below[step]
        down = down[k[down] > 0]
    return k.astype(np.int64)


MAX_MEAN = 1e15
"""The largest mean a distribution may have: beyond any deal value, duration (2.7 trillion
years) or lead volume a forecast can mean, and far enough below float64's 1.8e308 that
totals of many draws stay finite."""

MAX_LOGNORMAL_SIGMA = 10.0
"""Lognormal sigma at most 10: the mean, median·exp(sigma²/2), is then already 5e21 times
the median (and overflows float64 near sigma 38)."""

MIN_WEIBULL_SHAPE = 0.05
"""Weibull shape at least 0.05: the mean, scale·Γ(1 + 1/shape), is then already 2.4e18
times the scale (and overflows float64 below shape ≈ 0.0058)."""

MIN_GAMMA_SHAPE = 0.001
"""Gamma shape at least 0.001: below it nearly every draw is below 1e-300 (0 in float64)
and the mean rests on draws too rare to simulate (sd = mean / √shape)."""


class _Dist(Strict):
    @model_validator(mode="after")
    def _finite_mean(self) -> _Dist:
        mean = self.expected_value()
        if not mean <= MAX_MEAN:  # also NaN
            what = "the value" if isinstance(self, Fixed) else f"the mean of this {self.dist}"  # type: ignore[attr-defined]
            raise PydanticCustomError(
                "mean_too_large",
                "{what} is {mean}; expected at most 1e15 (larger values mean nothing as a "
                "duration, deal value or volume, and totals of many draws would overflow)",
                {"what": what, "mean": _big(mean)},
            )
        return self

    def expected_value(self) -> float:
        """The mean of the distribution (days or currency, like its parameters)."""
        raise NotImplementedError

    def draw(self, keys: np.ndarray) -> np.ndarray:
        """One draw per key."""
        raise NotImplementedError

    def sf(self, x: np.ndarray | float) -> np.ndarray:
        """Survival function P(X > x)."""
        raise NotImplementedError

    def residual(self, keys: np.ndarray, age: np.ndarray) -> np.ndarray:
        """Draws of X − age given X > age (the time left after ``age`` already spent).

        Only called where ``sf(age) > 0``.
        """
        raise NotImplementedError

    def sample(self, rng: np.random.Generator | int | None, size: int) -> np.ndarray:
        """``size`` draws using an ordinary NumPy generator (SPEC 7: rng normalised)."""
        return self.draw(streams.keys_from_rng(np.random.default_rng(rng), size))

    def describe(self) -> str:
        """A short human-readable form, e.g. ``lognormal(median 9000, sigma 0.6)``."""
        fields = ", ".join(f"{k} {_num(v)}" for k, v in self.model_dump().items() if k != "dist")
        return f"{self.dist}({fields})"  # type: ignore[attr-defined]


def _big(x: float) -> str:
    """A mean as text: ``3.2e+21``, or ``too large for float64``."""
    return f"{x:.3g}" if math.isfinite(x) else "too large for float64 (it overflows)"


def _num(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_num(x) for x in v[:6]) + (", ..." if len(v) > 6 else "") + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


_NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Fixed(_Dist):
    """Always ``value``."""

    dist: Literal["fixed"] = "fixed"
    value: _NonNeg

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: Any) -> Any:
        return _fixed_from_number(data)

    def expected_value(self) -> float:
        return self.value

    def draw(self, keys):
        return np.full(np.shape(keys), self.value, dtype=np.float64)

    def sf(self, x):
        return (np.asarray(x, dtype=float) < self.value).astype(float)

    def residual(self, keys, age):
        return self.value - np.asarray(age, dtype=float)

    def describe(self) -> str:
        return _num(self.value)


class Exponential(_Dist):
    """Exponential with the given ``mean``."""

    dist: Literal["exponential"]
    mean: _Pos

    def expected_value(self) -> float:
        return self.mean

    def draw(self, keys):
        return -self.mean * np.log(_u(keys, 0))

    def sf(self, x):
        return np.exp(-np.maximum(np.asarray(x, dtype=float), 0.0) / self.mean)

    def residual(self, keys, age):
        return self.draw(keys)  # memoryless


class Gamma(_Dist):
    """Gamma with the given ``mean`` and ``shape`` (scale = mean / shape)."""

    dist: Literal["gamma"]
    mean: _Pos
    shape: Annotated[_Pos, Field(json_schema_extra={"minimum": MIN_GAMMA_SHAPE})]

    @field_validator("shape")
    @classmethod
    def _not_degenerate(cls, shape: float) -> float:
        if shape < MIN_GAMMA_SHAPE:
            raise PydanticCustomError(
                "shape",
                "expected a shape of at least {limit}: below it nearly every draw is 0 in "
                "float64 and the mean rests on draws too rare to simulate (sd = mean/√shape)",
                {"limit": f"{MIN_GAMMA_SHAPE:g}"},
            )
        return shape

    def expected_value(self) -> float:
        return self.mean

    def draw(self, keys):
        return standard_gamma(self.shape, keys) * (self.mean / self.shape)

    def sf(self, x):
        from scipy.special import gammaincc

        x = np.maximum(np.asarray(x, dtype=float), 0.0)
        return gammaincc(self.shape, x * self.shape / self.mean)

    def residual(self, keys, age):
        from scipy.special import gammainccinv

        age = np.asarray(age, dtype=float)
        tail = self.sf(age) * _u(keys, 0)
        return gammainccinv(self.shape, tail) * (self.mean / self.shape) - age


class Lognormal(_Dist):
    """Lognormal: ``median`` = exp(mu), ``sigma`` = sd of the log."""

    dist: Literal["lognormal"]
    median: _Pos
    sigma: Annotated[_NonNeg, Field(json_schema_extra={"maximum": MAX_LOGNORMAL_SIGMA})]

    @field_validator("sigma")
    @classmethod
    def _not_too_wide(cls, sigma: float) -> float:
        if sigma > MAX_LOGNORMAL_SIGMA:
            raise PydanticCustomError(
                "sigma",
                "expected a sigma (the sd of the log) of at most {limit}: the mean, "
                "median·exp(sigma²/2), is already 5e21 times the median at {limit} and too "
                "large for float64 from sigma 37",
                {"limit": f"{MAX_LOGNORMAL_SIGMA:g}"},
            )
        return sigma

    def expected_value(self) -> float:
        try:
            return self.median * math.exp(0.5 * self.sigma**2)
        except OverflowError:
            return math.inf

    def draw(self, keys):
        return self.median * np.exp(self.sigma * _normal(keys))

    def sf(self, x):
        from scipy.special import ndtr

        x = np.asarray(x, dtype=float)
        if self.sigma == 0:
            return (x < self.median).astype(float)
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - math.log(self.median)) / self.sigma
        return ndtr(-z)

    def residual(self, keys, age):
        from scipy.special import ndtri

        age = np.asarray(age, dtype=float)
        if self.sigma == 0:
            return self.median - age
        tail = self.sf(age) * _u(keys, 0)
        return self.median * np.exp(-self.sigma * ndtri(tail)) - age


class Weibull(_Dist):
    """Weibull with ``scale`` (days or currency) and ``shape``."""

    dist: Literal["weibull"]
    scale: _Pos
    shape: Annotated[_Pos, Field(json_schema_extra={"minimum": MIN_WEIBULL_SHAPE})]

    @field_validator("shape")
    @classmethod
    def _not_too_heavy(cls, shape: float) -> float:
        if shape < MIN_WEIBULL_SHAPE:
            raise PydanticCustomError(
                "shape",
                "expected a shape of at least {limit}: the mean, scale·Γ(1 + 1/shape), is "
                "already 2.4e18 times the scale at {limit} and too large for float64 below "
                "shape 0.0058",
                {"limit": f"{MIN_WEIBULL_SHAPE:g}"},
            )
        return shape

    def expected_value(self) -> float:
        try:
            return self.scale * math.gamma(1.0 + 1.0 / self.shape)
        except OverflowError:
            return math.inf

    def draw(self, keys):
        return self.scale * (-np.log(_u(keys, 0))) ** (1.0 / self.shape)

    def sf(self, x):
        x = np.maximum(np.asarray(x, dtype=float), 0.0)
        with np.errstate(over="ignore"):  # a large shape: (x/scale)^shape → inf, sf → 0
            return np.exp(-((x / self.scale) ** self.shape))

    def residual(self, keys, age):
        age = np.asarray(age, dtype=float)
        e = -np.log(_u(keys, 0))
        return self.scale * ((age / self.scale) ** self.shape + e) ** (1.0 / self.shape) - age


class Uniform(_Dist):
    """Uniform between ``low`` and ``high``."""

    dist: Literal["uniform"]
    low: _NonNeg
    high: _NonNeg

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        # On the distribution, not on `high`: a --set of either bound is then blamed.
        if self.high < self.low:
            raise PydanticCustomError(
                "uniform",
                "high ({high}) must be at least low ({low})",
                {"high": f"{self.high:g}", "low": f"{self.low:g}"},
            )
        return self

    def expected_value(self) -> float:
        return 0.5 * (self.low + self.high)

    def draw(self, keys):
        return self.low + (self.high - self.low) * _u(keys, 0)

    def sf(self, x):
        x = np.asarray(x, dtype=float)
        if self.high == self.low:
            return (x < self.low).astype(float)
        return np.clip((self.high - x) / (self.high - self.low), 0.0, 1.0)

    def residual(self, keys, age):
        age = np.asarray(age, dtype=float)
        lo = np.maximum(age, self.low)
        return lo + (self.high - lo) * _u(keys, 0) - age


class Empirical(_Dist):
    """Each of ``values`` equally likely (e.g. observed durations or deal sizes)."""

    dist: Literal["empirical"]
    values: Annotated[list[_NonNeg], Field(min_length=1)]

    @field_validator("values")
    @classmethod
    def _sort(cls, values: list[float]) -> list[float]:
        return sorted(values)  # the order carries no meaning; sorted values make sf a search

    def expected_value(self) -> float:
        with np.errstate(over="ignore"):  # inf: refused as too large
            return float(np.mean(self.values))

    @property
    def _sorted(self) -> np.ndarray:
        return np.asarray(self.values, dtype=float)

    def draw(self, keys):
        v = self._sorted
        i = np.minimum((_u(keys, 0) * v.size).astype(np.int64), v.size - 1)
        return v[i]

    def sf(self, x):
        v = self._sorted
        x = np.asarray(x, dtype=float)
        return (v.size - np.searchsorted(v, x, side="right")) / v.size

    def residual(self, keys, age):
        v = self._sorted
        age = np.asarray(age, dtype=float)
        first = np.searchsorted(v, age, side="right")  # values > age are v[first:]
        n_above = v.size - first
        i = first + np.minimum((_u(keys, 0) * n_above).astype(np.int64), n_above - 1)
        return v[i] - age


DIST_NAMES = ("fixed", "exponential", "gamma", "lognormal", "weibull", "uniform", "empirical")


def _tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        dist = value.get("dist")
        return dist if dist in DIST_NAMES else None
    if isinstance(value, _Dist):
        return value.dist  # type: ignore[attr-defined]
    return None


def _fixed_from_number(value: Any) -> Any:
    return {"dist": "fixed", "value": value} if isinstance(value, int | float) else value


Distribution = Annotated[
    Annotated[Fixed, Tag("fixed")]
    | Annotated[Fixed, Tag("number"), WithJsonSchema({"type": "number", "minimum": 0})]
    | Annotated[Exponential, Tag("exponential")]
    | Annotated[Gamma, Tag("gamma")]
    | Annotated[Lognormal, Tag("lognormal")]
    | Annotated[Weibull, Tag("weibull")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[Empirical, Tag("empirical")],
    Discriminator(
        _tag,
        custom_error_type="distribution",
        custom_error_message=(
            "expected a number or a distribution {dist: fixed|exponential|gamma|lognormal|"
            "weibull|uniform|empirical, ...}"
        ),
    ),
]
"""A distribution field: a bare number (fixed) or a mapping with a ``dist`` key."""


_ADAPTER: TypeAdapter = TypeAdapter(Distribution)


def as_distribution(value: Any) -> _Dist:
    """Parse a number or a mapping into a distribution (raises ``pydantic.ValidationError``)."""
    return _ADAPTER.validate_python(value)
