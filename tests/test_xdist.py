"""pytest-xdist: the variant scheduler keeps each variant on one worker (each loaded once in the whole run),
and each worker gets one GPU through CUDA_VISIBLE_DEVICES (unit-tested: CI has no GPU)."""

from __future__ import annotations

import json

import pytest

from pytest_llmeff.scale import xdist_gpu

pytest.importorskip("xdist")

FOUR_VARIANTS = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16", "float16"],
                            batch_size=[1, 2], max_new_tokens=2, rounds=1, warmup=0, quality=False)
def test_gen(llm_benchmark):
    llm_benchmark()

@pytest.mark.llm_efficiency(model="tiny-random-llama", quantization="dynamic-int8", max_new_tokens=2, rounds=1,
                            warmup=0, quality=False)
def test_int8(llm_benchmark):
    llm_benchmark()

def test_plain():
    pass
"""


@pytest.mark.slow
def test_with_two_workers_each_of_four_variants_loads_exactly_once_in_the_whole_run(llmeff_pytester):
    llmeff_pytester.makepyfile(test_four=FOUR_VARIANTS)
    out = llmeff_pytester.path / "x.json"
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", f"--llmeff-json={out}")
    assert result.ret == 0, result.stdout.str()
    data = json.loads(out.read_text())
    keys = [load["key"] for load in data["loads"]]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4, data["loads"]
    assert {load["worker"] for load in data["loads"]} == {"gw0", "gw1"}  # both workers had variants
    assert len(data["benchmarks"]) == 7
    worker_of = {load["key"]: load["worker"] for load in data["loads"]}
    assert len(set(worker_of.values())) == 2


def test_the_gpus_are_the_visible_devices_else_the_drivers_list(tmp_path):
    assert xdist_gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert xdist_gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert xdist_gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert xdist_gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    gpus = tmp_path / "gpus"
    for bus in ("0000:17:00.0", "0000:65:00.0", "0000:ca:00.0"):
        (gpus / bus).mkdir(parents=True)
    assert xdist_gpu.visible_gpus({}, str(gpus)) == ["0", "1", "2"]
    assert xdist_gpu.visible_gpus({}, str(tmp_path / "none")) == []


def test_each_worker_gets_one_gpu_and_too_many_workers_are_warned_about():
    gpus = ["4", "5"]
    assert [xdist_gpu.device_for(f"gw{i}", gpus) for i in range(4)] == ["4", "5", "4", "5"]
    assert xdist_gpu.device_for("gw0", []) is None and xdist_gpu.device_for("master", gpus) is None
    assert xdist_gpu.sharing_warning(2, gpus) is None and xdist_gpu.sharing_warning(8, []) is None
    warning = xdist_gpu.sharing_warning(3, gpus)
    assert warning.startswith("WARNING -n 3 with 2 GPU(s)") and "use -n 2" in warning


def test_a_worker_sets_its_device_before_cuda_starts():
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert xdist_gpu.pin({xdist_gpu.WORKER_KEY: "1"}, env) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    untouched = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert xdist_gpu.pin({}, untouched) is None and untouched["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_the_worker_is_pinned_in_a_real_xdist_run(pytester, monkeypatch):
    pytester.makepyfile(test_env="""
        import os
        def test_device():
            assert os.environ["CUDA_VISIBLE_DEVICES"] == {"gw0": "7", "gw1": "8"}[os.environ["PYTEST_XDIST_WORKER"]]
    """)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert result.ret == 0, result.stdout.str()
