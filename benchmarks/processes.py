"""Peak memory of a fresh process: what the memory benchmarks (``client``, ``targets``) measure each run with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["run_measured"]


def run_measured(cmd: list[str], cwd: Path, what: str) -> tuple[str, float]:
    """(stdout, peak RSS in MiB) of ``cmd`` run to the end in a fresh process, read with ``os.wait4`` (the child's
    own peak, not this process's). A failing command raises RuntimeError naming ``what`` and its output's tail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().decode()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{output[-2000:]}")
    return output, usage.ru_maxrss / 1024  # Linux reports KiB
