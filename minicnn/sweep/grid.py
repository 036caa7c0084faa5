"""`--set FIELD=v1,v2 --set FIELD=...`: a grid over recipe fields, one dict of overrides per trial.

Values are read with the type of the field's default in `Recipe` (int, float, bool, str; tuple
fields as colon-separated numbers, `betas=0.9:0.999`, and `none` for an empty tuple). The grid is
the product of the lists, in the order given: `--set batch=32,50 --set lr=1e-3,3e-4` is
(32, 1e-3), (32, 3e-4), (50, 1e-3), (50, 3e-4).
"""
from __future__ import annotations

import dataclasses
import itertools
import re

from minicnn.models import Recipe
from minicnn.train.errors import TrainError

ALIASES = {"batch": "batch_size"}           # train's flag names for recipe fields
RUN_FIELDS = ("seed",)                      # not part of the recipe, but what a sweep over seeds needs
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe)}


def _field_name(name: str) -> str:
    field = ALIASES.get(name, name)
    if field not in DEFAULTS and field not in RUN_FIELDS:
        raise TrainError(f"--set {name}: not a recipe field; fields are: "
                         f"{', '.join(sorted([*DEFAULTS, *RUN_FIELDS]))}")
    return field


def _number(text: str, kind, where: str):
    try:
        return kind(text)
    except ValueError:
        raise TrainError(f"{where}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None


def parse_value(field: str, text: str):
    """One value of `field` from its text, typed like the field's default."""
    where = f"--set {field}"
    default = DEFAULTS.get(field, 0)
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise TrainError(f"{where}: {text!r} is not true or false")
        return text.lower() in ("true", "1")
    if isinstance(default, tuple):
        if text.lower() == "none":
            return ()
        kind = type(default[0]) if default else int
        return tuple(_number(part, kind, where) for part in text.split(":"))
    if isinstance(default, (int, float)):
        return _number(text, type(default), where)
    return text


def parse_grid(assignments: list[str]) -> list[dict]:
    """['batch=32,50', 'lr=1e-3,3e-4'] -> [{'batch_size': 32, 'lr': 0.001}, ...] (product, in order).

    No assignment at all is one trial with no overrides; a field with no values is an error.
    """
    lists = {}
    for assignment in assignments:
        name, sep, values = assignment.partition("=")
        if not sep or not name.strip():
            raise TrainError(f"--set {assignment!r}: expected FIELD=v1,v2,... (e.g. --set lr=1e-3,3e-4)")
        field = _field_name(name.strip())
        if field in lists:
            raise TrainError(f"--set {field} is given twice; list all its values in one --set")
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if not texts:
            raise TrainError(f"empty grid: --set {name.strip()}= lists no values")
        parsed = [parse_value(field, text) for text in texts]
        repeated = [t for t, v in zip(texts, parsed) if parsed.count(v) > 1]
        if repeated:
            raise TrainError(f"--set {field} lists one value twice ({' and '.join(repeated[:2])})")
        lists[field] = parsed
    return [dict(zip(lists, values)) for values in itertools.product(*lists.values())]


def value_text(value) -> str:
    if isinstance(value, tuple):
        return ":".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def trial_name(arch: str, overrides: dict) -> str:
    """A folder name that says what the trial varies: cnn4-batch_size32-lr0.001."""
    parts = [arch] + [f"{field}{value_text(value)}" for field, value in overrides.items()]
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))
