"""The machine info with an NVML that fails: the reason is visible, and the fingerprint (the baseline folder) is
never that of a GPU-less machine. NVML is faked: CI has no GPU."""

from __future__ import annotations

import types

import pytest

from pytest_llmeff.measure import machine
from pytest_llmeff.results.storage import machine_fingerprint


class _NVMLError(Exception):
    def __init__(self, value: int, text: str = ""):
        super().__init__(text)
        self.value = value


def _fake_nvml(init_error=None, names=("NVIDIA H100 80GB HBM3",), fail_at=None):
    """A pynvml stand-in: ``init_error`` raised by nvmlInit, else ``names`` GPUs, the handle of ``fail_at``
    raising NVML_ERROR_UNKNOWN (999)."""
    calls = {"shutdown": 0}

    def init():
        if init_error is not None:
            raise init_error

    def handle(i):
        if i == fail_at:
            raise _NVMLError(999, "Unknown Error")
        return i

    def shutdown():
        calls["shutdown"] += 1

    memory = types.SimpleNamespace(total=80 * 2**30)
    fake = types.SimpleNamespace(
        NVMLError=_NVMLError, nvmlInit=init, nvmlShutdown=shutdown, nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=handle, nvmlDeviceGetName=lambda h: names[h].encode(),
        nvmlDeviceGetMemoryInfo=lambda h: memory)
    return fake, calls


def test_a_readable_nvml_lists_its_gpus():
    fake, calls = _fake_nvml(names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"))
    info = machine.machine_info(fake)
    assert [g["name"] for g in info["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert machine.GPU_UNREADABLE not in info and calls["shutdown"] == 1
    assert machine.gpu_line(info) == "GPU: 2 x NVIDIA H100 80GB HBM3"
    assert "-2gpu-" in machine_fingerprint(info)


@pytest.mark.parametrize("code", [9, 12])  # driver not loaded, library not found: truly no NVIDIA GPU
def test_no_driver_is_a_machine_without_gpus(code):
    fake, _ = _fake_nvml(init_error=_NVMLError(code, "Driver Not Loaded"))
    info = machine.machine_info(fake)
    assert info["gpus"] == [] and machine.GPU_UNREADABLE not in info
    assert machine.gpu_line(info) == "GPU: none"


def test_an_nvml_that_fails_says_why_and_never_passes_for_a_gpu_less_machine():
    fake, _ = _fake_nvml(init_error=_NVMLError(4, "Insufficient Permissions"))
    unreadable = machine.machine_info(fake)
    assert unreadable["gpus"] == []
    assert machine.gpu_line(unreadable) == "GPU: unreadable (NVML init failed: _NVMLError: Insufficient Permissions)"

    gpu_less = {k: v for k, v in unreadable.items() if k != machine.GPU_UNREADABLE}
    readable_fake, _ = _fake_nvml()
    with_gpu = machine.machine_info(readable_fake)
    fingerprint = machine_fingerprint(unreadable)
    assert fingerprint != machine_fingerprint(gpu_less), "an unreadable GPU silently became a GPU-less machine"
    assert fingerprint != machine_fingerprint(with_gpu)
    assert "gpu-unreadable" in fingerprint  # visible in the baseline folder's name


def test_a_gpu_that_fails_while_listed_is_unreadable_and_nvml_is_shut_down():
    fake, calls = _fake_nvml(names=("A", "B"), fail_at=1)
    inventory = machine.read_gpus(fake)
    assert [g["name"] for g in inventory.gpus] == ["A"]
    assert inventory.unreadable == "NVML could not list GPU 1: _NVMLError: Unknown Error"
    assert calls["shutdown"] == 1
    assert "gpu-unreadable" in machine_fingerprint(machine.machine_info(fake))


def test_the_run_file_keeps_the_reason():
    from pytest_llmeff.results.schema import MachineInfo

    fake, _ = _fake_nvml(init_error=_NVMLError(999, "Unknown Error"))
    stored = MachineInfo(**machine.machine_info(fake))
    assert stored.model_dump()[machine.GPU_UNREADABLE] == "NVML init failed: _NVMLError: Unknown Error"
    assert "gpu-unreadable" in machine_fingerprint(stored)


def test_the_session_says_unreadable_gpus_on_the_terminal(monkeypatch, capsys):
    from pytest_llmeff.session import startup

    unreadable = machine.GpuInventory(unreadable="NVML init failed: x")
    monkeypatch.setattr(machine, "read_gpus", lambda nvml=None: unreadable)
    hook = types.SimpleNamespace(pytest_llmeff_generate_machine_info=lambda config: None,
                                 pytest_llmeff_update_machine_info=lambda config, machine_info: None)
    config = types.SimpleNamespace(stash={}, hook=hook,
                                   pluginmanager=types.SimpleNamespace(get_plugin=lambda name: None))
    info = startup.machine_info(config)
    assert info[machine.GPU_UNREADABLE] == "NVML init failed: x"
    assert "llmeff: GPU: unreadable (NVML init failed: x)" in capsys.readouterr().err
    startup.machine_info(config)  # gathered once: said once
    assert capsys.readouterr().err == ""
