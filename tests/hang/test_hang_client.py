"""The training-side API: a no-op outside supervise, real slot writes inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import client
from supervisor.channel import Channel, Header, SlotState

REPO = str(Path(__file__).resolve().parents[2])


def run_py(code: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    clean.pop("LOCAL_RANK", None)
    clean.pop("RANK", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": REPO, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_outside_supervise_attach_is_a_noop_with_the_same_methods() -> None:
    code = (
        "import supervisor.client as c\n"
        "sup = c.attach()\n"
        "assert not sup.active and sup.rank == 0\n"
        "with sup.phase('eval'):\n"
        "    sup.step(1)\n"
        "sup.finish()\n"
        "assert sup.resume_step is None and sup.restart_count == 0\n"
        "assert c.attach() is sup\n"
        "print('ok')\n"
    )
    done = run_py(code, {})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_client_import_never_loads_torch() -> None:
    done = run_py("import sys, supervisor.client\nprint('torch' in sys.modules)", {})
    assert done.stdout.strip() == "False", done.stderr


def test_resume_step_and_restart_count_come_from_the_environment() -> None:
    code = "import supervisor.client as c\ns = c.attach()\nprint(s.resume_step, s.restart_count)"
    done = run_py(code, {"SUPERVISE_RESUME_STEP": "1200", "SUPERVISE_RESTART_COUNT": "2"})
    assert done.stdout.split() == ["1200", "2"], done.stderr


def test_a_real_rank_writes_pid_step_phase_and_finishes_at_exit(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=8)
    code = (
        "import os, supervisor.client as c\n"
        "sup = c.attach()\n"
        "assert sup.active and sup.rank == 3\n"
        "for i in range(5):\n"
        "    sup.step(i)\n"
        "with sup.phase('eval'):\n"
        "    with sup.phase('checkpoint'):\n"
        "        print(os.getpid(), flush=True)\n"
        "        input()\n"  # hold here so the test can read the slot mid-phase
        "    print('restored', flush=True)\n"
        "    input()\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO, "SUPERVISE_CHANNEL": chan.path, "LOCAL_RANK": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    pid = int(proc.stdout.readline())
    slot = chan.read_slot(3)
    assert slot is not None
    expected = (pid, SlotState.RUNNING, 4, "checkpoint")
    assert (slot.pid, slot.state, slot.step, slot.phase) == expected
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "restored"
    slot = chan.read_slot(3)
    assert slot is not None and slot.phase == "eval", "the nested phase was not restored"
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    slot = chan.read_slot(3)
    assert slot is not None and slot.state is SlotState.FINISHED  # atexit, no finish() call
    assert slot.phase == ""


def test_rank_falls_back_to_RANK_then_zero(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=8)
    code = "import supervisor.client as c\nprint(c.attach().rank)"
    assert run_py(code, {"SUPERVISE_CHANNEL": chan.path, "RANK": "5"}).stdout.strip() == "5"
    assert run_py(code, {"SUPERVISE_CHANNEL": chan.path}).stdout.strip() == "0"


def test_a_bad_channel_or_rank_degrades_to_noop_with_one_line(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    code = "import supervisor.client as c\ns = c.attach()\ns.step(1)\nprint(s.active)"
    done = run_py(code, {"SUPERVISE_CHANNEL": chan.path, "LOCAL_RANK": "7"})
    assert done.returncode == 0 and done.stdout.strip() == "False"
    assert "heartbeats disabled for rank 7" in done.stderr
    done = run_py(code, {"SUPERVISE_CHANNEL": str(tmp_path / "nope")})
    assert done.returncode == 0 and done.stdout.strip() == "False"
    assert done.stderr.count("\n") == 1


def test_a_forked_child_is_not_the_rank(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    code = (
        "import os, supervisor.client as c\n"
        "sup = c.attach()\n"
        "sup.step(1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    assert not c.attach().active\n"
        "    sup.finish()\n"  # inherited handle: must not mark the parent's slot finished
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "import supervisor.channel as ch\n"
        "print(ch.Channel.open(os.environ['SUPERVISE_CHANNEL']).read_slot(0).state.name)\n"
    )
    done = run_py(code, {"SUPERVISE_CHANNEL": chan.path})
    assert done.stdout.strip() == "RUNNING", done.stderr


def test_sigusr2_dumps_stacks_instead_of_killing(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    code = (
        "import os, signal, sys, supervisor.client as c\n"
        "sup = c.attach()\n"
        # POSIX: a signal a single-threaded process sends itself is delivered before kill()
        # returns, and faulthandler writes from the C handler, so the dump is already there
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print('alive')\n"
    )
    done = run_py(code, {"SUPERVISE_CHANNEL": chan.path, "SUPERVISE_STACKS_DIR": str(stacks)})
    assert done.stdout.strip() == "alive", done.stderr
    (dump,) = stacks.iterdir()
    assert dump.name.startswith("rank0-")
    assert "most recent call first" in dump.read_text()


def test_a_trainers_own_sigusr2_handler_is_left_alone(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    code = (
        "import os, signal, supervisor.client as c\n"
        "got = []\n"
        "signal.signal(signal.SIGUSR2, lambda *a: got.append(1))\n"
        "sup = c.attach()\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print(got)\n"
    )
    done = run_py(code, {"SUPERVISE_CHANNEL": chan.path, "SUPERVISE_STACKS_DIR": str(stacks)})
    assert done.stdout.strip() == "[1]", done.stderr
    assert list(stacks.iterdir()) == []


def test_a_header_left_mid_write_reads_as_no_request_and_never_raises(tmp_path: Path) -> None:
    sup = Channel.create(str(tmp_path / "chan"), slots=1)
    sup.write_header(Header(ckpt_generation=1, ckpt_reason=3))  # "preempted"
    handle = client.Handle(Channel.open(sup.path), 0)
    try:
        assert handle.checkpoint_requested and handle.checkpoint_reason == "preempted"
        sup.words[2] += 1  # the supervisor stopped between its two sequence bumps
        with pytest.raises(TimeoutError):
            sup.read_header()  # what the rank's reads must not let escape
        assert handle.checkpoint_requested is False
        assert handle.checkpoint_reason is None
        assert handle.should_checkpoint(10) is False
        handle.committed(10)  # a save nobody is known to have asked for
        slot = sup.read_slot(0)
        assert slot is not None and (slot.ckpt_step, slot.ckpt_ack) == (10, 0)

        sup.words[2] += 1  # the header is consistent again: the request is still there
        assert handle.checkpoint_requested and handle.checkpoint_reason == "preempted"
        handle.committed(11)
        assert not handle.checkpoint_requested
        slot = sup.read_slot(0)
        assert slot is not None and (slot.ckpt_step, slot.ckpt_ack) == (11, 1)
    finally:
        handle.finish()
