"""The public surface is small and pinned; the docs are generated from the contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import supervisor
from supervisor.core.exitcodes import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_pinned() -> None:
    assert supervisor.__all__ == ["CheckpointStore", "ExitCode", "__version__", "attach", "rng"]


def test_readme_table_is_generated_from_the_enum() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- exit-codes:begin -->\n(.*?)\n<!-- exit-codes:end -->", readme, re.S)
    assert found, "README lost its exit-codes markers"
    assert found.group(1) == markdown_table(), (
        "regenerate with supervisor.core.exitcodes.markdown_table()"
    )


def test_readme_event_table_is_generated_from_the_output_registry() -> None:
    from supervisor.core import outputs

    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- events:begin -->\n(.*?)\n<!-- events:end -->", readme, re.S)
    assert found, "README lost its events markers"
    assert found.group(1) == outputs.markdown_table(), (
        "regenerate with supervisor.core.outputs.markdown_table()"
    )


def test_import_supervisor_is_light() -> None:
    code = "import sys, supervisor; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    for heavy in ("torch", "fsspec", "pynvml", "typer", "psutil", "supervisor.run.loop"):
        assert heavy not in loaded.split(), heavy


def test_readme_flag_table_is_generated_from_the_run_flags() -> None:
    from supervisor.cli.flags import markdown_table
    from supervisor.cli.run import FLAGS

    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- run-flags:begin -->\n(.*?)\n<!-- run-flags:end -->", readme, re.S)
    assert found, "README lost its run-flags markers"
    assert found.group(1) == markdown_table(FLAGS), (
        "regenerate with supervisor.cli.flags.markdown_table(supervisor.cli.run.FLAGS)"
    )
