"""Shared command-line behaviour of the `python -m sknet_keras...` commands.

- Errors in what the user asked for are one line on stderr (plus a hint to `--helpfull`)
  and exit status 2, not absl's usage dump or a traceback.
- The commands leave TensorFlow's CPU kernels as TensorFlow picks them (`TF_ENABLE_ONEDNN_OPTS`
  to choose): with the layers' direct oneDNN calls and the caching CPU allocator, the Eigen
  path trains the package's models as fast as oneDNN's (docs/performance.md).
- TensorFlow's C++ start-up chatter (oneDNN notices, the CPU-only "failed call to cuInit")
  is hidden unless the user set TF_CPP_MIN_LOG_LEVEL. Import this module before TensorFlow.
- A command owns its process, so it chooses TensorFlow's caching CPU allocator where the
  Eigen kernels run (`sknet_keras.cpu_allocator`), which importing the library never does.
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


_quiet_tensorflow()

from absl import app, flags  # noqa: E402

from sknet_keras import cpu_allocator  # noqa: E402

cpu_allocator.use_caching_allocator()

from sknet_keras.extras import MissingExtraError  # noqa: E402
from sknet_keras.file_lock import LockedError  # noqa: E402


class UsageError(ValueError):
    """A request that cannot be carried out, in words the user can act on."""


# What a user can cause by the flags or files they give; anything else is a bug and keeps
# its traceback.
USER_ERRORS = (app.UsageError, ValueError, FileNotFoundError, FloatingPointError,
               MissingExtraError, LockedError)


def fail(message, program=None):
    program = program or os.path.basename(sys.argv[0]).removesuffix(".py")
    first, *rest = str(message).strip().splitlines() or [""]
    sys.stderr.write(f"{program}: error: {first}\n")
    for line in rest:
        sys.stderr.write(f"  {line.strip()}\n")
    sys.stderr.write("(run with --helpfull for the flags)\n")
    sys.stderr.flush()
    sys.exit(2)


_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def _parse_flags(program, check=None):
    def parse(argv):
        try:
            argv = flags.FLAGS(argv)
        except flags.Error as e:  # an unknown flag, a bad value: one line, status 2
            fail(e, program)
        except SystemExit as e:  # absl exits with 1 after the help it was asked for
            if e.code == 1 and any(a.split("=")[0] in _HELP for a in argv[1:]):
                sys.exit(0)
            raise
        # absl's --only_check_args: exit after parsing, and after the command's own checks.
        # (Exiting here, not in absl: absl skips it when app.run ran before in the process.)
        if flags.FLAGS["only_check_args"].value:
            if len(argv) > 1:
                fail(f"unexpected arguments: {' '.join(argv[1:])}", program)
            try:
                if check is not None:
                    check(flags.FLAGS)
            except USER_ERRORS as e:
                fail(e, program)
            sys.exit(0)
        return argv

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


def run(main, program=None, check=None):
    """`absl.app.run(main)` with one-line errors for user errors; `check(flags)`, where
    given, is what `--only_check_args` runs before absl exits."""
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

    app.run(guarded, flags_parser=_parse_flags(program, check))
