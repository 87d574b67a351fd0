"""Build the stand-in tunnel program (``autossh.c`` beside this file) with gcc.

``build(directory)`` compiles it to ``<directory>/autossh`` and returns the path: point
``TUNNELSITE_AUTOSSH`` at it and the worker runs stand-ins instead of autossh + ssh
(bench/scale.py --standin, tests/test_worker_scale.py). Statically linked where the C
library allows it, so a stand-in pair costs a few hundred KB of memory; dynamically otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "autossh.c"


class BuildError(RuntimeError):
    """gcc is missing or the source did not compile."""


def available() -> str | None:
    """None when the stand-in can be built here, else why not."""
    return None if shutil.which("gcc") else "gcc is not installed (apt-get install gcc libc6-dev)"


def build(directory: Path | str) -> Path:
    """Compile the stand-in into ``directory`` (created if missing) as ``autossh``; its path."""
    reason = available()
    if reason:
        raise BuildError(reason)
    target = Path(directory) / "autossh"  # the worker's scanner knows tunnels by this process name
    target.parent.mkdir(parents=True, exist_ok=True)
    base = ["gcc", "-Os", "-Wall", "-Werror", "-o", str(target), str(SOURCE)]
    errors = ""
    for extra in (["-static", "-s"], ["-s"]):  # static saves the dynamic loader's pages per process
        done = subprocess.run([*base, *extra], capture_output=True, text=True)
        if done.returncode == 0:
            return target
        errors = done.stderr
    raise BuildError(f"gcc could not build {SOURCE.name}:\n{errors}")


if __name__ == "__main__":
    import sys
    import tempfile

    print(build(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="standin-")))
