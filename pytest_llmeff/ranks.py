"""A session that is one rank of torchrun / accelerate launch (``launcher.Launch``): every rank runs the same
benchmarks as a data-parallel replica; the ranks start each benchmark together (a barrier), rank 0 gathers every
rank's records and loads over ``torch.distributed`` (gloo: plain Python objects, no GPU needed) and alone prints
and writes. Energy is counted once per physical device (``launcher.owns_device``); a rank that does not own its
device's meter records no energy for it and says who counts it.

Imports torch only here, and this module loads only under a launcher.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import timedelta
from typing import Optional

from pytest_llmeff import xdist_gpu
from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.launcher import Launch, owns_device

TIMEOUT_ENV = "LLMEFF_RANK_TIMEOUT_S"  # how long a rank waits for the others at a barrier or the gather


def quiet_options(options, launch: Launch):
    """Rank 0 writes; the other ranks write nothing (no run file, reports or stored baseline)."""
    if launch.rank == 0:
        return options
    return dataclasses.replace(options, report=False, json_path=None, save=None, autosave=False, markdown=None,
                               csv=None, benchmark_json=None)


def check(config, launch: Launch) -> None:
    """Launches that cannot be combined with other scale-outs: one pytest process per rank."""
    if getattr(config.option, "numprocesses", None):
        raise UsageProblem(f"{launch.launcher} starts {launch.world_size} ranks, one pytest process each; run it "
                           "without pytest-xdist's -n")


def start(session, launch: Launch) -> None:
    """Pin this rank's GPU (before CUDA starts), join the process group, share the meters."""
    gpus = xdist_gpu.visible_gpus(os.environ)
    if gpus and launch.local_world_size <= len(gpus):
        os.environ[xdist_gpu.CUDA_ENV] = gpus[launch.local_rank]
    import torch.distributed as dist

    if not dist.is_initialized():
        timeout_s = float(os.environ.get(TIMEOUT_ENV, "1800"))
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        session.rank_group_owned = True
    from pytest_llmeff.measure.meter import OffMeter
    from pytest_llmeff.measure.meter_set import device_kind

    meters = session.meters
    own_for_device = meters.for_device

    def for_device(device: str):
        kind = device_kind(device)
        if owns_device(launch, kind, gpus):
            return own_for_device(device)
        return OffMeter(f"counted once per device: local rank 0 of {socket.gethostname()} reads {kind}")

    meters.for_device = for_device


def barrier() -> None:
    """Every rank starts the next benchmark together, so the replicas run at the same time."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def gather(session, launch: Launch) -> None:
    """Rank 0 ends with every rank's records (``rank`` set) and loads (``worker`` = ``rank<N>``) and the run's
    ``distributed`` description; the others keep theirs and write nothing. Leaves the process group."""
    import torch.distributed as dist

    from pytest_llmeff.results import BenchmarkRecord, DistributedInfo, LoadEvent

    if not dist.is_initialized():
        return
    for record in session.records:
        record.rank = launch.rank
    mine = {"rank": launch.rank, "host": socket.gethostname(),
            "records": [r.model_dump_json() for r in session.records],
            "loads": [e.model_copy(update={"worker": f"rank{launch.rank}"}).model_dump_json()
                      for e in session.loads]}
    parts: Optional[list] = [None] * launch.world_size if launch.rank == 0 else None
    dist.gather_object(mine, parts, dst=0)
    if getattr(session, "rank_group_owned", False):
        dist.destroy_process_group()
    if launch.rank != 0:
        return
    parts = sorted(parts, key=lambda p: p["rank"])
    session.records = [BenchmarkRecord.model_validate_json(raw) for p in parts for raw in p["records"]]
    session.loads = [LoadEvent.model_validate_json(raw) for p in parts for raw in p["loads"]]
    session.distributed = DistributedInfo(
        launcher=launch.launcher, world_size=launch.world_size, backend="gloo",
        hosts=[p["host"] for p in parts], aggregate=aggregate(session.records))


def aggregate(records) -> list:
    """Per benchmark over the ranks: the summed median throughput (the replicas ran between the same barriers),
    the slowest rank's median latency, the summed energy of the ranks that read a meter."""
    from pytest_llmeff.results import RankAggregate

    groups: dict = {}
    for r in records:
        groups.setdefault((r.nodeid, r.name), []).append(r)
    out = []
    for (nodeid, name), recs in groups.items():
        def medians(metric):
            return [r.metrics[metric].median for r in recs if metric in r.metrics]

        tput, lat, energy = medians("throughput_tok_s"), medians("latency_s"), medians("energy_j")
        out.append(RankAggregate(nodeid=nodeid, name=name, ranks=sorted(r.rank for r in recs if r.rank is not None),
                                 throughput_tok_s_sum=sum(tput) if tput else None,
                                 latency_s_slowest=max(lat) if lat else None,
                                 energy_j_sum=sum(energy) if energy else None, energy_ranks=len(energy)))
    return out
