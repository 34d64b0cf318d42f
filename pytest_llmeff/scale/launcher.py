"""Is this process one rank of a launcher (torchrun / ``python -m torch.distributed.run``, ``accelerate launch``)?
Read from the environment those launchers set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``);
pure, no torch.

Under a launcher every rank runs the same benchmarks as a data-parallel replica: its own model copy, its own
batch. Energy is counted once per physical device (``owns_device``): each rank reads its own GPU (the plugin
pins ``CUDA_VISIBLE_DEVICES`` to one GPU per local rank), and the CPU of a node is read by its local rank 0 only,
because a CPU meter (RAPL, the CodeCarbon estimate) measures the whole package whichever process asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from pytest_llmeff.errors import UsageProblem


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch: ``rank`` of ``world_size`` (global), ``local_rank`` of
    ``local_world_size`` (on this node), and the ``launcher`` that set them (for the run file)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str


def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise UsageProblem(f"{name} is not set although WORLD_SIZE={env.get('WORLD_SIZE')} is; start the ranks "
                               "with torchrun or accelerate launch")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageProblem(f"{name}={raw!r} is not an integer (set by the launcher)") from None


def detect(env: Mapping[str, str]) -> Optional[Launch]:
    """The launch this process belongs to, or None when it is not one of several ranks."""
    if not env.get("WORLD_SIZE", "").strip():
        return None
    world = _int(env, "WORLD_SIZE")
    if world <= 1:
        return None
    rank = _int(env, "RANK")
    local_rank = _int(env, "LOCAL_RANK", rank)
    local_world = _int(env, "LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world:
        raise UsageProblem(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world})")
    launcher = ("accelerate launch" if any(k.startswith("ACCELERATE_") for k in env)
                else "torchrun" if env.get("TORCHELASTIC_RUN_ID") else "a launcher (RANK/WORLD_SIZE)")
    return Launch(rank, world, local_rank, local_world, launcher)


def owns_device(launch: Launch, device_kind: str, gpus: list[str]) -> bool:
    """Whether this rank reads the energy meter of ``device_kind`` (``cpu``, ``cuda``, ``cuda:N``): a GPU when
    every local rank has its own (pinned), else, like the CPU, only on local rank 0."""
    if device_kind.startswith("cuda") and gpus and launch.local_world_size <= len(gpus):
        return True
    return launch.local_rank == 0
