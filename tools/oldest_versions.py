"""Print the oldest supported version of each core dependency, as pip requirements.

The lower bound of every dependency in pyproject.toml's `[project] dependencies`, pinned
(`tensorflow>=2.16.2,<3` → `tensorflow==2.16.2`): CI installs these into a second environment
and runs the version-sensitive tests there (.ci/run).
"""

import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def oldest(requirements):
    pins = []
    for requirement in requirements:
        found = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        name, spec = found.group(1), found.group(2)
        lower = re.search(r">=\s*([0-9][^,\s]*)", spec) or re.search(r"==\s*([0-9][^,\s*]*)", spec)
        if not lower:
            sys.exit(f"{requirement!r} has no lower bound")
        pins.append(f"{name}=={lower.group(1)}")
    return pins


if __name__ == "__main__":
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        print(" ".join(oldest(tomllib.load(f)["project"]["dependencies"])))
