"""Live progress on the terminal while a benchmark times its rounds: a listener of the event stream
(``events.EventLog``) that writes a line now and then with the round count and the interval reached so far.

Quiet on short work: a benchmark shows lines only once it has run ``first_after_s`` (10 s; 2 s with ``-v``), then
at most one line every ``every_s``, and a closing line with the stop decision when it showed any. The model
conversion and load lines come from the model cache itself.
"""

from __future__ import annotations

from typing import Callable, Optional

QUIET_AFTER_S = 10.0
VERBOSE_AFTER_S = 2.0


def _interval(event: dict) -> str:
    """``throughput_tok_s 17.9 ±3.5% (target ±5%)`` for the first precision metric with a median."""
    medians = event.get("median") or {}
    achieved = event.get("achieved_ci_rel") or {}
    for name, median in medians.items():
        if median is None:
            continue
        rel = achieved.get(name)
        width = f" ±{rel:.1%}" if rel is not None else " (no interval yet)"
        target = event.get("target_ci_rel")
        goal = f" (target ±{target:.0%})" if target is not None and event.get("fixed_rounds") is None else ""
        return f"{name} {median:.4g}{width}{goal}"
    return "no precision metric measured yet"


class ProgressLines:
    """Writes progress lines through ``write`` (the session's ``llmeff:`` line writer)."""

    def __init__(self, write: Callable[[str], None], verbose: bool = False):
        self.write = write
        self.first_after_s = VERBOSE_AFTER_S if verbose else QUIET_AFTER_S
        self.every_s = self.first_after_s
        self._start: Optional[float] = None
        self._last: Optional[float] = None
        self._shown = False

    def __call__(self, event: dict) -> None:
        kind, now = event.get("event"), float(event.get("t_s") or 0.0)
        if kind == "benchmark_start":
            self._start, self._last, self._shown = now, None, False
        elif kind == "round" and self._start is not None:
            if now - self._start < self.first_after_s or (self._last is not None and now - self._last < self.every_s):
                return
            self._last, self._shown = now, True
            fixed, budget = event.get("fixed_rounds"), event.get("max_time_s")
            rounds = f"round {event.get('round')}" + (f" of {fixed}" if fixed is not None else "")
            spent = f"{event.get('elapsed_s', 0):.0f} s" + (f" of {budget:g} s" if budget and fixed is None else "")
            self.write(f"{event.get('variant') or event.get('nodeid')}: {rounds}, {_interval(event)}, "
                       f"{spent} timed")
        elif kind == "stop" and self._shown:
            self.write(f"{event.get('variant') or event.get('nodeid')}: stopped after {event.get('rounds')} rounds "
                       f"({event.get('reason')}), {_interval(event)}")
            self._start = None
