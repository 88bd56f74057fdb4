"""Several invocations of one command in one child process: one TensorFlow start-up instead
of one per case. (absl's flags are process-global, so the cases cannot run in pytest's own
process, where the trainer's and the evaluator's flags would collide.)"""

import json
import subprocess
import sys

_CHILD = """
import contextlib, importlib, io, json, sys
from absl import flags
command = importlib.import_module(sys.argv[1])
out = []
for argv in json.loads(sys.argv[2]):
    flags.FLAGS.unparse_flags()
    sys.argv = [sys.argv[1]] + argv
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            command.run()
        except SystemExit as e:
            code = e.code or 0
    out.append([code, stdout.getvalue(), stderr.getvalue()])
print("CASES" + json.dumps(out))
"""


def run_cases(module, argvs, env, timeout=600):
    """[(exit status, stdout, stderr)] of `python -m module` run with each argv in turn."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, module, json.dumps(argvs)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("CASES")][-1]
    return [tuple(case) for case in json.loads(line[len("CASES"):])]


def run_in_process(module, argv, capsys):
    """(exit status, stdout, stderr) of `python -m module ARGV` run in this process: for the
    trainer and the evaluator, which define their absl flags when they run (so both, and
    any other command, can run in one process)."""
    import importlib

    from absl import flags

    command = importlib.import_module(module)
    flags.FLAGS.unparse_flags()
    capsys.readouterr()
    saved, sys.argv = sys.argv, [module] + list(argv)
    code = 0
    try:
        command.run()
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = saved
        flags.FLAGS.unparse_flags()
    out, err = capsys.readouterr()
    return code, out, err
