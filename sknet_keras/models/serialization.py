"""A family config as plain JSON data and back, for formats that store a network's
architecture by value (keras-hub's `config.json`) rather than by registry name."""

import dataclasses
import typing


def config_to_dict(config):
    """Every field of a family config (nested configs as dicts), JSON-ready."""
    return dataclasses.asdict(config)


def _coerce(kind, value, where):
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        kinds = [a for a in args if a is not type(None)]
        return _coerce(kinds[0], value, where) if len(kinds) == 1 else value
    if dataclasses.is_dataclass(kind):
        return value if isinstance(value, kind) else config_from_dict(kind, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_coerce(a, v, f"{where}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value)))
    return value


def config_from_dict(config_class, data, where=None):
    """`config_class(**data)` with JSON's lists made tuples and nested dicts made configs
    again (frozen dataclasses hash and compare as the registry's); an unknown key is
    refused by name."""
    where = where or config_class.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a dict of fields, got {data!r}")
    hints = typing.get_type_hints(config_class)
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; its fields are {names}")
    return config_class(**{k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()})
