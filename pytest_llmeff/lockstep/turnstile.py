"""Lockstep A/B: two pytest processes (a baseline checkout and a candidate) take turns round by round.

Why: on a shared machine the speed of the machine itself drifts by 10-20% between runs a minute apart, more than
the regressions worth catching. Two runs whose rounds alternate in time (baseline round 1, candidate round 1,
baseline round 2, ...) see the same drift, and round i of one can be paired with round i of the other. This is
asv's "continuous" idea (both commits measured in one job) done with two ordinary pytest runs, so each side may
have its own checkout, virtual environment and library versions.

The protocol lives in one directory both processes are given (``--llmeff-interleave=DIR``):

- ``turn`` holds the role whose turn it is (``baseline`` or ``candidate``), replaced atomically. The baseline
  starts. A process holds the turn for everything it does (loading, warm-up, a timed round, FLOP counting, the
  quality probe) and passes it after its warm-up and after each timed round, so the other side never works while
  one side measures, and every timed round starts right after the partner's turn (the first one included).
- ``<role>.state`` holds ``running <pid>`` or ``done``. A partner that is done, whose process is gone, or that
  has not started within ``start_timeout_s`` releases the other side: it goes on alone, and its records say the
  rounds were not interleaved (``interleaved: false``), so no paired comparison is made on them.
- ``baseline.round`` / ``candidate.decision``: how many pairs to time (``paired_stop.py``): the baseline's figures
  of its latest round, the candidate's decision after the same round (both name the benchmark and the round).
- ``baseline/<key>.json``: each baseline benchmark record, written atomically when it is complete; the candidate
  reads it to judge its own record of the same benchmark (paired test, see ``gate.compare_paired``).

- ``<role>.fifo``: a named pipe per side. Passing the turn writes a byte to the partner's pipe; a waiting side
  blocks in ``select`` on its own pipe, so it uses no CPU and does not disturb the side that measures (a
  process that polls every millisecond slowed a 2-thread CPU generate by a third here). The ``turn`` file stays
  the truth; the byte only wakes the waiter, which also looks at the partner's liveness every ``check_s``.
  Where named pipes do not exist (Windows), waiting falls back to sleeping ``check_s / 10`` between looks.
Each pair needs a new or empty directory: a side that finds its own ``<role>.state`` there refuses to start (it
would be an earlier pair's, whose ``done`` would release the partner at once), and so does a side that finds
anything but the pair's own files there (``turn``, ``<role>.state``, ``<role>.fifo``, ``baseline/`` holding
records, and the hidden temp files of their atomic writes): a mistyped directory would else be used, and a
side would wait for a partner that never comes.
Both processes must run the same benchmarks in the same order with the same rounds (the same test selection),
or the rounds pair up across different benchmarks; a record pairs only with the partner's record of the same
node id and name, with the same number of samples.
"""

from __future__ import annotations

from pytest_llmeff.errors import InterleaveError  # noqa: F401  (its old home; defined in errors.py)

import errno
import hashlib
import os
import re
import select
import time
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.files import atomic_write_text

ROLES = ("baseline", "candidate")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the files a pair keeps in its directory (``baseline`` is the records folder)
OWN_FILES = frozenset({"turn", "baseline", "baseline.round", "candidate.decision"} | {f"{r}.state" for r in ROLES}
                      | {f"{r}.fifo" for r in ROLES})
#: the temp file of an atomic write (``files.atomic_write_text``): ``.<name>.<random>.tmp``
_TEMP = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")
#: a published record (``record_file_name``)
_RECORD = re.compile(r".*-[0-9a-f]{16}\.json")


def _write_atomic(path: Path, text: str) -> None:
    """A pair file, whole or not at all (``files.atomic_write_text``); not fsynced: the turn passes every round
    and the files mean nothing after the session."""
    atomic_write_text(path, text, durable=False)


def _own_record(name: str) -> bool:
    """A published record of ``baseline/``, or the temp file of its atomic write."""
    temp = _TEMP.fullmatch(name)
    return _RECORD.fullmatch(temp.group("name") if temp else name) is not None


def _own_top(name: str) -> bool:
    """One of ``OWN_FILES``, or the temp file of its atomic write."""
    temp = _TEMP.fullmatch(name)
    return (temp.group("name") if temp else name) in OWN_FILES


def foreign_entries(directory: Path) -> list[str]:
    """What ``directory`` holds besides a lockstep pair's own files, as paths relative to it (sorted; a folder
    ends in ``/``); [] for a missing or empty directory. Own: ``turn``, ``<role>.state``, ``<role>.fifo``, the
    ``baseline/`` folder with published records, and the hidden temp files of the atomic writes of these."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:  # missing, not a directory, unreadable: start() says so when it cannot use it
        return []
    foreign = []
    for entry in entries:
        if entry.name == "baseline" and entry.is_dir() and not entry.is_symlink():
            try:
                inside = sorted(entry.iterdir())
            except OSError:
                inside = []
            foreign.extend(f"baseline/{e.name}" + ("/" if e.is_dir() else "") for e in inside
                           if not (e.is_file() and _own_record(e.name)))
        elif entry.name == "baseline" or not _own_top(entry.name):
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. An exited process that its parent has not reaped yet (a zombie, e.g. the
    ``--llmeff-ab`` baseline, a child of this very process, which reaps it only at the end) is not alive: its state
    in /proc says ``Z``. It is not reaped here, so its exit status stays for ``subprocess`` to read."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill's answer stands


def record_file_name(nodeid: str, name: str) -> str:
    """A safe, unique file name for one benchmark (node id and name are arbitrary text)."""
    digest = hashlib.sha256(f"{nodeid}\0{name}".encode()).hexdigest()[:16]
    readable = _SAFE.sub("_", f"{nodeid}-{name}")[-80:].lstrip("._") or "benchmark"
    return f"{readable}-{digest}.json"


def rounds_pair(base, current) -> bool:
    """Whether two benchmark records' rounds pair up one to one: both interleaved throughout (with a lockstep
    partner) and with the same number of rounds. ``base``/``current``: ``results.BenchmarkRecord``."""
    return bool(base.interleaved and current.interleaved
                and len(base.metrics["latency_s"].samples) == len(current.metrics["latency_s"].samples))


class Turnstile:
    """One side of a lockstep pair. ``start()`` once, ``step()`` after each timed round, ``finish()`` at the end.

    directory: shared by both processes. role: ``baseline`` or ``candidate``.
    start_timeout_s: how long to wait for a partner that has not started yet before going on alone.
    check_s: longest sleep of a waiting side between looks at the partner's liveness.
    notify: called once with a line for humans when this side has waited ``notify_after_s`` for a partner that
        has not started (a forgotten partner would otherwise look like a hang).
    partner_pid: the partner's process id when this process started it (``--llmeff-ab``): a partner that exits
        before it starts is then noticed at once instead of after ``start_timeout_s``.
    """

    def __init__(self, directory, role: str, start_timeout_s: float = 600.0, check_s: float = 0.1,
                 notify: Optional[Callable[[str], None]] = None, notify_after_s: float = 15.0,
                 partner_pid: Optional[int] = None):
        if role not in ROLES:
            raise InterleaveError(f"role {role!r} is not allowed; allowed: {', '.join(ROLES)}")
        self.directory = Path(directory)
        self.role = role
        self.partner = ROLES[1 - ROLES.index(role)]
        self.start_timeout_s = start_timeout_s
        self.check_s = check_s
        self._wake_fd: Optional[int] = None
        self.alone = False  # True once the partner is gone: no more waiting, and no more interleaving
        self.alone_reason: Optional[str] = None
        self.turns = 0  # turns passed to the partner
        self._started_s: Optional[float] = None
        self._notify = notify
        self._notify_after_s = notify_after_s
        self._partner_pid = partner_pid  # known when this process started the partner (--llmeff-ab)

    # --- files -------------------------------------------------------------------------------------
    @property
    def turn_path(self) -> Path:
        return self.directory / "turn"

    def state_path(self, role: str) -> Path:
        return self.directory / f"{role}.state"

    @property
    def records_dir(self) -> Path:
        return self.directory / "baseline"

    def fifo_path(self, role: str) -> Path:
        return self.directory / f"{role}.fifo"

    def record_path(self, nodeid: str, name: str) -> Path:
        return self.records_dir / record_file_name(nodeid, name)

    # --- protocol ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Announce this side and wait for the first turn (the baseline starts)."""
        if self.state_path(self.role).exists():
            raise InterleaveError(f"--llmeff-interleave={self.directory}: the directory holds the files of an "
                                  f"earlier pair ({self.state_path(self.role).name} exists); give each pair a new "
                                  "or empty directory")
        foreign = foreign_entries(self.directory)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" (and {len(foreign) - 5} more)" if len(foreign) > 5 else "")
            raise InterleaveError(
                f"--llmeff-interleave={self.directory}: the directory holds what is not the lockstep's own: "
                f"{shown}; it may hold only the pair's files (turn, baseline.state, candidate.state, "
                "baseline.fifo, candidate.fifo, baseline.round, candidate.decision, baseline/ with its records); "
                "give each pair a new or empty directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.records_dir.mkdir(exist_ok=True)
            try:  # the first side to arrive creates the turn file; O_EXCL makes that race-free
                fd = os.open(self.turn_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "w") as handle:
                    handle.write("baseline")
            except FileExistsError:
                pass
            if hasattr(os, "mkfifo"):
                try:
                    os.mkfifo(self.fifo_path(self.role))
                except FileExistsError:
                    pass
                # read-write, so the pipe always has a writer (this side) and select never sees end-of-file
                self._wake_fd = os.open(self.fifo_path(self.role), os.O_RDWR | os.O_NONBLOCK)
            _write_atomic(self.state_path(self.role), f"running {os.getpid()}")
        except OSError as exc:
            raise InterleaveError(f"--llmeff-interleave={self.directory}: cannot use the directory: {exc}") from None
        self._started_s = time.monotonic()
        self.wait_turn()

    def _partner_gone(self) -> Optional[str]:
        """Why the partner can no longer take turns, or None while it can (or may still start)."""
        state = _read(self.state_path(self.partner))
        if state is None:
            if self._partner_pid is not None and not _pid_alive(self._partner_pid):
                return f"the {self.partner} process (pid {self._partner_pid}) exited before it started"
            waited = time.monotonic() - (self._started_s or time.monotonic())
            if waited > self.start_timeout_s:
                return f"the {self.partner} did not start within {self.start_timeout_s:g} s"
            if self._notify is not None and waited > self._notify_after_s:
                notify, self._notify = self._notify, None  # once
                notify(f"interleave: the {self.role} has waited {waited:.0f} s for the {self.partner} to start "
                       f"in {self.directory}; going on alone after {self.start_timeout_s:g} s")
            return None
        if state == "done":
            return f"the {self.partner} has finished"
        parts = state.split()
        if len(parts) == 2 and parts[0] == "running" and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            return f"the {self.partner} process (pid {parts[1]}) has exited without finishing"
        return None

    def _go_alone(self, reason: str) -> None:
        self.alone = True
        self.alone_reason = reason

    def _sleep_until_woken(self) -> None:
        if self._wake_fd is None:
            time.sleep(self.check_s / 10)
            return
        ready, _, _ = select.select([self._wake_fd], [], [], self.check_s)
        if ready:
            try:
                os.read(self._wake_fd, 4096)  # drain the wake-up bytes
            except BlockingIOError:
                pass

    def wait_turn(self) -> None:
        """Block until it is this side's turn, or the partner is gone (then never wait again)."""
        while not self.alone:
            if _read(self.turn_path) == self.role:
                return
            reason = self._partner_gone()
            if reason is not None:
                self._go_alone(reason)
                return
            self._sleep_until_woken()

    def _wake_partner(self) -> None:
        try:
            fd = os.open(self.fifo_path(self.partner), os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no pipe yet, or nobody reading it: the partner reads the turn file when it starts
            return
        try:
            os.write(fd, b"t")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE):
                raise
        finally:
            os.close(fd)

    def pass_turn(self) -> None:
        if not self.alone:
            _write_atomic(self.turn_path, self.partner)
            self.turns += 1
            self._wake_partner()

    def step(self) -> None:
        """After a timed round: give the partner its turn and wait for ours back."""
        if self.alone:
            return
        self.pass_turn()
        self.wait_turn()

    def finish(self) -> None:
        """This side is done: mark it so and hand the turn over for good."""
        try:  # the turn first: a partner that saw "done" while the turn was still ours would go on alone
            _write_atomic(self.turn_path, self.partner)
            _write_atomic(self.state_path(self.role), "done")
            self._wake_partner()
        except OSError:
            pass
        if self._wake_fd is not None:
            os.close(self._wake_fd)
            self._wake_fd = None
        self.alone = True  # alone_reason stays None unless the partner went away first

    def write_message(self, path: Path, text: str) -> None:
        """A file for the partner (``paired_stop.py``: a round's figures, a decision), written atomically before
        the turn passes, so the partner reads it whole when its turn comes."""
        _write_atomic(path, text)

    # --- records -------------------------------------------------------------------------------------
    def publish(self, nodeid: str, name: str, record_json: str) -> None:
        """The baseline's complete record of one benchmark, for the candidate to compare with."""
        _write_atomic(self.record_path(nodeid, name), record_json)

    def partner_record(self, nodeid: str, name: str, max_turns: int = 3) -> Optional[str]:
        """The baseline's record of this benchmark (JSON text), or None when it has none.

        In lockstep the baseline publishes a record before the candidate finishes the same benchmark, so it is
        normally there at once; otherwise up to ``max_turns`` turns are given to the baseline to finish it (a
        benchmark only the candidate has would else stall the pair)."""
        path = self.record_path(nodeid, name)
        for _ in range(max_turns + 1):
            text = _read(path)
            if text is not None or self.alone:
                return text
            self.step()
        return _read(path)
