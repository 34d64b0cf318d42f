"""The worker's side of the variant scheduler (``xdist_sched``): after collection, each pytest-xdist worker
writes ``{nodeid: [load key or null, estimated cost]}`` into the folder the controller named in its
``workerinput``, so the controller (which never collects) can keep each variant on one worker and hand out the
costliest first. No xdist import: this runs in the worker's collection hook."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.scale.shard import Entry, estimates

SCOPES_KEY = "llmeff_scopes_dir"


def write_units(workerinput, items: list, variant_of: Callable, is_benchmark: Callable) -> None:
    """Write this worker's units file (atomically: the controller may read it as soon as the worker reports
    its collection). Costs are the shards' estimate: parameters x batch x new tokens."""
    folder = workerinput.get(SCOPES_KEY) if workerinput else None
    if not folder:
        return

    entries = [Entry(item.nodeid, variant_of(item), is_benchmark(item)) for item in items]
    cost = estimates(entries)
    units = {e.nodeid: [e.variant.load_key if e.variant is not None else None, cost.get(e.nodeid, 0.0)]
             for e in entries}
    worker = workerinput.get("workerid") or str(os.getpid())
    atomic_write_text(Path(folder) / f"{worker}.json", json.dumps(units))
