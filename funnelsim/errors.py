"""Errors about the user's input. The CLI prints them as they are and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a field path or a CSV row) and what."""

    where: str
    message: str
    about: tuple[str, ...] = ()
    """Dotted paths of the fields the problem is about, when not (only) ``where``: which
    ``--set`` made it is told from them."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class InputError(Exception):
    """Bad input: a scenario, a data file or a command-line value.

    ``source`` names the file (or option) and ``problems`` lists what is wrong, each with the
    field path or row and the value found and expected.
    """

    def __init__(self, source: str, problems: Iterable[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.source = source
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self, limit: int = 12) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        if len(lines) == 1:
            return f"{self.source}: {lines[0]}"
        return f"{self.source}: {len(self.problems)} problems\n" + "\n".join(
            f"  - {line}" for line in lines
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else the empty string.

    Close means similar as difflib sees it (a typo: ``nxt`` for ``next``) or, failing that,
    the one choice that begins with the word or that the word begins with, ignoring case
    (a shortening: ``days`` for ``days_in_stage``; at least 3 letters).
    """
    word, choices = str(word), [str(c) for c in choices]
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not match and len(word) >= 3:
        low = word.lower()
        match = [c for c in choices if c.lower().startswith(low) or low.startswith(c.lower())]
        match = match if len(match) == 1 and len(match[0]) >= 3 else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def path_str(loc: Iterable[object]) -> str:
    """A field path as users read it: ``stages -> proposal -> next``."""
    return " -> ".join(str(part) for part in loc)


def read_text(path, what: str, field: str = "") -> str:
    """The text of an input file, or an InputError naming it: ``what`` says which file it
    is (e.g. "pipeline file") and ``field`` where the scenario names it."""
    from pathlib import Path

    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(source, f"{what} not found" + (f" ({field})" if field else "")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read the {what}: {exc}") from None
