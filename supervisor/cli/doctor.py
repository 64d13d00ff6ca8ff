"""`supervise doctor`: check the pod's GPUs once; exit 0 healthy, 82 failed, 83 degraded.

Registered by `supervisor.cli` through `register(app)`. Heavy imports (the GPU package,
pynvml) happen inside the command, so other commands start fast.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fake_gpus: str = typer.Option(
        None,
        "--fake-gpus",
        envvar="SUPERVISE_FAKE_GPUS",
        show_envvar=True,
        show_default="off: real NVML",
        help="Read GPUs from a fault scenario file instead of NVML (see examples/faults).",
    ),
    gpu_config: str = typer.Option(
        None,
        "--gpu-config",
        envvar="SUPERVISE_GPU_CONFIG",
        show_envvar=True,
        show_default="built-in catalog",
        help="JSON file overriding Xid and rule classes and thresholds.",
    ),
    require_gpus: bool = typer.Option(
        False,
        "--require-gpus",
        envvar="SUPERVISE_REQUIRE_GPUS",
        show_envvar=True,
        help="Exit CONFIG_ERROR (81) when there is no NVML or no GPU, instead of 0.",
    ),
    samples: int = typer.Option(
        1, "--samples", help="Read each GPU this many times (counter deltas need 2 or more)."
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between samples."),
    nvml_timeout: float = typer.Option(
        5.0,
        "--nvml-timeout",
        envvar="SUPERVISE_NVML_TIMEOUT",
        show_envvar=True,
        help="Seconds one NVML query may take; a query that takes longer means a failed GPU.",
    ),
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
