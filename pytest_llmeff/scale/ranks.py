"""A session that is one rank of torchrun / accelerate launch (``launcher.Launch``): every rank runs the same
benchmarks; the ranks start each benchmark together (a barrier), rank 0 gathers every rank's records and loads over
``torch.distributed`` (gloo: plain Python objects, no GPU needed) and alone prints and writes. Energy is counted
once per physical device (``launcher.owns_device``); a rank that does not own its device's meter records no energy
for it and says who counts it.

``--llmeff-parallel=replicas`` (default): each rank is a data-parallel replica, its own model copy on its own
pinned GPU. ``--llmeff-parallel=tensor``: the ranks load each model once, split by transformers' tensor-parallel
plan over all of them, and every generate is a collective, so every rank must make exactly the same generate
calls: the decisions that depend on a rank's own measurements (the stop rule's "enough rounds", the energy
re-measure) are rank 0's, broadcast (``agree``). GPUs are not pinned then: transformers binds rank r to
``cuda:<local rank>`` itself.

Imports torch only here, and this module loads only under a launcher.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import timedelta
from typing import Optional

from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.measure.meter import OffMeter
from pytest_llmeff.measure.meter_set import device_kind
from pytest_llmeff.scale import xdist_gpu
from pytest_llmeff.scale.launcher import Launch, owns_device

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
    """Pin this rank's GPU (before CUDA starts; replicas only), join the process group, share the meters."""
    tensor = session.options.parallel == "tensor"
    gpus = xdist_gpu.visible_gpus(os.environ)
    if gpus and launch.local_world_size <= len(gpus) and not tensor:
        os.environ[xdist_gpu.CUDA_ENV] = gpus[launch.local_rank]
    import torch.distributed as dist

    if not dist.is_initialized():
        timeout_s = float(os.environ.get(TIMEOUT_ENV, "1800"))
        # tensor parallel on GPUs: the model's collectives need NCCL; the records are gathered over gloo
        dist.init_process_group(backend_for(tensor, gpus), timeout=timedelta(seconds=timeout_s))
        session.rank_group_owned = True

    meters = session.meters
    own_for_device = meters.for_device

    def for_device(device: str):
        kind = device_kind(device)
        if owns_device(launch, kind, gpus):
            return own_for_device(device)
        return OffMeter(f"counted once per device: local rank 0 of {socket.gethostname()} reads {kind}")

    meters.for_device = for_device
    if tensor:
        session.agree = agree  # the ranks generate together: rank 0's stop and re-measure decisions for all


def backend_for(tensor: bool, gpus: list) -> str:
    """The process group's backend: gloo, plus NCCL for CUDA tensors under tensor parallelism on GPUs."""
    return "cpu:gloo,cuda:nccl" if tensor and gpus else "gloo"


def agree(value):
    """Rank 0's ``value`` on every rank (a picklable object; the rank's own when no process group is up).
    Under tensor parallelism every generate is a collective: a rank that stopped a round earlier than the others
    would leave them waiting for it forever."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Every rank starts the next benchmark together, so the replicas run at the same time."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def gather(session, launch: Launch) -> None:
    """Rank 0 ends with every rank's records (``rank`` set) and loads (``worker`` = ``rank<N>``) and the run's
    ``distributed`` description; the others keep theirs and write nothing. Leaves the process group."""
    import torch.distributed as dist

    from pytest_llmeff.results.schema import BenchmarkRecord, DistributedInfo, LoadEvent

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
    tensor = session.options.parallel == "tensor"
    session.distributed = DistributedInfo(
        launcher=launch.launcher, world_size=launch.world_size, parallel=session.options.parallel,
        backend=backend_for(tensor, xdist_gpu.visible_gpus(os.environ)),
        hosts=[p["host"] for p in parts], aggregate=aggregate(session.records, tensor=tensor))


def aggregate(records, tensor: bool = False) -> list:
    """Per benchmark over the ranks: the summed median throughput (the replicas ran between the same barriers;
    under tensor parallelism, ``tensor``, the ranks generated the same tokens together: the group's throughput is
    the slowest rank's), the slowest rank's median latency, the summed energy of the ranks that read a meter."""
    from pytest_llmeff.results.schema import RankAggregate

    groups: dict = {}
    for r in records:
        groups.setdefault((r.nodeid, r.name), []).append(r)
    out = []
    for (nodeid, name), recs in groups.items():
        def medians(metric):
            return [r.metrics[metric].median for r in recs if metric in r.metrics]

        tput, lat, energy = medians("throughput_tok_s"), medians("latency_s"), medians("energy_j")
        out.append(RankAggregate(nodeid=nodeid, name=name, ranks=sorted(r.rank for r in recs if r.rank is not None),
                                 throughput_tok_s_sum=sum(tput) if tput and not tensor else None,
                                 throughput_tok_s_group=min(tput) if tput and tensor else None,
                                 latency_s_slowest=max(lat) if lat else None,
                                 energy_j_sum=sum(energy) if energy else None, energy_ranks=len(energy)))
    return out
