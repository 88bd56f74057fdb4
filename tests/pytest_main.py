"""Entry point of the Bazel py_test targets: run one test file with pytest."""

import os
import sys

import pytest

if __name__ == "__main__":
    # Bazel's runfiles tree is read-only and has no rootdir config: keep pytest's cache out.
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider",
                          "--rootdir", os.path.dirname(os.path.abspath(__file__)), *sys.argv[1:]]))
