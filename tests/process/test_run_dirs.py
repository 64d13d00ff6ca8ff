"""Run directories: removed unless they hold evidence, and bounded when they do.

The real `supervise` and real trainers for what is kept; real processes holding (or
having held) the lock for the bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from supervisor.core.exitcodes import ExitCode
from supervisor.run import rundir
from tests.conftest import SUPERVISE

SAYS_WHERE = "import os; print(os.environ['SUPERVISE_RUN_DIR'], flush=True)\n"


def test_a_failed_run_without_evidence_leaves_no_run_directory(supervise) -> None:
    done = supervise("--", sys.executable, "-c", SAYS_WHERE + "raise SystemExit(3)")
    assert done.returncode == ExitCode.TRAINING_FAILED.code
    run_dir = done.stdout.decode().strip()
    assert run_dir and not os.path.exists(run_dir)
    assert not [e for e in done.events if e["event"] == "run_dir_kept"]


def test_a_command_that_cannot_start_leaves_no_run_directory(supervise, tmp_path) -> None:
    before = set(Path(rundir.default_base() or "/tmp").glob(rundir.PREFIX + "*"))
    done = supervise("--", str(tmp_path / "no-such-command"))
    assert done.returncode == ExitCode.CONFIG_ERROR.code  # nothing was started
    assert not [e for e in done.events if e["event"] == "run_dir_kept"]
    after = set(Path(rundir.default_base() or "/tmp").glob(rundir.PREFIX + "*"))
    # Other runs may come and go meanwhile; none of the new ones may be ours and ended.
    assert not [p for p in after - before if rundir._ended(str(p))]


def test_a_clean_preemption_leaves_no_run_directory(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "term"),
            "--event-log",
            str(tmp_path / "events"),
            "--",
            sys.executable,
            "-c",
            SAYS_WHERE + "import time\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    run_dir = proc.stdout.readline().decode().strip()
    assert os.path.isdir(run_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 85
    assert not os.path.exists(run_dir)
    assert "run_dir_kept" not in (tmp_path / "events").read_text()


def test_a_run_with_stack_dumps_keeps_its_directory_and_says_where(supervise) -> None:
    # An attached trainer dumps its stacks (the client's faulthandler on SIGUSR2), then fails.
    trainer = SAYS_WHERE + (
        "import os, signal, time, supervisor\n"
        "sup = supervisor.attach()\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(1)\n"
    )
    done = supervise("--", sys.executable, "-c", trainer)
    run_dir = done.stdout.decode().splitlines()[0]
    try:
        assert done.returncode == ExitCode.TRAINING_FAILED.code
        kept = done.event("run_dir_kept")
        assert kept["path"] == run_dir and kept["holds"] == ["stacks"]
        assert any(p.stat().st_size > 0 for p in Path(run_dir, "stacks").iterdir())
    finally:
        rundir.prune(os.path.dirname(run_dir), keep=rundir.KEEP)


HOLDER = """
import sys, time
from supervisor.core.exitcodes import ExitCode
from supervisor.run import rundir
print(rundir.make_run_dir(sys.argv[1]), flush=True)
if sys.argv[2] == "stay":
    time.sleep(60)
"""


def _made_by_a_process(base: Path, stay: bool) -> tuple[str, subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(base), "stay" if stay else "leave"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    if not stay:
        proc.wait(timeout=30)
    return path, proc


def test_only_the_newest_ended_run_directories_are_kept(tmp_path: Path) -> None:
    base = tmp_path / "shm"
    base.mkdir()
    live, holder = _made_by_a_process(base, stay=True)
    os.utime(live, (1, 1))  # the oldest of all, and still running
    ended = []
    for age in range(rundir.KEEP + 5):
        path, _ = _made_by_a_process(base, stay=False)
        os.utime(path, (1000 + age, 1000 + age))
        ended.append(path)
    older = base / (rundir.PREFIX + "from-an-older-version")  # no lock file
    older.mkdir()
    os.utime(older, (0, 0))
    not_ours = base / "someone-else"
    not_ours.mkdir()
    try:
        newest = rundir.make_run_dir(str(base))
        left = {str(p) for p in base.iterdir()}
        assert left == {
            live,
            newest,
            str(older),
            str(not_ours),
            *ended[-rundir.KEEP :],
        }
        assert not rundir._ended(newest) and not rundir._ended(live)
        rundir.release(newest, remove=True)
        assert not os.path.exists(newest)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert rundir._ended(live)  # its lock went with its process: pruned like the rest now
