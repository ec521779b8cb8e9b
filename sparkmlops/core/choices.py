"""Parameters that take one of a few values: each is one table (value -> what it means), from which
the option's help text and the error for any other value are both built, so they cannot disagree."""

from __future__ import annotations

from sparkmlops.core.errors import UserInputError


def describe(choices: dict[str, str]) -> str:
    """``rf (random forest), gbt (...) or xgboost (...)``."""
    items = [f"{value} ({meaning})" if meaning else value for value, meaning in choices.items()]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def check(name: str, value: str, choices: dict[str, str]) -> str:
    """``value`` if it is one of ``choices``, else one line naming every choice."""
    if value not in choices:
        raise UserInputError(f"unknown {name} '{value}': use {describe(choices)}.")
    return value
