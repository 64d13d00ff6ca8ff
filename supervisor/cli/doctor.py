"""`supervise doctor`: check the pod's GPUs once; exit 0 healthy, 82 failed, 83 degraded.

Registered by `supervisor.cli` through `register(app)`. Heavy imports (the GPU package,
pynvml) happen inside the command, so other commands start fast. The GPU flags are the
run command's too (`supervisor.cli.flags.GPU`).
"""

from __future__ import annotations

import typer

from supervisor.cli.flags import GPU, Flag, Range, command

# How the doctor reads and reports: one-shot choices no pod spec sets, so without env twins.
READING = (
    Flag("json", bool, False, "Print JSON instead of a table.", twin=False),
    Flag(
        "samples",
        int,
        1,
        "Read each GPU this many times (counter deltas need 2 or more).",
        twin=False,
        range=Range(1, 1000),
    ),
    Flag("interval", float, 1.0, "Seconds between samples.", twin=False, range=Range(0, 60)),
)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


@command(*READING, *GPU)
def doctor_command(
    json: bool,
    samples: int,
    interval: float,
    fake_gpus: str | None,
    gpu_config: str | None,
    require_gpus: bool,
    nvml_timeout: float,
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
    print(render_json(diagnosis) if json else render_table(diagnosis))
    raise typer.Exit(diagnosis.exit_code.code)
