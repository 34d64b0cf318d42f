"""pytest-xdist that keeps each variant on one worker: a scheduler given through xdist's
``pytest_xdist_make_scheduler`` hook. Imported only when xdist runs workers (it imports xdist).

xdist's own ``--dist loadgroup`` cannot do it on pytest 9: it renames ``item._nodeid``, which pytest 9 no longer
reads. Here the unit of work is the variant's load key: every test of a variant (all batch sizes) goes to one
worker, so each variant loads once in the whole run. Units are handed out largest estimated cost first
(parameters x batch x tokens, as for shards) to whichever worker runs out of work: the dynamic form of the
longest-processing-time rule. Tests that are not benchmarks are units of one test each (xdist's ``load``).

The controller never collects, so it learns each node id's unit from the workers: each writes
``{nodeid: [load key or null, cost]}`` into a folder the controller made (``workerinput``) before it reports
its collection. The controller also gives each worker one GPU (``xdist_gpu``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from pytest_llmeff.scale import xdist_gpu
from pytest_llmeff.scale.xdist_units import SCOPES_KEY


class VariantScheduling(LoadScopeScheduling):
    """LoadScope scheduling whose scope is the variant (load key) and whose queue is ordered by cost."""

    def __init__(self, config, log, scopes_dir: Path):
        super().__init__(config, log)
        self._dir = Path(scopes_dir)
        self._units = None

    def _mapping(self) -> dict:
        if self._units is None:
            units: dict = {}
            for path in sorted(self._dir.glob("*.json")):
                try:
                    units.update(json.loads(path.read_text()))
                except (OSError, ValueError):
                    continue
            self._units = units
        return self._units

    def _split_scope(self, nodeid: str) -> str:
        entry = self._mapping().get(nodeid)
        return f"llmeff-variant:{entry[0]}" if entry and entry[0] else nodeid

    def schedule(self) -> None:
        """xdist's LoadScope start, with the queue ordered by cost (largest first; collection order among
        equals); later calls hand more work to the nodes that ran dry, as in xdist."""
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: OrderedDict = OrderedDict()
        cost: dict = {}
        for nodeid in self.collection:
            scope = self._split_scope(nodeid)
            units.setdefault(scope, {})[nodeid] = False
            entry = self._mapping().get(nodeid)
            cost[scope] = cost.get(scope, 0.0) + (float(entry[1]) if entry else 0.0)
        for scope in sorted(units, key=lambda s: -cost[s]):
            self.workqueue[scope] = units[scope]
        for _ in range(len(self.nodes) - len(self.workqueue)):  # more workers than units: stop the extra ones
            unused, _assigned = self.assigned_work.popitem()
            unused.shutdown()
        for node in self.nodes:
            self._assign_work_unit(node)
        for node in self.nodes:
            self._reschedule(node)
        if not self.workqueue:
            for node in self.nodes:
                node.shutdown()


class ControllerPlugin:
    """Registered on the xdist controller: makes the scheduler, tells each worker its folder and GPU."""

    def __init__(self, config, progress):
        self.dir = Path(tempfile.mkdtemp(prefix="llmeff-xdist-"))
        self.gpus = xdist_gpu.visible_gpus(os.environ)
        workers = getattr(config.option, "numprocesses", None)
        warning = xdist_gpu.sharing_warning(int(workers), self.gpus) if isinstance(workers, int) else None
        if warning:
            progress(warning)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getvalue("dist") not in ("load", "loadgroup"):
            return None  # the user chose another distribution (each, loadscope, loadfile, worksteal)
        return VariantScheduling(config, log, self.dir)

    def pytest_configure_node(self, node):
        node.workerinput[SCOPES_KEY] = str(self.dir)
        device = xdist_gpu.device_for(node.gateway.id, self.gpus)
        if device is not None:
            node.workerinput[xdist_gpu.WORKER_KEY] = device

    def pytest_unconfigure(self, config):
        shutil.rmtree(self.dir, ignore_errors=True)
