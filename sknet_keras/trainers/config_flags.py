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
import sys
import typing

from absl import flags

from sknet_keras.trainers.configs import (FIELDS, RECIPES, SECTIONS, ConfigError,
                                          default_recipe, load_config_file, locate, recipe,
                                          short_flag)
from sknet_keras.trainers.settings import optional_of

DOTTED_PREFIX = "config."
# The dotted flags are registered under this module: `--help` lists the short ones and the
# command's own, `--helpfull` all.
_DOTTED_MODULE = __name__


def _define(flag_values, name, dotted, module_name, help_suffix=""):
    field, kind = FIELDS[dotted]
    help = f"{field.metadata['help']} [{dotted}]{help_suffix}"
    args = dict(flag_values=flag_values, module_name=module_name, allow_override=True)
    kind = optional_of(kind)[0]
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


def defining_module(name):
    """The module name absl files a command's flags under: for `python -m`, whose module is
    `__main__`, the script's path (what absl's --help lists as the main module)."""
    return sys.argv[0] if name == "__main__" else name


def define(flag_values, module_name, evaluation=False):
    """Define the config's flags in `flag_values` (`evaluation`: only the settings an
    evaluation uses). Safe to call again (the commands define them when they run)."""
    for dotted in FIELDS:
        if evaluation and not FIELDS[dotted][0].metadata["evaluate"]:
            continue
        _define(flag_values, short_flag(dotted), dotted, module_name)
        _define(flag_values, DOTTED_PREFIX + dotted, dotted, _DOTTED_MODULE,
                f" Same as --{short_flag(dotted)}.")
    args = dict(flag_values=flag_values, module_name=module_name, allow_override=True)
    if not evaluation:
        flags.DEFINE_enum("recipe", None, sorted(RECIPES), "Named recipe giving every default "
                          "(default: the dataset's: imagenet_senet for ImageNet, image folders "
                          "and other tfds datasets, cifar for CIFAR, digits for digits).", **args)
    flags.DEFINE_string("config_file", None, "A JSON experiment config (a run's config.json): "
                        "every setting it holds overrides the recipe.", **args)
    flags.DEFINE_string("params_override", None, "Settings by field name, over the recipe and "
                        "--config_file: JSON ('{\"optimizer\": {\"learning_rate\": 0.2}}') or "
                        "'optimizer.learning_rate=0.2,schedule.epochs=5'.", **args)


def parse_params_override(text):
    """{dotted field: value} from --params_override's JSON (nested sections, or dotted keys)
    or `section.field=value,...` text (values as JSON where they parse, else strings)."""
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
    # Split before each `key=`; commas inside a list value (crop_area=0.25,1) stay.
    for item in re.split(r",\s*(?=[A-Za-z_][\w.]*\s*=)", text.strip(" ,")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("params_override", f"expected section.field=value; got {item!r}")
        value = value.strip().rstrip(",").strip()
        try:
            value = json.loads(value)
        except ValueError:
            pass  # a bare string
        out[_field(key.strip())] = value
    return out


def _field(key):
    """A params_override key: "section.field" exactly (Model Garden's full path)."""
    if key in FIELDS:
        return key
    if key in SECTIONS:
        raise ConfigError("params_override", f"{key!r} is a section, not a setting (e.g. "
                                             f"{next(d for d in FIELDS if d.startswith(key))})")
    try:
        dotted = locate(key)
    except ConfigError:
        raise ConfigError("params_override", f"{key!r}: no such setting") from None
    raise ConfigError("params_override", f"{key!r}: no such setting; did you mean {dotted!r}?")


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        raise ConfigError("params_override", f"a JSON object expected; got {tree!r}")
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield _field(prefix + key), value


def given(flag_values):
    """{dotted field: (flag name as given, value)} for the config flags on the command line.
    A field set by both its short and its dotted flag is refused."""
    out = {}
    for dotted in FIELDS:
        names = [n for n in (short_flag(dotted), DOTTED_PREFIX + dotted)
                 if n in flag_values and flag_values[n].present]
        if len(names) > 1:
            raise ConfigError(dotted, f"given twice, as --{names[0]} and --{names[1]}: give "
                                      "one")
        if names:
            out[dotted] = (names[0], flag_values[names[0]].value)
    return out


def config_from_flags(flag_values, base=None):
    """(config, sources) from the parsed flags over `base` (default: the recipe the flags
    name, else the dataset's). `sources`: {dotted field: how the user gave it}, for
    `describe`. Not yet validated or resolved (`experiment.resolve` does both, once)."""
    on_command_line = given(flag_values)
    path = flag_values["config_file"].value
    if path and "recipe" in flag_values and flag_values["recipe"].present:
        raise ConfigError("recipe", "--config_file holds every setting (and its recipe's "
                                    "name): give one of them")
    from_file = load_config_file(path) if path else None
    overrides = parse_params_override(flag_values["params_override"].value)
    if base is None:
        dataset = on_command_line.get("data.dataset", (None, overrides.get(
            "data.dataset", from_file.data.dataset if from_file else "digits")))[1]
        name = flag_values["recipe"].value if "recipe" in flag_values else None
        base = recipe(name or default_recipe(dataset), dataset)
    config, sources = from_file or base, {}
    if from_file:
        sources.update({d: f"--config_file: {path}: {d}" for d in FIELDS
                        if from_file.get(d) != base.get(d)})
    for changes, source in (
            (overrides, lambda d: f"--params_override: {d}"),
            ({d: v for d, (_, v) in on_command_line.items()},
             lambda d: f"--{on_command_line[d][0]}")):
        for dotted, value in changes.items():
            try:
                config = config.override(**{dotted: value})
            except ConfigError as e:
                raise ConfigError(e.field, e.message, source(dotted)) from None
            sources[dotted] = source(dotted)
    return config, sources


def describe(error, sources):
    """A ConfigError in the words of the command line: the setting at fault as the user gave
    it (`sources`, from `config_from_flags`), other settings by the flag that sets them."""
    def flag(dotted):
        given_as = sources.get(dotted, "")
        return given_as if given_as.startswith("--") and ":" not in given_as else \
            "--" + short_flag(dotted)

    what, got = error.message, ""
    if "; got " in what:  # the value quoted stays as written
        what, got = what.split("; got ", 1)
        got = "; got " + got
    # Bare field names only: not inside quotes or a flag (--config.data.dataset).
    if error.field in FIELDS:  # (not in what a file or --params_override says of itself)
        what = re.sub(r"(?<![\w.'-])(model|data|optimizer|runtime|schedule)\.[a-z_0-9]+\b(?!')",
                      lambda m: flag(m.group(0)) if m.group(0) in FIELDS else m.group(0), what)
    head = error.source or sources.get(error.field) or (
        flag(error.field) if error.field in FIELDS else f"--{error.field}")
    return f"{head}: {what}{got}"


def check_command(make_config, check_config):
    """A command's --only_check_args: `make_config()` gives (config, flag names), then
    `check_config(config)`; a ConfigError becomes the one-line error naming the flag."""
    from sknet_keras.cli import UsageError

    flag_names = {}
    try:
        config, flag_names = make_config()
        check_config(config)
    except ConfigError as e:
        raise UsageError(describe(e, flag_names)) from None
