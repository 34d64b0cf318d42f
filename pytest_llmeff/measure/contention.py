"""Did other processes compete for the CPU during a timed round? Read from ``/proc`` (Linux), no psutil.

Per round (``ContentionProbe.begin()`` before it, ``.end(token, round_index)`` after it):

- ``other_cpu_s``: CPU seconds the rest of the machine worked during the round = the machine's busy time from the
  first line of ``/proc/stat`` (user + nice + system + irq + softirq, in clock ticks, summed over all cores)
  minus this process's own CPU time (``resource.getrusage(RUSAGE_SELF)``: user + system of all its threads).
  Children of this process count as "other" (they compete for the same cores). ``/proc/stat`` counts in ticks
  (usually 10 ms) per core, so the figure is accurate to a few ticks; small negative values are clamped to 0.
- ``steal_s``: CPU seconds the hypervisor gave to other guests while this VM wanted to run (``steal`` column of
  ``/proc/stat``), summed over all cores.
- ``load_avg_1m``: ``os.getloadavg()[0]`` at the round's end (a 1-minute moving average that includes this
  process itself, so context rather than a verdict).
- ``competed``: ``other_cpu_s`` or ``steal_s`` above the threshold ``max(OTHER_CPU_FRACTION x wall time of the
  round, MIN_CPU_S)``, i.e. the rest of the machine kept more than 10% of one core busy during the round (the
  floor keeps a few clock ticks of kernel housekeeping in a short round from counting as competition).

Where ``/proc/stat`` cannot be read (macOS, Windows, a sandbox) every field but ``load_avg_1m`` is None (and the
load too where ``os.getloadavg`` is missing) and ``competed`` is False: nothing is invented.

This module imports only the standard library and ``results`` (pydantic) lazily, in ``end``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

OTHER_CPU_FRACTION = 0.10  #: share of one core's time over the round's wall time above which a round competed
MIN_CPU_S = 0.03  #: seconds of other CPU (or steal) a round must exceed whatever its length (3 ticks at 100 Hz)
PROC_STAT = "/proc/stat"

try:
    _TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")  # seconds per /proc/stat tick (USER_HZ)
except (AttributeError, ValueError, OSError):
    _TICK_S = 0.01


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative CPU seconds of the whole machine since boot (all cores summed), from ``/proc/stat``.

    busy_s: user + nice + system + irq + softirq (guest time is already inside user); steal_s: the steal column
    (0 where the kernel does not report it)."""

    busy_s: float
    steal_s: float


def read_machine_cpu(path: str = PROC_STAT) -> Optional[MachineCpu]:
    """The machine's cumulative busy and steal CPU seconds, or None where ``path`` cannot be read or parsed."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if len(first) < 5 or first[0] != b"cpu":
        return None
    try:
        ticks = [int(x) for x in first[1:]]
    except ValueError:
        return None
    ticks += [0] * (8 - len(ticks))  # user nice system idle iowait irq softirq steal
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return MachineCpu(busy_s=(user + nice + system + irq + softirq) * _TICK_S, steal_s=steal * _TICK_S)


def own_cpu_s() -> float:
    """CPU seconds (user + system) this process has used, all its threads, not its children."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    except (ImportError, OSError):
        times = os.times()
        return times.user + times.system


def _load_avg_1m() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class ContentionToken:
    """What ``ContentionProbe.begin`` read: wall clock (``time.perf_counter``, s), the machine's CPU (None where
    ``/proc/stat`` is unreadable) and this process's CPU seconds."""

    wall_s: float
    machine: Optional[MachineCpu]
    own_cpu_s: float


def threshold_s(wall_s: float) -> float:
    """Seconds of other CPU (or steal) above which a round of ``wall_s`` wall seconds competed."""
    return max(OTHER_CPU_FRACTION * max(wall_s, 0.0), MIN_CPU_S)


class ContentionProbe:
    """Cheap to create; ``begin()`` / ``end(token, round_index)`` around each timed round (each reads
    ``/proc/stat`` once and calls ``getrusage``: tens of microseconds). ``proc_stat``: the file to read (tests)."""

    def __init__(self, proc_stat: str = PROC_STAT):
        self.proc_stat = proc_stat

    def begin(self) -> ContentionToken:
        machine = read_machine_cpu(self.proc_stat)
        own = own_cpu_s()
        return ContentionToken(wall_s=time.perf_counter(), machine=machine, own_cpu_s=own)

    def measure(self, token: ContentionToken) -> tuple[Optional[float], Optional[float], float]:
        """(other_cpu_s, steal_s, wall_s) since ``token``; the CPU figures are None without ``/proc/stat``."""
        wall = time.perf_counter() - token.wall_s
        own = own_cpu_s()
        machine = read_machine_cpu(self.proc_stat)
        if machine is None or token.machine is None:
            return None, None, wall
        other = (machine.busy_s - token.machine.busy_s) - (own - token.own_cpu_s)
        steal = machine.steal_s - token.machine.steal_s
        return max(other, 0.0), max(steal, 0.0), wall

    def end(self, token: ContentionToken, round_index: int):
        """The ``results.RoundContention`` of the round that began at ``token``."""
        from pytest_llmeff.results.schema import RoundContention

        other, steal, wall = self.measure(token)
        limit = threshold_s(wall)
        competed = (other is not None and other > limit) or (steal is not None and steal > limit)
        return RoundContention(round=round_index, load_avg_1m=_load_avg_1m(),
                               other_cpu_s=None if other is None else round(other, 4),
                               steal_s=None if steal is None else round(steal, 4), competed=competed)


def contention_warning(rounds: Sequence, cores: Optional[int]) -> Optional[str]:
    """One line when any round competed, else None: how many of the timed rounds competed, the other processes'
    CPU seconds (total and the worst round), the steal when there was any, and the highest 1-minute load average
    against ``cores`` (the machine's logical cores; None or 0 when unknown)."""
    rounds = list(rounds)
    hit = [r for r in rounds if r.competed]
    if not hit:
        return None
    other = [r.other_cpu_s for r in hit if r.other_cpu_s is not None]
    steal = [r.steal_s for r in hit if r.steal_s is not None]
    loads = [r.load_avg_1m for r in rounds if r.load_avg_1m is not None]
    parts = [f"CPU contention in {len(hit)} of {len(rounds)} timed rounds"]
    if other:
        parts.append(f"other processes used {sum(other):.2f} CPU s (up to {max(other):.2f} s in one round)")
    if steal and max(steal) > 0:
        parts.append(f"hypervisor steal {sum(steal):.2f} s")
    if loads:
        on = f" on {cores} cores" if cores else ""
        parts.append(f"load average up to {max(loads):.2f}{on}")
    return "; ".join(parts) + "; timings of those rounds may be slow"
