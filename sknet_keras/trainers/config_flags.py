"""The commands' flags, derived from the config dataclasses (no flag is written by hand).

Every config field gets two flags: its short name (`--learning_rate`, or the field's `flag`
metadata: `--model`, `--lr_schedule`, `--mixed_precision`) and its dotted name
(`--config.optimizer.learning_rate`, as ml_collections' config flags spell it). Besides them,
TF Model Garden's `--config_file` (a JSON config, e.g. a run's config.json) and
`--params_override` (JSON, or `section.field=value,...`). Precedence, lowest first: the
recipe, --config_file, --params_override, then the single-field flags.

Errors keep the user's spelling: a field set by `--config.schedule.batch_size` is named so,
one set by `--batch_size` as that, one from a file or the recipe by its field name.
"""

import json
import re
import typing

from absl import flags

from sknet_keras.trainers.configs import (FIELDS, RECIPES, ConfigError, default_recipe, locate,
                                          load_config_file, recipe, short_flag)

DOTTED_PREFIX = "config."
# The dotted flags are registered under this module: `--help` lists the short ones and the
# command's own, `--helpfull` all.
_DOTTED_MODULE = __name__


def _define(flag_values, name, dotted, module_name, help_suffix=""):
    field, kind = FIELDS[dotted]
    help = f"{field.metadata['help']} [{dotted}]{help_suffix}"
    args = dict(flag_values=flag_values, module_name=module_name, allow_override=True)
    if type(None) in typing.get_args(kind):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if field.metadata["choices"]:
        flags.DEFINE_enum(name, None, list(field.metadata["choices"]), help, **args)
    elif kind is bool:
        flags.DEFINE_bool(name, None, help, **args)
    elif typing.get_origin(kind) is tuple:  # checked and converted by the config (coerce)
        flags.DEFINE_list(name, None, help, **args)
    else:
        define = {int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(kind,
                                                                           flags.DEFINE_string)
        define(name, None, help, **args)


def define(flag_values, module_name, evaluation=False):
    """Define the config's flags in `flag_values` (`evaluation`: only the settings an
    evaluation uses). Safe to call again (the commands define them when they run)."""
    for dotted in FIELDS:
        if evaluation and not FIELDS[dotted][0].metadata["evaluate"]:
            continue
        _define(flag_values, short_flag(dotted), dotted, module_name)
        _define(flag_values, DOTTED_PREFIX + dotted, dotted, _DOTTED_MODULE,
                f" Same as --{short_flag(dotted)}.")
    if not evaluation:
        flags.DEFINE_enum("recipe", None, sorted(RECIPES),
            "Named recipe giving every default (default: the dataset's: imagenet_senet for "
            "ImageNet, image folders and other tfds datasets, cifar for CIFAR, digits for "
            "digits).", flag_values=flag_values, module_name=module_name, allow_override=True)
    flags.DEFINE_string("config_file", None, "A JSON experiment config (a run's "
                        "config.json): every setting it holds overrides the recipe.",
                        flag_values=flag_values, module_name=module_name, allow_override=True)
    flags.DEFINE_string("params_override", None, "Settings by field name, over the recipe and "
                        "--config_file: JSON ('{\"optimizer\": {\"learning_rate\": 0.2}}') or "
                        "'optimizer.learning_rate=0.2,schedule.epochs=5'.",
                        flag_values=flag_values, module_name=module_name, allow_override=True)


def parse_params_override(text):
    """{dotted field: value} from --params_override's JSON or `a.b=v,c.d=w` text."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            tree = json.loads(text)
        except ValueError as e:
            raise ConfigError("params_override", f"not valid JSON: {e}") from None
        return dict(_flatten(tree))
    out = {}
    for item in re.split(r",(?=[\w.]+=)", text):  # commas inside a list value stay
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("params_override", f"expected field=value; got {item!r}")
        try:
            value = json.loads(value)
        except ValueError:
            pass  # a bare string
        out[_field(key.strip())] = value
    return out


def _field(key):
    try:
        return locate(key)
    except ConfigError as e:
        raise ConfigError("params_override", f"{key}: {e.message}") from None


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield _field(prefix + key), value


def given(flag_values):
    """{dotted field: (flag name as given, value)} for the config flags on the command line;
    a field given both ways takes the dotted flag's value."""
    out = {}
    for dotted in FIELDS:
        for name in (short_flag(dotted), DOTTED_PREFIX + dotted):
            if name in flag_values and flag_values[name].present:
                out[dotted] = (name, flag_values[name].value)
    return out


def config_from_flags(flag_values, base=None):
    """(config, {dotted field: flag name}) from the parsed flags over `base` (default: the
    recipe the flags name, else the dataset's). Not yet validated or resolved
    (`experiment.resolve` does both, once)."""
    on_command_line = given(flag_values)
    from_file = (load_config_file(flag_values["config_file"].value).to_dict()
                 if flag_values["config_file"].value else None)
    overrides = parse_params_override(flag_values["params_override"].value)
    if base is None:
        dataset = on_command_line.get("data.dataset", (None, overrides.get(
            "data.dataset", (from_file or {}).get("data", {}).get("dataset", "digits"))))[1]
        name = flag_values["recipe"].value if "recipe" in flag_values else None
        base = recipe(name or default_recipe(dataset), dataset)
    config = base
    if from_file:
        config = config.override(**{d: from_file[d.split(".")[0]][d.split(".")[1]]
                                    for d in FIELDS}, recipe=from_file["recipe"])
    config = config.override(**overrides)
    config = config.override(**{d: value for d, (_, value) in on_command_line.items()})
    return config, {d: name for d, (name, _) in on_command_line.items()}


def describe(error, flag_names):
    """A ConfigError in the words of the command line: each field named by the flag that set
    it (`flag_names`), else by its short flag."""
    def spelled(dotted):
        return "--" + flag_names.get(dotted, short_flag(dotted))

    message = re.sub(r"\b(model|data|optimizer|runtime|schedule)\.[a-z_0-9]+\b",
                     lambda m: spelled(m.group(0)) if m.group(0) in FIELDS else m.group(0),
                     error.message)
    field = spelled(error.field) if error.field in FIELDS else f"--{error.field}"
    return f"{field}: {message}"
