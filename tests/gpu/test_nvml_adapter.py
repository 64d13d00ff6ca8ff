"""The real NVML adapter against the scenario fake, and against the installed nvidia-ml-py."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pynvml
import pytest

import supervisor.gpu.fake as fake_module
import supervisor.gpu.nvml as nvml_module
from supervisor.core.errors import DeviceError
from supervisor.gpu.catalog import Memory, Rules, assess
from supervisor.gpu.fake import FakeNvml, Scenario
from supervisor.gpu.nvml import CallTimedOut, open_nvml
from supervisor.gpu.watchdog import GpuOptions, GpuWatchdog

ADAPTER_SOURCE = Path(nvml_module.__file__).read_text()


def fake(**scenario) -> FakeNvml:
    return FakeNvml(Scenario.parse({"gpus": 1, **scenario}))


def opened(lib: FakeNvml, timeout: float = 2.0):
    nvml, why = open_nvml(lib, call_timeout=timeout)
    assert nvml is not None, why
    return nvml


# ------------------------------------------------------------ pynvml names stay real


def names_the_adapter_uses() -> set[str]:
    """Every `lib.X` / `self.lib.X` attribute, and every name passed as a string to
    `self._optional(...)` or its local alias `opt(...)` (which look the function up by name)."""
    names: set[str] = set(nvml_module._UNSUPPORTED)  # looked up with getattr by name
    for node in ast.walk(ast.parse(ADAPTER_SOURCE)):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "lib") or (
                isinstance(base, ast.Attribute) and base.attr == "lib"
            ):
                names.add(node.attr)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr == "_optional") or (
                isinstance(func, ast.Name) and func.id == "opt"
            ):
                names.add(node.args[0].value)
    return names


def test_every_pynvml_name_the_adapter_uses_exists_in_the_installed_nvidia_ml_py() -> None:
    used = names_the_adapter_uses()
    assert {
        "nvmlEventSetWait_v2",
        "nvmlDeviceGetRemappedRows",
        "nvmlInit",
    } <= used  # the walk works
    missing = sorted(name for name in used if not hasattr(pynvml, name))
    assert missing == [], f"not in nvidia-ml-py {pynvml.__name__}: {missing}"


def test_the_fake_implements_every_name_the_adapter_uses_with_pynvmls_values() -> None:
    lib = fake()
    for name in names_the_adapter_uses():
        assert hasattr(lib, name), f"the fake lacks {name}"
        real = getattr(pynvml, name)
        if isinstance(real, int):
            assert getattr(lib, name) == real, name
    for name in dir(fake_module):  # and the constants it declares but the adapter may not use
        if name.startswith(("NVML_", "nvmlEventType")):
            assert getattr(fake_module, name) == getattr(pynvml, name), name


def test_everything_the_adapter_called_on_a_full_run_exists_in_pynvml() -> None:
    """A recording of a real run through the adapter: snapshot, events, an Xid, teardown."""
    lib = fake(
        timeline=[
            {"at": 0.2, "gpu": 0, "xid": 154},
            {"at": 0.2, "gpu": 0, "set": {"recovery_action": 3}},
        ]
    )
    nvml = opened(lib)
    dog = GpuWatchdog(nvml, nvml.gpus(None, None)[0], Rules(), poll_interval=0.05)
    found = []
    dog.start(found.append, time.monotonic)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        f.finding.kind == "recovery_drain" for f in found
    ):
        time.sleep(0.02)
    dog.stop()
    deadline = time.monotonic() + 5  # NVML closes on a daemon thread: wait for exactly that
    while "nvmlShutdown" not in lib.called and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(f.finding.kind == "recovery_drain" for f in found)
    assert {"nvmlEventSetWait_v2", "nvmlShutdown", "nvmlDeviceGetGpuFabricInfoV"} <= lib.called
    missing = sorted(name for name in lib.called if not hasattr(pynvml, name))
    assert missing == []


# ------------------------------------------------------------ reading the device


def test_a_healthy_gpu_reads_back_what_the_device_reports() -> None:
    nvml = opened(
        fake(
            gpus=[
                {
                    "uuid": "GPU-aaaa",
                    "bus_id": "00000000:3B:00.0",
                    "state": {"temperature_c": 61, "pcie_replay": 7},
                }
            ]
        )
    )
    (gpu,), missing = nvml.gpus(None, None)
    assert (gpu.uuid, gpu.bus_id, gpu.index, missing) == ("GPU-aaaa", "00000000:3B:00.0", 0, [])
    state = nvml.read(gpu)
    assert state.temperature_c == 61 and state.temperature_slowdown_c == 87
    assert state.pcie_replay == 7 and state.pcie_width == state.pcie_width_max == 16
    assert state.nvlink_up == tuple(range(18)) and state.nvlink_replay_recovery == 0
    assert state.remap_pending is False and state.ecc_uncorrected_volatile == 0
    assert state.recovery_action == 0 and state.fabric_health_summary == 1
    assert not state.lost


def test_unsupported_queries_read_as_none_and_a_lost_gpu_reads_as_lost() -> None:
    lib = fake(
        gpus=[
            {
                "state": {
                    "unsupported": ["nvmlDeviceGetRemappedRows", "nvmlDeviceGetFieldValues"],
                    "fabric_state": None,
                }
            }
        ],
        timeline=[{"at": 0.3, "gpu": 0, "lost": True}],
    )
    nvml = opened(lib)
    (gpu,), _ = nvml.gpus(None, None)
    state = nvml.read(gpu)
    assert state.remap_pending is None and state.recovery_action is None
    assert state.fabric_state is None and state.nvlink_up is None
    assert state.temperature_c == 45
    time.sleep(0.35)  # the fake's scenario runs on real time: the GPU is lost at 0.3 s
    assert nvml.read(gpu).lost


def test_a_flaky_query_reads_as_none_and_is_noted_without_stopping_the_poll() -> None:
    nvml = opened(fake(gpus=[{"state": {"failing": ["nvmlDeviceGetTemperature"]}}]))
    (gpu,), _ = nvml.gpus(None, None)
    state = nvml.read(gpu)
    assert state.temperature_c is None and state.pcie_width == 16
    assert state.errors == ("nvmlDeviceGetTemperature: NVML_ERROR_UNKNOWN",)
    found, _ = assess(gpu, state, Memory(), Rules())
    assert [(f.kind, f.exit_code) for f in found] == [("nvml_errors", None)]


@pytest.mark.parametrize(
    ("nvidia", "cuda", "chosen", "missing"),
    [
        (None, None, ["GPU-a", "GPU-b", "GPU-c"], []),
        ("all", None, ["GPU-a", "GPU-b", "GPU-c"], []),
        ("GPU-c,GPU-a", None, ["GPU-c", "GPU-a"], []),
        ("1", None, ["GPU-b"], []),
        ("GPU-a,GPU-gone", None, ["GPU-a"], ["GPU-gone"]),
        ("GPU-b,GPU-c", "1", ["GPU-c"], []),  # CUDA indices count the GPUs left
        ("GPU-b,GPU-c", "GPU-b", ["GPU-b"], []),
        ("GPU-b,GPU-c", "7", ["GPU-b", "GPU-c"], []),  # CUDA ignores what it cannot resolve
        ("MIG-1234", None, ["GPU-a", "GPU-b", "GPU-c"], []),
        ("void", None, [], []),
    ],
)
def test_the_pods_gpus_are_chosen_by_uuid(nvidia, cuda, chosen, missing) -> None:
    nvml = opened(fake(gpus=[{"uuid": "GPU-a"}, {"uuid": "GPU-b"}, {"uuid": "GPU-c"}]))
    gpus, gone = nvml.gpus(nvidia, cuda)
    assert [g.uuid for g in gpus] == chosen and gone == missing


# ------------------------------------------------------------ bounded calls


def test_a_hung_call_is_bounded_and_later_calls_do_not_queue_behind_it() -> None:
    lib = fake(timeline=[{"at": 0.0, "gpu": 0, "hang": "nvmlDeviceGetTemperature"}])
    try:
        nvml = opened(lib, timeout=0.3)
        (gpu,), _ = nvml.gpus(None, None)
        started = time.monotonic()
        with pytest.raises(CallTimedOut) as caught:
            nvml.read(gpu)
        assert 0.3 <= time.monotonic() - started < 2.0
        assert isinstance(caught.value, DeviceError)
        assert caught.value.call == "nvmlDeviceGetTemperature" and "0.3 s" in str(caught.value)
        started = time.monotonic()
        with pytest.raises(CallTimedOut):
            nvml.read(gpu)  # fails at once: the worker is still stuck in NVML
        assert time.monotonic() - started < 0.1
    finally:
        lib.release()


def test_the_event_wait_blocks_until_the_xid_really_happens() -> None:
    nvml = opened(fake(timeline=[{"at": 0.4, "gpu": 0, "xid": 79}]))
    gpus, _ = nvml.gpus(None, None)
    registered = nvml.watch_events(gpus)
    wanted = (
        pynvml.nvmlEventTypeXidCriticalError
        | pynvml.nvmlEventTypeDoubleBitEccError
        | pynvml.nvmlEventTypeGpuUnavailableError
        | pynvml.nvmlEventTypeGpuRecoveryAction
    )
    assert registered[gpus[0].uuid] & wanted == wanted
    assert nvml.wait_event(100) is None  # the timeout is in milliseconds
    event = None
    while event is None:
        event = nvml.wait_event(500)
    assert (event.uuid, event.event_type, event.data) == (
        gpus[0].uuid,
        pynvml.nvmlEventTypeXidCriticalError,
        79,
    )


# ------------------------------------------------------------ no NVML here


def test_without_a_driver_the_real_pynvml_says_so_and_open_returns_none() -> None:
    """This machine has no NVIDIA driver: the real library cannot be loaded."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        assert err.value in (
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        )
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML; the no-driver path cannot be seen here")
    nvml, why = open_nvml(None)
    assert nvml is None
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in why or "NVML_ERROR_DRIVER_NOT_LOADED" in why


def test_no_gpus_is_no_nvml() -> None:
    nvml, why = open_nvml(FakeNvml(Scenario.parse({"gpus": 0})))
    assert nvml is None and why == "NVML sees no GPU"


def test_options_are_validated_by_raising() -> None:
    from supervisor.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--gpu-poll-interval must be a positive"):
        GpuOptions(poll_interval=0)
    with pytest.raises(ConfigError, match="--fake-gpus: no such file"):
        GpuOptions(fake_gpus="/nonexistent/scenario.json")


def test_every_gpu_state_field_can_be_set_in_a_scenario() -> None:
    from dataclasses import fields

    from supervisor.gpu.catalog import GpuState

    # `lost` has its own timeline entry; `errors` is what the adapter saw fail
    settable = {f.name for f in fields(GpuState)} - {"at", "lost", "errors"}
    assert settable <= fake_module._STATE_KEYS
