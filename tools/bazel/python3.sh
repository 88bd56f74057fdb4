#!/bin/sh
# The Python that Bazel runs: $SKNET_PYTHON if set (e.g. the project's .venv), else python3.
exec "${SKNET_PYTHON:-python3}" "$@"
