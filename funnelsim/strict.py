"""The base of every scenario section: frozen, strictly typed, unknown keys answered with a
suggestion."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from funnelsim.errors import did_you_mean


class Strict(BaseModel):
    """A section of a scenario file.

    Strict types: YAML's ``yes``/``true`` is not the number 1 and a number is not a date.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [f.alias or name for name, f in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}; expected one of: {allowed}",
                        {
                            "key": str(key),
                            "hint": did_you_mean(str(key), allowed),
                            "allowed": ", ".join(allowed),
                        },
                    )
        return data
