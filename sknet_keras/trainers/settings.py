"""How a config setting is declared and checked: `setting(...)` is a dataclass field whose
metadata carries its help, command-line name, allowed values and requirement; `coerce` and
`check` hold a value to it. The config (`configs`), the flags (`config_flags`) and every
error message are derived from these declarations, so a setting is written down once."""

import dataclasses
import math
import typing


class ConfigError(ValueError):
    """A setting that cannot run, named by its field (`optimizer.learning_rate`); the commands
    name the flag instead (`config_flags.describe`)."""

    def __init__(self, field, message, source=None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.source = source  # how the user gave it, where known (config_flags.describe)


def setting(default, help, *, flag=None, choices=None, check=None, evaluate=False):
    """A config field. `flag`: its short command-line name (default: the field's name);
    `choices`: the values allowed; `check`: (predicate, what it requires) for other values;
    `evaluate`: the evaluation command offers it too."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, flag=flag, choices=choices, check=check, evaluate=evaluate))


# Requirements, as (predicate, words).
def at_least(low):
    return (lambda v: v >= low), f">= {low}"


def above(low):
    return (lambda v: v > low), f"> {low}"


def within(low, high, closed_high=True):
    return ((lambda v: low <= v <= high) if closed_high else (lambda v: low <= v < high),
            f"in [{low}, {high}{']' if closed_high else ')'}")


def each_at_least(low):
    return (lambda v: all(x >= low for x in v)), f"each >= {low}"


def optional_of(kind):
    """(the type inside Optional[...] or `kind` itself, whether None is allowed)."""
    args = typing.get_args(kind)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def coerce(name, kind, value):
    """`value` as type `kind` (lists as tuples, integral floats as ints), or ConfigError
    naming the setting `name` and what it expects."""
    kind, optional = optional_of(kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "a value is required; got None")
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"a list of {element.__name__}s expected; got {value!r}")
        return tuple(_scalar(name, element, v) for v in value)
    return _scalar(name, kind, value)


def _scalar(name, kind, value):
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif kind in (int, float) and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, (int, float)) and math.isfinite(number):
                if kind is float:
                    return float(number)
                if float(number).is_integer():
                    return int(number)
        except (ValueError, OverflowError):
            pass
    elif kind is str and isinstance(value, str):
        return value
    words = {int: "an integer", float: "a finite number", bool: "true or false",
             str: "a string"}
    raise ConfigError(name, f"{words[kind]} expected; got {value!r}")


def check(name, field, kind, value):
    """The field's own requirement on `value` (a value of its type), as a ConfigError, or
    None where it holds."""
    meta = field.metadata
    if meta["choices"] is not None:
        allowed = meta["choices"] + ((None,) if optional_of(kind)[1] else ())
        if value not in allowed:
            return ConfigError(name, f"expected one of {', '.join(meta['choices'])}; "
                                     f"got {value!r}")
    elif meta["check"] is not None and value is not None:
        ok, requirement = meta["check"]
        if not ok(value):
            return ConfigError(name, f"must be {requirement}; got {shown(value)}")
    return None


def shown(value):
    """A setting's value as the command line writes it (lists comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value
