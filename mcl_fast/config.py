"""Config values checked against a schema: one way to merge, override and validate a config.

Pretraining (train.py: nested JSON sections, `key=value` overrides) and fine-tuning
(eval/finetune.py: a dataclass) both state what each value may be as a `Field` (kinds, range,
choices) and check it here; a dataclass's fields give their kinds through their annotations.
Pure Python (no torch), so any layer may use it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence


class ConfigError(ValueError):
    """A config that cannot run: the message names the source, the key and the problem."""


# kind -> (test, how a message names it); bool is not an int here (epochs=true is a typo)
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "null": (lambda v: v is None, "null"),
    "any": (lambda v: True, "any value"),  # checked by its owner (e.g. LoaderOptions' __post_init__)
}


@dataclass(frozen=True)
class Field:
    """What one config value may be: its kinds, and for numbers a range, for any a set of choices,
    for lists a length and each item's Field."""
    kinds: tuple
    low: float | None = None
    high: float | None = None
    open_low: bool = False     # low itself excluded
    open_high: bool = False    # high itself excluded
    choices: tuple = ()
    items: "Field | None" = None
    length: int | None = None  # lists: exactly this many items (0: at least one)

    def describe(self) -> str:
        """The expectation in words, e.g. 'an integer >= 1' or 'null or a number in (0, 1]'."""
        if self.choices:
            kinds = [_KINDS["null"][1]] if "null" in self.kinds else []
            return " or ".join(kinds + [f"one of {json.dumps(list(self.choices))}"])
        words = []
        for kind in self.kinds:
            text = _KINDS[kind][1]
            if kind in ("int", "number"):
                text += self._range()
            if kind == "list" and self.items is not None:
                count = "at least one item" if self.length == 0 else f"{self.length} items" if self.length else "items"
                text = f"a list of {count}, each {self.items.describe()}"
            words.append(text)
        return " or ".join(words)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f" {'>' if self.open_low else '>='} {self.low}"
        return ""

    def accepts(self, value) -> bool:
        kind = next((k for k in self.kinds if _KINDS[k][0](value)), None)
        if kind is None:
            return False
        if kind == "null":
            return True
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if kind in ("int", "number"):
            return self._in_range(value)
        if kind == "list" and self.items is not None:
            size_ok = len(value) > 0 if self.length == 0 else self.length is None or len(value) == self.length
            return size_ok and all(self.items.accepts(v) for v in value)
        return True

    def _in_range(self, v) -> bool:
        low_ok = self.low is None or (v > self.low if self.open_low else v >= self.low)
        high_ok = self.high is None or (v < self.high if self.open_high else v <= self.high)
        return low_ok and high_ok


def integer(low=None, *, null=False) -> Field:
    return Field(("int", "null") if null else ("int",), low=low)


def number(low=None, high=None, *, open_low=False, open_high=False, null=False) -> Field:
    return Field(("number", "null") if null else ("number",), low, high, open_low, open_high)


def one_of(*choices, null=False) -> Field:
    kinds = tuple(dict.fromkeys(_kind_of(c) for c in choices)) + (("null",) if null else ())
    return Field(kinds, choices=tuple(choices))


def _kind_of(value) -> str:
    return next(k for k in ("bool", "int", "number", "str") if _KINDS[k][0](value))


BOOL, TEXT, FREE_DICT = Field(("bool",)), Field(("str",)), Field(("dict",))

# A dataclass annotation's words -> the JSON kind that carries it (tuple and Sequence: a JSON list).
_ANNOTATION_KINDS = {"int": "int", "float": "number", "bool": "bool", "str": "str", "None": "null", "tuple": "list",
                     "list": "list", "Sequence": "list", "dict": "dict", "object": "any"}


def field_from_annotation(annotation) -> Field:
    """The Field of a dataclass field's annotation, e.g. "int | None" -> an integer or null.
    Unknown words (a class, Callable) and `object` accept any value: the dataclass checks those."""
    words = [w.strip().split("[")[0] for w in str(annotation).split("|")]
    kinds = [_ANNOTATION_KINDS.get(w, "any") for w in words]
    return Field(("any",) if "any" in kinds else tuple(dict.fromkeys(kinds)))


def dataclass_schema(cls, names: Sequence[str], refined: dict | None = None) -> dict[str, Field]:
    """name -> Field for `names` of dataclass `cls`: its annotation's kinds, or `refined[name]`
    where a range or choices say more."""
    annotations = {f.name: f.type for f in dataclasses.fields(cls)}
    refined = refined or {}
    return {name: refined.get(name) or field_from_annotation(annotations[name]) for name in names}


def dataclass_defaults(cls, names: Sequence[str]) -> dict:
    """name -> the default of each of `names` (fields with a plain default) of dataclass `cls`."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {name: copy.deepcopy(defaults[name]) for name in names}


def check_value(key: str, field: Field, value, where: str) -> None:
    """ConfigError "{where}: {key} must be ..., got ..." unless field accepts value."""
    if not field.accepts(value):
        shown = json.dumps(value) if _is_json(value) else repr(value)
        raise ConfigError(f"{where}: {key} must be {field.describe()}, got {shown} ({_kind_in_words(value)})")


def check_dataclass(obj, schema: dict[str, Field], where: str) -> None:
    """Every field of dataclass instance `obj` named in schema against its Field (ConfigError)."""
    for name, field in schema.items():
        check_value(name, field, getattr(obj, name), where)


def _kind_in_words(value) -> str:
    return next((words for test, words in _KINDS.values() if test(value)), type(value).__name__)


def _is_json(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


# ---- nested configs: {"section": {"key": value}} --------------------------------------------------
def flatten(config: dict, prefix: str = "") -> dict:
    """{"a.b": value} of a nested config (non-empty dicts flattened into, free ones too)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def value_at(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def merge(base: dict, update: dict, source: str, *, free: Sequence[str] = (),
          unknown: Callable[[str, str], ConfigError], where: str = "") -> dict:
    """update deep-merged over base; a key base lacks raises unknown(source, path). Dicts named in
    `free` (constructor kwargs) are replaced whole, any key accepted."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in out:
            raise unknown(source, path)
        if isinstance(out[key], dict) and key not in free:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path!r} must be an object, got {value!r}")
            out[key] = merge(out[key], value, source, free=free, unknown=unknown, where=f"{path}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str):
    """An override's value: JSON if it parses (1, true, null, [..]), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_override(item: str) -> tuple[str, object]:
    """("a.b", value) of "a.b=value"; ConfigError if it is not key=value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, text = item.split("=", 1)
    return key.strip(), parse_value(text)


def apply_overrides(config: dict, overrides: Sequence[str], *, free: Sequence[str] = (),
                    unknown: Callable[[str, str], ConfigError]) -> dict:
    """config with each "a.b=value" set; a key config lacks raises unknown(f"override {item!r}", key)."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, value = split_override(item)
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise unknown(f"override {item!r}", key)
            node = node[part]
        in_free = len(parts) > 1 and parts[-2] in free  # kwargs dicts take any key
        if parts[-1] not in node and not in_free:
            raise unknown(f"override {item!r}", key)
        node[parts[-1]] = value
    return config
