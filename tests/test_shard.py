"""Shards (--llmeff-shard): the K/N and environment forms, the split (whole variants, balanced, deterministic),
and real sharded sessions whose union is the unsharded run."""

from __future__ import annotations

import json

import pytest

from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.session.marker import expand
from pytest_llmeff.scale.shard import Entry, Unit, lpt, split
from pytest_llmeff.config.shard_spec import ShardSpec, parse_shard

SHARDED = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16", "float16"],
                            batch_size=[1, 2], max_new_tokens=4, rounds=2, warmup=0, quality=False)
def test_gen(llm_benchmark):
    llm_benchmark()

def test_plain():
    pass
"""


@pytest.mark.parametrize("raw, env, expected", [
    ("0/2", {}, (0, 2)),
    (" 3 / 4 ", {}, (3, 4)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}, (1, 3)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}, (1, 2)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "3"}, (3, 4)),
    ("auto", {"JOB_COMPLETION_INDEX": "0", "LLMEFF_SHARD_COUNT": "2"}, (0, 2)),
    ("auto", {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, (1, 2)),
    ("auto", {"LLMEFF_SHARD_INDEX": "1", "LLMEFF_SHARD_COUNT": "3", "SLURM_ARRAY_TASK_ID": "0"}, (1, 3)),
])
def test_the_shard_comes_from_the_option_or_the_engine(raw, env, expected):
    spec = parse_shard("--llmeff-shard", raw, env)
    assert (spec.index, spec.count) == expected


@pytest.mark.parametrize("raw, env, message", [
    ("3/2", {}, "--llmeff-shard=3/2: shard index 3 is not in 0..1"),
    ("0/0", {}, "--llmeff-shard=0/0: shard count 0 is not allowed"),
    ("a/b", {}, "--llmeff-shard=a/b: the count is not an integer"),
    ("1/x", {}, "--llmeff-shard=1/x: the count is not an integer"),
    ("3", {}, "--llmeff-shard=3 gives no shard count"),
    ("auto", {"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX=2 gives the shard index but no count"),
    ("auto", {}, "no shard index in the environment"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "2"}, "shard index 7 is not in 0..1"),
])
def test_a_bad_shard_is_one_line_naming_the_value_and_the_allowed_forms(raw, env, message):
    with pytest.raises(UsageProblem) as info:
        parse_shard("--llmeff-shard", raw, env)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "K/N" in text or "auto/N" in text or "LLMEFF_SHARD_COUNT" in text


def test_lpt_puts_the_largest_unit_first_onto_the_least_loaded_shard_and_is_deterministic():
    units = [Unit("a", cost=7), Unit("b", cost=5), Unit("c", cost=4), Unit("d", cost=3), Unit("e", cost=3)]
    shard_of = lpt(units, 2)
    loads = [sum(u.cost for u in units if shard_of[u.key] == s) for s in range(2)]
    assert sorted(loads) == [10, 12]  # LPT: a|b, c->b(9), d->a(10), e->b(12)
    assert lpt(list(reversed(units)), 2) == shard_of  # the collection's order does not matter


def _entries(**marker):
    variants = expand({"model": "tiny-random-llama", **marker})
    return [Entry(f"t.py::test[{v.id}]", v, True) for v in variants]


def test_the_split_keeps_each_variant_whole_and_sends_other_tests_to_shard_zero():
    entries = _entries(precision=["float32", "bfloat16", "float16"], batch_size=[1, 4]) + [
        Entry("t.py::test_plain", None, False)]
    parts = [split(ShardSpec(k, 2, "test"), entries) for k in range(2)]
    kept = [set(p.keep) for p in parts]
    assert not kept[0] & kept[1] and kept[0] | kept[1] == {e.nodeid for e in entries}
    assert "t.py::test_plain" in kept[0]
    by_key = {}
    for e in entries:
        if e.variant is not None:
            by_key.setdefault(e.variant.load_key, set()).add(0 if e.nodeid in kept[0] else 1)
    assert all(len(shards) == 1 for shards in by_key.values())  # batch 1 and 4 of a variant: one shard
    assert parts[0].plan == parts[1].plan and parts[0].collection == parts[1].collection


def test_a_bigger_batch_costs_more_and_measured_times_win_over_the_estimate():
    entries = _entries(precision=["float32", "bfloat16"], batch_size=[1, 8])
    small = {e.nodeid for e in entries if e.variant.batch_size == 1}
    estimated = split(ShardSpec(0, 2, "test"), entries)
    assert estimated.estimated and "parameters x batch size x new tokens" in estimated.method

    class Rec:
        def __init__(self, nodeid, total):
            self.nodeid, self.time_s = nodeid, {"total": total}

    class Previous:  # bf16 measured 10x slower than float32 here
        benchmarks = [Rec(e.nodeid, 10.0 if e.variant.precision == "bfloat16" else 1.0) for e in entries]

    measured = split(ShardSpec(0, 2, "test"), entries, Previous(), "prev.json")
    assert not measured.estimated and "measured" in measured.method and "prev.json" in measured.method
    assert sorted(measured.loads) == [2.0, 20.0]
    assert small  # both batch sizes of a variant stay together whatever the costs


# The truth test (two real shards together are the unsharded run) is in test_merge.py, on the runs it merges.


def test_a_shard_with_nothing_to_run_passes_and_still_writes_its_run(llmeff_pytester):
    llmeff_pytester.makepyfile(test_sharded=SHARDED)
    out = llmeff_pytester.path / "empty.json"
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--llmeff-json={out}",
                                                 "--llmeff-shard=4/5")
    assert result.ret == 0
    data = json.loads(out.read_text())
    assert data["benchmarks"] == [] and data["shard"]["index"] == 4 and data["shard"]["units"] == []


@pytest.mark.parametrize("args, message", [
    (["--llmeff-shard=3/2"], "--llmeff-shard=3/2: shard index 3 is not in 0..1"),
    (["--llmeff-shard=a/b"], "--llmeff-shard=a/b: the count is not an integer"),
    (["--llmeff-shard=0/2", "--llmeff-interleave=ab", "--llmeff-role=baseline"],
     "--llmeff-shard=0/2 cannot be combined with --llmeff-interleave=ab"),
    (["--llmeff-shard=0/2", "--llmeff-ab=HEAD"], "--llmeff-shard=0/2 cannot be combined with --llmeff-ab=HEAD"),
    (["--llmeff-shard-costs=nothing.json"], "--llmeff-shard-costs=nothing.json needs --llmeff-shard=K/N"),
    (["--llmeff-shard=0/2", "--llmeff-shard-costs=nothing"], "--llmeff-shard-costs=nothing: no stored run"),
])
def test_bad_shard_options_are_one_usage_line(llmeff_pytester, args, message):
    llmeff_pytester.makepyfile(test_sharded=SHARDED)
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if "pytest-llmeff:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_shard_auto_reads_a_slurm_array_task(llmeff_pytester, monkeypatch):
    llmeff_pytester.makepyfile(test_sharded=SHARDED)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    out = llmeff_pytester.path / "slurm.json"
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--llmeff-json={out}",
                                                 "--llmeff-shard=auto", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["llmeff: shard 1/2 (SLURM_ARRAY_TASK_ID + SLURM_ARRAY_TASK_COUNT)*"])
    assert "test_plain" not in result.stdout.str()  # other tests run in shard 0 only
