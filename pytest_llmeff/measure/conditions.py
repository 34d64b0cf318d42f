"""Machine conditions that make measurements less trustworthy, as warning lines (empty when all is well)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Optional

from pytest_llmeff.measure.meter import Meter


def cpu_governor_warning(root: str = "/sys/devices/system/cpu") -> Optional[str]:
    """A warning when a readable CPU frequency governor is not ``performance``; None when fine or unreadable."""
    governors = set()
    for path in glob.glob(f"{root}/cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            governors.add(Path(path).read_text().strip())
        except OSError:
            continue
    others = sorted(g for g in governors if g != "performance")
    if others:
        return (f"CPU frequency governor is {', '.join(others)}, not 'performance': clock changes add noise "
                "(sudo cpupower frequency-set -g performance)")
    return None


def gpu_sharing_warning(meter: Optional[Meter]) -> Optional[str]:
    """A warning when the meter sees other processes on the measured GPUs (their work lands in our energy);
    None without a meter, or when it sees none (``Meter.gpu_processes`` is ``[]`` for a meter of no GPU)."""
    if meter is None:
        return None
    try:
        others = meter.gpu_processes()
    except Exception as exc:  # noqa: BLE001 - any meter's driver query: its failure is the warning, not an error
        return (f"could not ask the driver which other processes use the measured GPU(s) "
                f"({type(exc).__name__}: {exc}): their load, if any, is in the timings and energy")
    if others:
        pids = ", ".join(str(p.get("pid")) for p in others[:5])
        return f"other processes use the measured GPU(s) (pids {pids}): timings and energy include their load"
    return None
