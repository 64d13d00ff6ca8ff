"""`supervise doctor`: check the pod's GPUs once; exit 0 healthy, 82 failed, 83 degraded.

Registered by `supervisor.cli` through `register(app)`. Heavy imports (the GPU package,
pynvml) happen inside the command, so other commands start fast.
"""

from __future__ import annotations

import typer

# Shared with the run command, which takes the same GPU flags.
FAKE_GPUS = typer.Option(
    None,
    "--fake-gpus",
    envvar="SUPERVISE_FAKE_GPUS",
    show_envvar=True,
    show_default="off: real NVML",
    help="Play a GPU fault scenario (see examples/faults) instead of reading NVML, to test a "
    "Job's failure policy on machines without GPUs.",
)
GPU_CONFIG = typer.Option(
    None,
    "--gpu-config",
    envvar="SUPERVISE_GPU_CONFIG",
    show_envvar=True,
    show_default="built-in catalog",
    help="JSON file overriding Xid and rule classes and thresholds.",
)
REQUIRE_GPUS = typer.Option(
    False,
    "--require-gpus",
    envvar="SUPERVISE_REQUIRE_GPUS",
    show_envvar=True,
    help="Exit CONFIG_ERROR (81) when NVML or the pod's GPUs cannot be found, instead of "
    "going on without GPU health checks.",
)
NVML_TIMEOUT = typer.Option(
    5.0,
    "--nvml-timeout",
    envvar="SUPERVISE_NVML_TIMEOUT",
    show_envvar=True,
    help="Seconds one NVML query may take; longer means a wedged GPU (DEVICE_FAILED).",
)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fake_gpus: str = FAKE_GPUS,
    gpu_config: str = GPU_CONFIG,
    require_gpus: bool = REQUIRE_GPUS,
    samples: int = typer.Option(
        1, "--samples", help="Read each GPU this many times (counter deltas need 2 or more)."
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between samples."),
    nvml_timeout: float = NVML_TIMEOUT,
) -> None:
    """Check the pod's GPUs once: exit 0 healthy, 82 DEVICE_FAILED, 83 DEVICE_DEGRADED."""
    from supervisor.gpu.doctor import diagnose, render_json, render_table
    from supervisor.gpu.watchdog import GpuOptions

    options = GpuOptions(
        fake_gpus=fake_gpus,
        config=gpu_config,
        require_gpus=require_gpus,
        call_timeout=nvml_timeout,
    )
    diagnosis = diagnose(options, samples=samples, interval=interval)
    print(render_json(diagnosis) if as_json else render_table(diagnosis))
    raise typer.Exit(diagnosis.exit_code.code)
