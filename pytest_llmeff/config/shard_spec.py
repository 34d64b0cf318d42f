"""Which shard this session is: ``--llmeff-shard=K/N`` (K from 0), or ``auto`` / ``auto/N`` read from the
engine that started the process. Pure: no pytest, no pydantic; the environment is passed in.

The environment is read only when asked (``auto``): a pytest run that happens to sit inside a Slurm array task
for another reason must not silently run a fraction of its tests.

Where ``auto`` looks, first found wins:

==========================================  ==============================================================
``LLMEFF_SHARD_INDEX`` / ``LLMEFF_SHARD_COUNT``  any engine or CI matrix (GitHub Actions: ``strategy.job-index`` /
                                             ``strategy.job-total``)
``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``  a Slurm array job (``SLURM_ARRAY_TASK_MIN`` is subtracted,
                                             so ``--array=1-4`` gives shards 0..3)
``JOB_COMPLETION_INDEX``                     a Kubernetes Indexed Job; the count from ``auto/N`` or
                                             ``LLMEFF_SHARD_COUNT`` (Kubernetes does not expose ``completions``)
``CI_NODE_INDEX`` / ``CI_NODE_TOTAL``        a GitLab CI ``parallel:`` job (1-based, so index - 1)
==========================================  ==============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

from pytest_llmeff.errors import UsageProblem

INDEX_ENV = "LLMEFF_SHARD_INDEX"
COUNT_ENV = "LLMEFF_SHARD_COUNT"
_FORM = "K/N with 0 <= K < N (e.g. 0/4), auto (read the engine's environment) or auto/N"
_SPEC = re.compile(r"^\s*(\S+?)\s*/\s*(\S+)\s*$")


@dataclass(frozen=True)
class ShardSpec:
    """This session runs shard ``index`` (0-based) of ``count``; ``source`` says where the numbers came from
    (``--llmeff-shard`` or the environment variables read)."""

    index: int
    count: int
    source: str

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def _int(name: str, raw: str, what: str) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        where = name if "=" in name else f"{name}={raw!r}"
        raise UsageProblem(f"{where}: {what} is not an integer; give {_FORM}") from None


def _checked(name: str, index: int, count: int, source: str) -> ShardSpec:
    if count < 1:
        raise UsageProblem(f"{name}: shard count {count} is not allowed; give {_FORM}")
    if not 0 <= index < count:
        raise UsageProblem(f"{name}: shard index {index} is not in 0..{count - 1}; give {_FORM}")
    return ShardSpec(index, count, source)


def _from_environment(name: str, count_given: Optional[int], env: Mapping[str, str]) -> ShardSpec:
    def count_for(index_var: str, count_var: Optional[str]) -> tuple[int, str]:
        if count_given is not None:
            return count_given, f"{index_var} + {name}"
        for var in (count_var, COUNT_ENV):
            if var and env.get(var, "").strip():
                return _int(var, env[var], "the count"), f"{index_var} + {var}"
        raise UsageProblem(f"{name}: {index_var}={env[index_var]} gives the shard index but no count; give "
                           f"{name.split('=')[0]}=auto/N or set {COUNT_ENV}")

    if env.get(INDEX_ENV, "").strip():
        count, source = count_for(INDEX_ENV, None)
        return _checked(name, _int(INDEX_ENV, env[INDEX_ENV], "the index"), count, source)
    if env.get("SLURM_ARRAY_TASK_ID", "").strip():
        index = _int("SLURM_ARRAY_TASK_ID", env["SLURM_ARRAY_TASK_ID"], "the index")
        if env.get("SLURM_ARRAY_TASK_MIN", "").strip():
            index -= _int("SLURM_ARRAY_TASK_MIN", env["SLURM_ARRAY_TASK_MIN"], "the first index")
        count, source = count_for("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
        return _checked(name, index, count, source)
    if env.get("JOB_COMPLETION_INDEX", "").strip():
        count, source = count_for("JOB_COMPLETION_INDEX", None)
        return _checked(name, _int("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"], "the index"), count, source)
    if env.get("CI_NODE_INDEX", "").strip():
        count, source = count_for("CI_NODE_INDEX", "CI_NODE_TOTAL")
        return _checked(name, _int("CI_NODE_INDEX", env["CI_NODE_INDEX"], "the index") - 1, count, source)
    raise UsageProblem(f"{name}: no shard index in the environment ({INDEX_ENV}, SLURM_ARRAY_TASK_ID, "
                       f"JOB_COMPLETION_INDEX or CI_NODE_INDEX); give K/N instead")


def parse_shard(name: str, raw: Optional[str], env: Mapping[str, str]) -> Optional[ShardSpec]:
    """The shard of ``raw`` (the option's text; ``name`` names it in errors, e.g. ``--llmeff-shard``), or None
    when sharding is off. Raises UsageProblem (one line naming the value and the allowed forms)."""
    if raw is None:
        return None
    text = str(raw).strip()
    label = f"{name}={text}"
    if text.lower() == "auto":
        return _from_environment(label, None, env)
    match = _SPEC.match(text)
    if match is None:
        raise UsageProblem(f"{label} gives no shard count; give {_FORM}")
    left, right = match.groups()
    count = _int(label, right, "the count")
    if left.lower() == "auto":
        if count < 1:
            raise UsageProblem(f"{label}: shard count {count} is not allowed; give {_FORM}")
        return _from_environment(label, count, env)
    return _checked(label, _int(label, left, "the index"), count, name)
