"""`python -m sknet_keras.trainers.train`: train any registry model.

Default (no flags): SKNet-26 on scikit-learn's bundled 8×8 digits upsampled to 32×32 — no
download, a few minutes on 2 CPU cores, prints validation accuracy. The run's settings come
from a named recipe (by default the dataset's), overridden by --config_file,
--params_override and the single-setting flags (each setting has a short flag,
`--learning_rate`, and a dotted one, `--config.optimizer.learning_rate`; `--helpfull` lists
both), and are written to `--model_dir/config.json`. Re-running the same command resumes the
run, or, once it is complete, says so and changes nothing. See the README for ImageNet /
CIFAR on one GPU, eight GPUs and several machines.
"""

import os
import shutil
import sys

from sknet_keras import cli
from absl import flags, logging  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.trainers import config_flags
from sknet_keras.trainers.configs import DEFAULT_EXPORTS, EXPORT_FILES, ConfigError, read_config

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """The command's flags: the config's (derived from its fields) and the run's own."""
    module = config_flags.defining_module(__name__)
    config_flags.define(flag_values, module)
    args = dict(flag_values=flag_values, module_name=module, allow_override=True)
    flags.DEFINE_string("model_dir", "runs/default", "Checkpoints, TensorBoard logs, exports, "
                        "config.json and result.json.", **args)
    flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resume if possible, then "
                      "evaluate), or eval: evaluate the newest checkpoint of --model_dir "
                      "again, writing nothing.", **args)
    flags.DEFINE_bool("resume", True, "Resume from the latest checkpoint in --model_dir.",
                      **args)
    flags.DEFINE_list("export", list(DEFAULT_EXPORTS), "What to write at the end, any of: "
                      + ", ".join(f"{k} ({v})" for k, v in EXPORT_FILES.items())
                      + "; 'none' (or false) for nothing. Each is recorded (size, SHA-256) in "
                      "result.json and checked when the command is run again.", **args)


def export_formats(values):
    """--export's list as EXPORT_FILES names (True: the defaults; 'none' / False: none)."""
    if values is True:
        return DEFAULT_EXPORTS
    if values in (False, None):
        return ()
    values = [v.strip().lower() for v in ([values] if isinstance(values, str) else values)]
    if values in (["none"], ["false"], ["0"], []):
        return ()
    if values in (["true"], ["1"]):
        return DEFAULT_EXPORTS
    unknown = [v for v in values if v not in EXPORT_FILES]
    if unknown:
        raise cli.UsageError(f"--export: unknown {', '.join(map(repr, unknown))}; choose from "
                             f"{', '.join(EXPORT_FILES)}, or none")
    return tuple(dict.fromkeys(values))


def _config(f):
    """(config, flag names) of the run the flags ask for; an evaluation of a run (--mode=eval)
    starts from the run's own settings."""
    run = read_config(f.model_dir) if f.mode == "eval" and os.path.isdir(f.model_dir) else None
    return config_flags.config_from_flags(f, base=run)


def check(flag_values=FLAGS):
    """--only_check_args: the checks of the flags and the config a run makes before it starts
    (not those against a run already in --model_dir), with nothing written."""
    from sknet_keras.trainers.experiment import check_config

    export_formats(flag_values.export)
    config_flags.check_command(lambda: _config(flag_values), check_config)


def main(argv, flag_values=FLAGS):
    del argv
    from sknet_keras.trainers.checkpoints import latest_checkpoint
    from sknet_keras.trainers.experiment import run_experiment
    from sknet_keras.trainers.preemption import Preempted

    f = flag_values
    formats = export_formats(f.export)
    model_dir = f.model_dir
    created = not os.path.exists(model_dir)
    flag_names = {}
    try:
        config, flag_names = _config(f)
        run_experiment(config, f.mode, model_dir, resume=f.resume, exports=formats,
                       log=_print)
    except Preempted as e:  # not an error: the run's progress is saved
        sys.stdout.flush()
        print(e, file=sys.stderr, flush=True)
        sys.exit(e.status)
    except BaseException as e:
        # A run that fails before its first checkpoint leaves nothing behind.
        if created and os.path.isdir(model_dir) and not latest_checkpoint(model_dir):
            shutil.rmtree(model_dir, ignore_errors=True)
        if isinstance(e, ConfigError):
            raise cli.UsageError(config_flags.describe(e, flag_names)) from None
        raise


def _print(*args):
    print(*args, flush=True)


def run():
    logging.set_verbosity(logging.WARNING)
    define_flags()
    cli.run(main, "sknet_keras.trainers.train", check=check)


if __name__ == "__main__":
    run()
