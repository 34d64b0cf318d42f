"""Multi-GPU meters and peaks keyed by the set of devices a variant uses (a device_map model over several GPUs):
the NVML meter reads exactly those GPUs, peak memory sums them. CI has no GPU: NVML and torch.cuda are faked."""

from __future__ import annotations

import pytest

from pytest_llmeff.measure.device_set import cuda_indices, devices_key, model_devices, split_key


def test_a_set_of_devices_is_one_stable_key():
    assert devices_key(["cuda:1", "cuda:0", "cuda:1"]) == "cuda:0+cuda:1"
    assert devices_key(["cuda:10", "cuda:2"]) == "cuda:2+cuda:10"
    assert devices_key(["cuda:3"]) == "cuda:3" and split_key("cuda:0+cuda:1") == ["cuda:0", "cuda:1"]
    assert cuda_indices("cuda:0+cuda:2") == [0, 2]
    assert cuda_indices("cuda:0") is None and cuda_indices("cuda") is None and cuda_indices("cpu") is None


def test_the_model_devices_are_where_its_parameters_sit():
    class P:
        def __init__(self, device):
            self.device = device

    class M:
        def parameters(self):
            return iter([P("cuda:1"), P("cuda:0"), P("cpu"), P("cuda:1")])

    assert model_devices(M()) == ("cuda:0", "cuda:1")


def test_the_meter_of_a_device_set_reads_exactly_those_gpus(monkeypatch):
    from pytest_llmeff.measure import meters, nvml
    from pytest_llmeff.measure.meter_set import MeterSet

    monkeypatch.setattr(nvml.NvmlMeter, "available", lambda self: (True, ""))
    meter_set = MeterSet("auto", "USA")
    both = meter_set.for_device("cuda:0+cuda:1")
    one = meter_set.for_device("cuda:1")
    assert isinstance(both, nvml.NvmlMeter) and both.device_indices == [0, 1]
    assert one.device_indices == [1] and both is not one  # keyed by the set, not by the kind
    assert meters.make_meter("nvml", "cuda:2+cuda:3", "USA").device_indices == [2, 3]


def test_peak_memory_of_a_device_set_is_the_sum_of_its_gpus(monkeypatch):
    torch = pytest.importorskip("torch")
    from pytest_llmeff.measure.memory import PeakMemory

    allocated = {"cuda:0": 100, "cuda:1": 50}
    peaks = {"cuda:0": 400, "cuda:1": 300}
    reset = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: reset.append(d))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: allocated[d])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: peaks[d])
    peak = PeakMemory("cuda:0", ("cuda:0", "cuda:1"))
    peak.reset()
    assert reset == ["cuda:0", "cuda:1"]
    assert peak.peak_bytes() == 700 and peak.delta_bytes() == 550
    assert peak.per_device == {"cuda:0": 400, "cuda:1": 300}
    single = PeakMemory("cuda:1")
    single.reset()
    assert single.peak_bytes() == 300 and single.delta_bytes() == 250


def test_a_device_map_models_record_keeps_each_gpus_peak(tiny_model, monkeypatch):
    """The runner with a model spread over two (faked) GPUs: each GPU's highest peak over the rounds is kept."""
    import dataclasses

    from pytest_llmeff.bench import runner

    rounds_seen = []

    class TwoGpuPeak:
        method = "cuda_max_allocated"
        delta_needs_untimed_window = False

        def __init__(self, device, devices=()):
            assert tuple(devices) == ("cuda:0", "cuda:1")
            self.per_device = {}

        def reset(self, trim=False):
            pass

        def peak_bytes(self):
            n = len(rounds_seen)
            rounds_seen.append(n)
            self.per_device = {"cuda:0": 1000 + n, "cuda:1": 500 - n}
            return sum(self.per_device.values())

        def delta_bytes(self):
            return 0

    monkeypatch.setattr(runner, "PeakMemory", TwoGpuPeak)
    spread = dataclasses.replace(tiny_model, devices=("cuda:0", "cuda:1"))
    spec = runner.RunSpec(("hello there",), batch_size=1, max_new_tokens=2, rounds=3, warmup=0, count_flops=False)
    measured = runner.run(spread, spec, None)
    assert measured.peak_mem_devices == {"cuda:0": 1002, "cuda:1": 500}
    assert measured.samples["peak_mem_bytes"] == [1500, 1500, 1500]
