"""supervise needs no privilege: it runs as PID 1 under Pod Security "restricted".

The rendered pod asks for what the "restricted" profile requires
(https://kubernetes.io/docs/concepts/security/pod-security-standards/): a non-root user,
`allowPrivilegeEscalation: false` (no_new_privs), every capability dropped, and the
`RuntimeDefault` seccomp profile. Without a container runtime, this test builds the same
process the runtime would: a new PID namespace (supervise is PID 1), uid/gid 10001 with no
supplementary groups, empty capability sets including the bounding set (util-linux
`setpriv`), no_new_privs, and a seccomp filter that refuses what containerd's default
profile refuses a container without CAP_SYS_ADMIN and friends
(containerd `contrib/seccomp/seccomp_default.go`): mount, unshare, setns, ptrace, bpf,
keyctl, module and clock calls, `clone` with namespace flags, and `clone3` (ENOSYS, so libc
falls back to `clone`). The filter is a deny list of those, not the runtime's allow list.

Inside, the real `supervise` runs real training (examples/train.py with torch), receives
SIGTERM as the kubelet sends it, has the trainer checkpoint into a directory owned by that
user, and exits PREEMPTED; a plain child gets the SIGTERM forwarded. The child itself
records its credentials from /proc, so the test sees they were really dropped.

The interpreter must be reachable by uid 10001, as it is in an image. Where it lives under
a directory that user cannot enter (a pyenv under /root), only the mount namespace of the
run gets a world-searchable tmpfs over that directory with the interpreter's own tree
bound back in: the same files, nothing copied, nothing changed outside the run.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import supervisor

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples" / "train.py")
UID = GID = 10001
PREEMPTED = 85
SETPRIV, UNSHARE, MOUNT = (shutil.which(tool) for tool in ("setpriv", "unshare", "mount"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux credentials"),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,
        reason="dropping to uid 10001 and a PID namespace need root",
    ),
    pytest.mark.skipif(
        None in (SETPRIV, UNSHARE, MOUNT), reason="needs util-linux setpriv, unshare and mount"
    ),
    pytest.mark.skipif(
        platform.machine() != "x86_64", reason="the seccomp filter here uses x86_64 numbers"
    ),
]

# x86_64 syscall numbers (asm/unistd_64.h) that containerd's default profile allows only
# with a capability the restricted pod drops (SYS_ADMIN, SYS_PTRACE, SYS_MODULE, SYS_TIME,
# SYS_BOOT, SYS_CHROOT, SYS_PACCT, SYS_RAWIO, SYS_TTY_CONFIG, DAC_READ_SEARCH), or never.
DENIED = {
    "ptrace": 101, "vhangup": 153, "pivot_root": 155, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}  # fmt: skip
CLONE, CLONE3 = 56, 435
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACES = 0x7E020000

# Runs as uid 10001 after setpriv: installs the filter (allowed without privilege because
# no_new_privs is set), then execs the rest of argv with it in force.
SECCOMP_EXEC = f"""
import ctypes, errno, os, struct, sys
LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
op = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
prog = [op(LD, 0, 0, 4), op(JEQ, 1, 0, 0xC000003E), op(RET, 0, 0, ERRNO | errno.EPERM),
        op(LD, 0, 0, 0), op(JSET, 0, 1, 0x40000000), op(RET, 0, 0, ERRNO | errno.EPERM)]
for nr in {sorted(DENIED.values())}:
    prog += [op(JEQ, 0, 1, nr), op(RET, 0, 0, ERRNO | errno.EPERM)]
prog += [op(JEQ, 0, 1, {CLONE3}), op(RET, 0, 0, ERRNO | errno.ENOSYS)]
prog += [op(JEQ, 0, 3, {CLONE}), op(LD, 0, 0, 16), op(JSET, 0, 1, {CLONE_NAMESPACES}),
         op(RET, 0, 0, ERRNO | errno.EPERM), op(RET, 0, 0, ALLOW)]
code = ctypes.create_string_buffer(b"".join(prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog), ctypes.addressof(code))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
    raise OSError(ctypes.get_errno(), "seccomp filter refused")
os.execvp(sys.argv[1], sys.argv[1:])
"""

# The supervised child: records what it really runs with, then execs the real command in
# the same process (same pid, same credentials).
PROBE_EXEC = """
import ctypes, json, os, sys
def status(pid):
    return dict(line.split(":\\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
def refused(call):
    try:
        call()
    except OSError as err:
        return err.errno
    return 0
libc = ctypes.CDLL(None, use_errno=True)
def unshare_user():
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare")
record = {
    "self": status("self"),
    "pid1": status(1),
    "pid": os.getpid(),
    "exe": os.path.realpath("/proc/self/exe"),
    "version": sys.version,
    "setuid0": refused(lambda: os.setuid(0)),
    "unshare": refused(unshare_user),
    "chown": refused(lambda: os.chown(os.environ["HOME"], 0, 0)),
}
with open(os.path.join(os.environ["HOME"], "probe.json"), "w") as f:
    json.dump(record, f)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def _hidden_directories(paths: list[Path]) -> list[tuple[Path, set[str]]]:
    """Directories on the way to `paths` that uid 10001 cannot enter, shallowest first,
    each with the names under it that lead to a path."""
    hidden: dict[Path, set[str]] = {}
    for path in paths:
        parts = path.resolve().parts
        for depth in range(1, len(parts)):
            directory = Path(*parts[:depth])
            st = directory.stat()
            bit = (
                stat.S_IXUSR
                if st.st_uid == UID
                else stat.S_IXGRP
                if st.st_gid == GID
                else stat.S_IXOTH
            )
            if not st.st_mode & bit:
                hidden.setdefault(directory, set()).add(parts[depth])
    return sorted(hidden.items(), key=lambda item: len(item[0].parts))


def _reachable_script(keep: Path, paths: list[Path]) -> str:
    """Shell lines, run as root in the run's own mount namespace, that make `paths`
    reachable for uid 10001 (see the module docstring)."""
    lines = ["set -e"]
    for index, (directory, names) in enumerate(_hidden_directories(paths)):
        moves = [(directory / name, keep / f"{index}-{name}") for name in sorted(names)]
        make = {inner: "mkdir" if inner.is_dir() else "touch" for inner, _ in moves}
        for inner, spot in moves:
            lines += [f"{make[inner]} {q(spot)}", f"mount --bind {q(inner)} {q(spot)}"]
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {q(directory)}")
        for inner, spot in moves:
            lines += [f"{make[inner]} {q(inner)}", f"mount --move {q(spot)} {q(inner)}"]
    return "\n".join(lines)


def q(path: Path) -> str:
    return shlex.quote(str(path))


@pytest.fixture
def home() -> Iterator[Path]:
    """The pod's writable directory, owned by uid 10001 (as an emptyDir with fsGroup)."""
    path = Path(tempfile.mkdtemp(prefix="supervise-restricted-"))
    os.chown(path, UID, GID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def restricted(tmp_path: Path, home: Path, supervise_args: list[str], command: list[str]):
    """Start `supervise ARGS -- probe COMMAND` as PID 1 of a new PID namespace, as uid
    10001 with no capabilities, no_new_privs and the seccomp filter. Returns the Popen of
    `unshare` (its child is supervise) with stdout piped."""
    venv_bin = Path(sys.executable).parent
    needed = [Path(sys.executable).resolve(), Path(sys.base_prefix), Path(sys.prefix), ROOT]
    keep = tmp_path / "keep"
    keep.mkdir()
    drop = [
        SETPRIV,
        f"--reuid={UID}",
        f"--regid={GID}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
        sys.executable,
        "-c",
        SECCOMP_EXEC,
        str(venv_bin / "supervise"),
        "--termination-log",
        str(home / "term"),
        "--event-log",
        str(home / "events"),
        *supervise_args,
        "--",
        sys.executable,
        "-c",
        PROBE_EXEC,
        *command,
    ]
    script = _reachable_script(keep, needed) + "\nexec " + shlex.join(drop)
    env = {
        "PATH": f"{venv_bin}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
    }
    return subprocess.Popen(
        [UNSHARE, "--pid", "--fork", "--mount-proc", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=home,
        env=env,
    )


def supervise_pid(proc: subprocess.Popen, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.01)  # unshare forks its child right away: poll, bounded
    raise AssertionError("unshare started no child")


def wait_for_line(proc: subprocess.Popen, prefix: bytes, timeout: float = 60) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if not line:
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"exit {proc.returncode} before {prefix!r}: {seen!r} {err!r}")
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"no line starting {prefix!r} within {timeout} s: {seen!r}")


def assert_unprivileged(home: Path) -> dict:
    """The child's own record: uid 10001, no capability, no_new_privs, the filter, and the
    venv's own interpreter (not a fallback); PID 1 (supervise) likewise."""
    record = json.loads((home / "probe.json").read_text())
    for who in ("self", "pid1"):
        status = record[who]
        assert status["Uid"].split() == [str(UID)] * 4, (who, status["Uid"])
        assert status["Gid"].split() == [str(GID)] * 4, (who, status["Gid"])
        assert status["Groups"].split() == [], (who, status["Groups"])
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (who, caps, status[caps])
        assert status["NoNewPrivs"] == "1", who
        assert status["Seccomp"] == "2", who  # a filter is in force
    assert record["pid1"]["Name"] == "supervise"
    assert record["self"]["PPid"] == "1"  # supervise's own child
    assert record["exe"] == str(Path(sys.executable).resolve())
    assert record["version"] == sys.version
    # What the restrictions refuse, refused: no way back to root, no new user namespace
    # (seccomp), no giving away a file.
    assert record["setuid0"] == record["unshare"] == record["chown"] == 1  # EPERM
    return record


def test_training_under_restricted_as_pid1_checkpoints_on_sigterm(tmp_path, home) -> None:
    ckpt = home / "ckpt"
    train = [sys.executable, TRAIN, "--steps", "100000", "--step-time", "0.002"]
    proc = restricted(
        tmp_path,
        home,
        ["--checkpoint-dir", str(ckpt), "--grace-period", "20"],
        [*train, "--checkpoint-every", "1000000"],
    )
    try:
        wait_for_line(proc, b"step    50")
        os.kill(supervise_pid(proc), signal.SIGTERM)  # as the kubelet signals PID 1
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED, (out, err)
    assert_unprivileged(home)

    message = json.loads((home / "term").read_text())
    assert message["name"] == "PREEMPTED"
    step = next(e for e in message["evidence"] if e["kind"] == "committed")["step"]
    owners = {p: p.stat().st_uid for p in [ckpt, *ckpt.rglob("*")]}
    assert set(owners.values()) == {UID}, owners  # the unprivileged trainer wrote it all
    store = supervisor.CheckpointStore(str(ckpt))
    assert store.latest() == step >= 50
    assert store.manifest(step).reason == "preempted"
    assert store.load(step)["step"] == step


def test_a_plain_child_gets_the_sigterm_forwarded_under_restricted(tmp_path, home) -> None:
    child = 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.02; done'
    proc = restricted(tmp_path, home, [], ["sh", "-c", child])
    try:
        wait_for_line(proc, b"ready")
        os.kill(supervise_pid(proc), signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED, (out, err)
    assert b"got-term" in out
    assert_unprivileged(home)
    events = [json.loads(line) for line in (home / "events").read_text().splitlines()]
    stopping = next(e for e in events if e["event"] == "stopping")
    assert stopping["signal"] == "SIGTERM"  # sent on to the child, which trapped it
    exited = [e["finding"] for e in events if e["event"] == "finding"]
    assert {"kind": "exit", "exitStatus": 0}.items() <= exited[-1].items(), exited
    assert events[-1]["event"] == "exit" and events[-1]["exitCode"] == PREEMPTED
