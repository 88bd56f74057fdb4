"""Shared command-line behaviour of the `python -m sknet_keras...` commands.

- Errors in what the user asked for are one line on stderr (plus a hint to `--helpfull`)
  and exit status 2, not absl's usage dump or a traceback.
- The training and evaluation commands (`sknet_keras.trainers.train` / `.evaluate`,
  `sknet-train`) run TensorFlow's oneDNN CPU kernels where the user has not set
  `TF_ENABLE_ONEDNN_OPTS`. TensorFlow turns them on itself only on AVX-512 CPUs; limited to
  AVX2 they trained SKNet-50 (224²) 1.1× faster than the Eigen kernels (with the layers'
  direct oneDNN calls), Keras' ResNet50 7× (32²); SKNet-26 at 32² is as fast on either
  (docs/performance.md, 2026-12-06). The commands train and evaluate in
  batches, where oneDNN's per-call cost (at batch 1) does not matter.
  The variable only acts before TensorFlow is imported, which is why the commands choose
  and the library cannot. The other commands leave the kernels as TensorFlow picks.
- TensorFlow's C++ start-up chatter (oneDNN notices, the CPU-only "failed call to cuInit")
  is hidden unless the user set TF_CPP_MIN_LOG_LEVEL. Import this module before TensorFlow.
"""

import errno
import os
import sys
import tempfile


def _quiet_tensorflow():
    """Import TensorFlow with its C++ start-up messages hidden (they are printed before its
    log level applies), unless the user chose a TF_CPP_MIN_LOG_LEVEL."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            # Keras first: with KERAS_BACKEND=torch it loads PyTorch before TensorFlow,
            # which a CUDA build of PyTorch needs (the other order crashes in TF 2.21).
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_BATCH_COMMANDS = ("sknet_keras.trainers.train", "sknet_keras.trainers.evaluate", "sknet-train")


def _command():
    """The module run by `python -m`, or the console script's name."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    return os.path.basename(sys.argv[0])


def _choose_cpu_kernels():
    if "tensorflow" in sys.modules or "TF_ENABLE_ONEDNN_OPTS" in os.environ:
        return
    if _command() in _BATCH_COMMANDS:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"


_choose_cpu_kernels()
_quiet_tensorflow()

from absl import app, flags  # noqa: E402

from sknet_keras.extras import MissingExtraError  # noqa: E402


class UsageError(ValueError):
    """A request that cannot be carried out, in words the user can act on."""


# What a user can cause by the flags or files they give; anything else is a bug and keeps
# its traceback.
USER_ERRORS = (app.UsageError, ValueError, FileNotFoundError, FloatingPointError,
               MissingExtraError)


def fail(message, program=None):
    program = program or os.path.basename(sys.argv[0]).removesuffix(".py")
    first, *rest = str(message).strip().splitlines() or [""]
    sys.stderr.write(f"{program}: error: {first}\n")
    for line in rest:
        sys.stderr.write(f"  {line.strip()}\n")
    sys.stderr.write("(run with --helpfull for the flags)\n")
    sys.stderr.flush()
    sys.exit(2)


def _parse_flags(program):
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # an unknown flag, a bad value: one line, status 2
            fail(e, program)

    return parse


def _help_from(module):
    """Make `--help` describe `module` when it runs as a console script (`sknet-train`),
    where absl would describe the script's wrapper (no docstring, no flags)."""
    main = sys.modules.get("__main__")
    if module is None or main is None or main is module:
        return
    if not getattr(main, "__doc__", None):
        main.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main, program=None):
    """`absl.app.run(main)` with one-line errors for user errors."""
    _help_from(sys.modules.get(main.__module__))

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}", program)
        try:
            return main(argv)
        except USER_ERRORS as e:
            fail(e, program)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            fail(e.strerror if e.strerror and e.strerror.startswith("the disk") else e, program)

    app.run(guarded, flags_parser=_parse_flags(program))
