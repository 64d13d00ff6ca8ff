"""Damaged and hostile checkpoints: every reader falls back to the same verified step.

Real steps are committed with the real `CheckpointStore`, then the newest one is damaged in
one way per case (a table below): the marker, the manifest (re-signed so the marker's hash
matches, as an attacker who can write the bucket would), the tensor file headers (re-signed
too, so only the structure checks can catch them), the bytes, and on a local disk the file
types (FIFOs, devices, symlinks). For each case, on a local directory and on memory://,
`latest()`, `load()`, `load(step=N)`, the resume step supervise computes, `supervise ckpt
verify` (newest, `--step`, `--all`) and `supervise ckpt prune` must agree on the older
step; while they run, no file outside the checkpoint root (or the interpreter's own) is
opened, address space may grow by at most `MEMORY_HEADROOM`, and nothing may block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import struct
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from supervisor import cli
from supervisor.core.errors import CheckpointError
from supervisor.run.supervise import _resolver
from supervisor.storage import CheckpointStore, checksum, layout
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader

ROOT = Path(__file__).resolve().parents[2]
NEWEST, GOOD = 4, 3
MEMORY_HEADROOM = 3 << 30  # a lying header claims 32 GiB and more
TENSOR = "tensors-00000.safetensors"


def state(step: int) -> dict[str, Any]:
    """The same shapes every step, different values: files of equal size can be swapped."""
    return {
        "w": torch.full((64,), float(step)),
        "b": torch.arange(8, dtype=torch.int64) + step,
        "h": torch.ones(3, dtype=torch.float16) * step,
        "step": step,
    }


# The tampering kit ----------------------------------------------------------------------


@dataclass
class Tamper:
    """Write access to a committed checkpoint root, as an attacker or a broken disk has."""

    url: str
    outside: Path  # a directory beside the root: nothing in it may ever be opened

    def __post_init__(self) -> None:
        self.storage = Storage(self.url)
        self.fs = self.storage.fs
        self.reader = Reader(self.storage)
        self.local = not self.url.startswith("memory://")

    def step_dir(self, step: int = NEWEST) -> str:
        return self.reader.step_dir(step)

    def marker_path(self, step: int = NEWEST) -> str:
        return f"{self.step_dir(step)}/{layout.MARKER}"

    def attempt(self, step: int = NEWEST) -> str:
        return json.loads(self.fs.cat_file(self.marker_path(step)))["attempt"]

    def file(self, name: str, step: int = NEWEST) -> str:
        return f"{self.step_dir(step)}/{self.attempt(step)}/{name}"

    def read(self, name: str, step: int = NEWEST) -> bytes:
        return self.fs.cat_file(self.file(name, step))

    def write(self, path: str, data: bytes) -> None:
        if self.local:
            os.unlink(path)  # never through a link that may have been planted
        self.fs.pipe_file(path, data)

    def manifest(self, step: int = NEWEST) -> dict[str, Any]:
        return json.loads(self.read(layout.MANIFEST, step))

    def resign(self, manifest: dict[str, Any] | bytes, files: dict[str, bytes] = {}) -> None:  # noqa: B006
        """Replace files, fix their sizes and checksums in the manifest, write the manifest
        and a marker naming its hash: everything matches except what the case broke."""
        for name, data in files.items():
            self.write(self.file(name), data)
        if isinstance(manifest, dict):
            for entry in manifest["files"]:
                if entry["path"] in files:
                    entry["size"] = len(files[entry["path"]])
                    entry["xxh3"] = checksum.of(files[entry["path"]])
            raw = json.dumps(manifest).encode()
        else:
            raw = manifest
        self.write(self.file(layout.MANIFEST), raw)
        self.set_marker(manifest_sha256=hashlib.sha256(raw).hexdigest())

    def set_marker(self, **fields: Any) -> None:
        body = json.loads(self.fs.cat_file(self.marker_path()))
        body.update(fields)
        self.write(self.marker_path(), json.dumps(body).encode())

    def header(self, mutate: Callable[[dict[str, Any]], Any]) -> bytes:
        """The newest step's tensor file with its JSON header changed by `mutate`."""
        raw = self.read(TENSOR)
        (length,) = struct.unpack_from("<Q", raw)
        header = json.loads(raw[8 : 8 + length])
        header = mutate(header) or header
        encoded = json.dumps(header).encode()
        encoded += b" " * (-(8 + len(encoded)) % 8)
        return struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :]

    def replace_special(self, name: str, make: Callable[[str], None]) -> None:
        path = self.file(name)
        os.unlink(path)
        make(path)


def flip(data: bytes, at: int = -1) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x40
    return bytes(out)


def secret(t: Tamper, like: bytes) -> Path:
    """A file outside the root that a confined reader must never open."""
    path = t.outside / f"secret-{uuid.uuid4().hex[:6]}"
    path.write_bytes(like)
    return path


def manifest_with(t: Tamper, path: str, data: bytes) -> dict[str, Any]:
    body = t.manifest()
    entry = next(e for e in body["files"] if e["path"] == TENSOR)
    entry.update(path=path, size=len(data), xxh3=checksum.of(data))
    return body


def first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return header[min(k for k in header if k != "__metadata__")]


def dotdot(t: Tamper) -> None:
    data = t.read(TENSOR)
    target = secret(t, data)
    relative = os.path.relpath(target, t.file(""))
    t.resign(manifest_with(t, relative, data))


def absolute(t: Tamper) -> None:
    data = t.read(TENSOR)
    t.resign(manifest_with(t, str(secret(t, data)), data))


def link_outside(t: Tamper) -> None:
    target = secret(t, t.read(TENSOR))  # the very bytes: only the link type gives it away
    t.replace_special(TENSOR, lambda p: os.symlink(target, p))


def link_attempt_outside(t: Tamper) -> None:
    """The whole attempt directory moved outside and linked back: same bytes, elsewhere."""
    attempt = t.file("").rstrip("/")
    moved = t.outside / "attempt"
    os.rename(attempt, moved)
    os.symlink(moved, attempt)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def giant_empty(h: dict[str, Any]) -> None:
    h["9"] = {"dtype": "F32", "shape": [1 << 33], "data_offsets": [0, 0]}


def giant_claim(h: dict[str, Any]) -> None:
    first_tensor(h)["shape"] = [1 << 31, 1 << 31]


def offsets_past_end(h: dict[str, Any]) -> None:
    for info in (v for k, v in h.items() if k != "__metadata__"):
        info["data_offsets"] = [info["data_offsets"][0] + 8, info["data_offsets"][1] + 8]


@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[Tamper], None]
    local_only: bool = False


CASES = [
    # The marker
    Damage("marker empty", lambda t: t.write(t.marker_path(), b"")),
    Damage("marker garbage", lambda t: t.write(t.marker_path(), b"\x00\xff{not json")),
    Damage("marker a JSON list", lambda t: t.write(t.marker_path(), b"[1, 2]")),
    Damage("marker a JSON string", lambda t: t.write(t.marker_path(), b'"COMMITTED"')),
    Damage("marker null", lambda t: t.write(t.marker_path(), b"null")),
    Damage("marker huge", lambda t: t.write(t.marker_path(), b" " * (8 << 20) + b"{}")),
    Damage("marker names a missing manifest", lambda t: t.set_marker(attempt="0-000000000000")),
    Damage("marker names another step", lambda t: t.set_marker(step=GOOD)),
    Damage("marker hash wrong", lambda t: t.set_marker(manifest_sha256="0" * 64)),
    Damage(
        "marker attempt with ..",
        lambda t: t.set_marker(
            attempt=f"../{layout.step_dirname(GOOD)}/{t.attempt(GOOD)}",
            manifest_sha256=hashlib.sha256(t.read(layout.MANIFEST, GOOD)).hexdigest(),
        ),
    ),
    Damage("marker attempt absolute", lambda t: t.set_marker(attempt=str(t.outside))),
    # The manifest
    Damage("manifest missing", lambda t: t.fs.rm_file(t.file(layout.MANIFEST))),
    Damage("manifest garbage, re-signed", lambda t: t.resign(b"\x00garbage")),
    Damage("manifest a list, re-signed", lambda t: t.resign(b"[]")),
    Damage("manifest path with .., re-signed", dotdot),
    Damage("manifest absolute path, re-signed", absolute),
    Damage(
        "manifest path with a backslash, re-signed",
        lambda t: t.resign(manifest_with(t, "..\\..\\x", t.read(TENSOR))),
    ),
    Damage(
        "manifest path with NUL, re-signed",
        lambda t: t.resign(manifest_with(t, "tensors\x00.safetensors", t.read(TENSOR))),
    ),
    Damage(
        "manifest lists a file twice, re-signed",
        lambda t: t.resign({**(m := t.manifest()), "files": m["files"] + m["files"][-1:]}),
    ),
    Damage(
        "manifest size lies, re-signed",
        lambda t: t.resign(
            {
                **(m := t.manifest()),
                "files": [{**f, "size": f["size"] + 8} for f in m["files"]],
            }
        ),
    ),
    Damage(
        "manifest tensor count lies, re-signed",
        lambda t: t.resign({**t.manifest(), "tensor_count": 7}),
    ),
    Damage(
        "manifest without the skeleton, re-signed",
        lambda t: t.resign(
            {
                **(m := t.manifest()),
                "files": [f for f in m["files"] if f["path"] != layout.SKELETON],
            }
        ),
    ),
    Damage("manifest a FIFO", lambda t: t.replace_special(layout.MANIFEST, os.mkfifo), True),
    # The bytes
    Damage("tensor byte flipped", lambda t: t.write(t.file(TENSOR), flip(t.read(TENSOR)))),
    Damage(
        "skeleton byte flipped",
        lambda t: t.write(t.file(layout.SKELETON), flip(t.read(layout.SKELETON), 2)),
    ),
    Damage("tensor file truncated", lambda t: t.write(t.file(TENSOR), t.read(TENSOR)[:-5])),
    Damage("tensor file longer", lambda t: t.write(t.file(TENSOR), t.read(TENSOR) + b"\0" * 8)),
    Damage("tensor file missing", lambda t: t.fs.rm_file(t.file(TENSOR))),
    Damage(
        "tensor file swapped with the older step's",
        lambda t: t.write(t.file(TENSOR), t.read(TENSOR, GOOD)),
    ),
    # Headers that lie, with the manifest re-signed so every checksum matches
    Damage(
        "header: giant empty tensor",
        lambda t: t.resign(t.manifest(), {TENSOR: t.header(giant_empty)}),
    ),
    Damage(
        "header: giant shape", lambda t: t.resign(t.manifest(), {TENSOR: t.header(giant_claim)})
    ),
    Damage(
        "header: dtype lies",
        lambda t: t.resign(
            t.manifest(),
            {TENSOR: t.header(lambda h: first_tensor(h).update(dtype="F64"))},
        ),
    ),
    Damage(
        "header: unknown dtype",
        lambda t: t.resign(
            t.manifest(), {TENSOR: t.header(lambda h: first_tensor(h).update(dtype="Q7"))}
        ),
    ),
    Damage(
        "header: offsets past the end",
        lambda t: t.resign(t.manifest(), {TENSOR: t.header(offsets_past_end)}),
    ),
    Damage(
        "header: negative dimension",
        lambda t: t.resign(
            t.manifest(), {TENSOR: t.header(lambda h: first_tensor(h).update(shape=[-1]))}
        ),
    ),
    Damage(
        "header: offsets not ints",
        lambda t: t.resign(
            t.manifest(),
            {TENSOR: t.header(lambda h: first_tensor(h).update(data_offsets=["0", None]))},
        ),
    ),
    Damage(
        "header: a JSON list",
        lambda t: t.resign(t.manifest(), {TENSOR: t.header(lambda h: [h])}),
    ),
    Damage(
        "header: key is not a tensor index",
        lambda t: t.resign(
            t.manifest(),
            {TENSOR: t.header(lambda h: {("x" if k == "0" else k): v for k, v in h.items()})},
        ),
    ),
    Damage(
        "header: length claims a terabyte",
        lambda t: t.resign(t.manifest(), {TENSOR: struct.pack("<Q", 1 << 40) + t.read(TENSOR)[8:]}),
    ),
    Damage(
        "header: not JSON",
        lambda t: t.resign(
            t.manifest(), {TENSOR: t.read(TENSOR)[:8] + b"\xff" + t.read(TENSOR)[9:]}
        ),
    ),
    # The skeleton, re-signed
    Damage(
        "skeleton refers to a missing tensor",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b'{"w": {"$tensor": 99}}'}),
    ),
    Damage(
        "skeleton not JSON",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b"{'w': 1"}),
    ),
    Damage(
        "skeleton nested beyond recursion",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: nested(200_000)}),
    ),
    Damage(
        "skeleton bytes not base64",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b'{"x": {"$bytes": "%%%"}}'}),
    ),
    Damage(
        "skeleton float of the wrong length",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b'{"x": {"$float": "00ff"}}'}),
    ),
    Damage(
        "skeleton array bytes do not fit the shape",
        lambda t: t.resign(
            t.manifest(), {layout.SKELETON: b'{"x": {"$ndarray": ["<f8", [1000000], "AAAA"]}}'}
        ),
    ),
    Damage(
        "skeleton pair list that is no pair list",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b'{"x": {"$dict": [[1, 2, 3]]}}'}),
    ),
    Damage(
        "skeleton refers to pickles that are not there",
        lambda t: t.resign(t.manifest(), {layout.SKELETON: b'{"x": {"$pickle": 0}}'}),
    ),
    # File types (local disks)
    Damage("tensor file a FIFO", lambda t: t.replace_special(TENSOR, os.mkfifo), True),
    Damage(
        "tensor file links to /dev/zero",
        lambda t: t.replace_special(TENSOR, lambda p: os.symlink("/dev/zero", p)),
        True,
    ),
    Damage(
        "skeleton links to /dev/zero",
        lambda t: t.replace_special(layout.SKELETON, lambda p: os.symlink("/dev/zero", p)),
        True,
    ),
    Damage("skeleton a FIFO", lambda t: t.replace_special(layout.SKELETON, os.mkfifo), True),
    Damage(
        "marker a FIFO", lambda t: (os.unlink(t.marker_path()), os.mkfifo(t.marker_path())), True
    ),
    Damage("tensor file a directory", lambda t: t.replace_special(TENSOR, os.mkdir), True),
    Damage("tensor file links outside the root", link_outside, True),
    Damage("attempt directory links outside the root", link_attempt_outside, True),
]


# Guards while the readers run -------------------------------------------------------------


class OpenAudit:
    """Every path opened while active (an audit hook lives for the whole process)."""

    active: list[str] | None = None

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.active is not None and event == "open" and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            cls.active.append(os.path.normpath(path))


sys.addaudithook(OpenAudit.hook)
PLACES = {sys.prefix, sys.base_prefix, str(ROOT), "/usr", "/lib", "/proc", "/sys", "/etc"}
SYSTEM = (*(os.path.normpath(p) for p in PLACES), "/dev/null", "/dev/urandom")


@contextlib.contextmanager
def confined(root: str) -> Iterator[None]:
    """Fail if a path outside `root` and the interpreter's own places is opened."""
    opened: list[str] = []
    OpenAudit.active = opened
    try:
        yield
    finally:
        OpenAudit.active = None
    allowed = (os.path.normpath(root), *SYSTEM)
    outside = [
        p
        for p in opened
        if os.path.isabs(p) and not any(p == a or p.startswith(a + os.sep) for a in allowed)
    ]
    assert not outside, f"opened outside the checkpoint root: {outside}"


@contextlib.contextmanager
def bounded(seconds: int = 60, headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """No blocking (SIGALRM) and no allocation of what a lying header claims (RLIMIT_AS)."""

    def expire(*_: Any) -> None:
        raise TimeoutError("a reader blocked")

    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, expire)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def ckpt(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`supervise ckpt ...` through the real entry point, in this process (memory://)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.main(["ckpt", *args])
    return int(done.value.code or 0), capsys.readouterr().out


# The table ---------------------------------------------------------------------------------


@pytest.fixture(params=["local", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://damage-{uuid.uuid4().hex[:12]}"
    return str(tmp_path / "ckpt")


def commit_steps(url: str) -> None:
    with CheckpointStore(url, keep_last=10) as store:
        for step in range(1, NEWEST + 1):
            store.save(step, state(step))


def assert_loaded(loaded: Any, step: int) -> None:
    want = state(step)
    assert loaded["step"] == step
    for key in ("w", "b", "h"):
        assert torch.equal(loaded[key], want[key]), key


@pytest.mark.parametrize("damage", CASES, ids=[c.name for c in CASES])
def test_every_reader_falls_back_to_the_same_verified_step(
    damage: Damage, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if damage.local_only and url.startswith("memory://"):
        pytest.skip("file types exist on local disks only")
    outside = tmp_path / "outside"
    outside.mkdir()
    commit_steps(url)
    damage.apply(Tamper(url, outside))
    root = url if not url.startswith("memory://") else str(tmp_path / "nothing-local")
    with confined(root), bounded():
        # The supervisor's resume step: the very function supervise calls, torch-free.
        assert _resolver(url)() == GOOD
        store = CheckpointStore(url, keep_last=10)
        assert store.latest() == GOOD
        assert NEWEST in store.steps()  # still committed, just not loadable
        with pytest.warns(UserWarning, match=f"skipping checkpoint step {NEWEST}"):
            assert_loaded(store.load(), GOOD)
        with pytest.raises(CheckpointError, match=rf"damaged.*newest step that loads is {GOOD}"):
            store.load(NEWEST)
        assert_loaded(store.load(GOOD), GOOD)
        check = store.verify(NEWEST)
        assert check.found and not check.ok and check.problems
        assert store.verify(GOOD).ok
        # A fresh reader (another process, a restarted pod) agrees, from the records.
        assert CheckpointStore(url).latest() == GOOD
        code, out = ckpt(capsys, "verify", url)
        assert code == 1 and f"step {NEWEST}: CORRUPT; the newest step that loads is {GOOD}" in out
        code, out = ckpt(capsys, "verify", url, "--step", str(GOOD))
        assert (code, out.split(":")[0]) == (0, f"step {GOOD}")
        code, out = ckpt(capsys, "verify", url, "--all")
        lines = out.splitlines()
        assert code == 1 and [line.split(":")[0] for line in lines[:NEWEST]] == [
            f"step {s}" for s in range(1, NEWEST + 1)
        ]
        assert [(": valid (" in line) for line in lines[:NEWEST]] == [True, True, True, False]
        code, out = ckpt(capsys, "ls", url)
        rows = {r.split()[0]: r.split()[1] for r in out.splitlines()[1:]}
        assert rows == {"1": "committed", "2": "committed", "3": "committed", "4": "corrupt"}
        code, out = ckpt(capsys, "prune", url, "--keep", "2")
        assert code == 0 and out.splitlines() == ["deleted step 1"]
        after = CheckpointStore(url)
        assert after.steps() == [2, 3, 4]  # the damaged newer step is left for a person
        assert after.latest() == GOOD
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_loaded(after.load(), GOOD)


def test_prune_never_deletes_the_only_step_that_loads(
    url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    commit_steps(url)
    t = Tamper(url, tmp_path)
    for step in (NEWEST, GOOD):
        t.write(t.file(TENSOR, step), flip(t.read(TENSOR, step)))
    # Only steps 1 and 2 load: keep 2 verified steps means deleting nothing.
    code, out = ckpt(capsys, "prune", url, "--keep", "2")
    assert (code, out.strip()) == (0, "nothing to delete")
    t.write(t.file(TENSOR, 1), flip(t.read(TENSOR, 1)))
    code, out = ckpt(capsys, "prune", url, "--keep", "2")
    assert (code, out.strip()) == (0, "nothing to delete")  # step 2 is the only one that loads
    store = CheckpointStore(url, keep_last=2)
    assert store.prune() == []
    assert store.latest() == 2
    # The store's own retention after a commit counts verified steps too.
    store.save(5, state(5))
    store.close()
    # Verified now: 5 and 2. Older than those, the damaged step 1 goes; 3 and 4 stay.
    assert store.steps() == [2, 3, 4, 5] and store.latest() == 5
    store.save(6, state(6))
    store.close()
    assert store.steps() == [5, 6]  # two verified steps now exist: the rest may go


def test_verify_says_pruned_or_not_committed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with CheckpointStore(url, keep_last=2) as store:
        for step in range(1, 5):
            store.save(step, state(step))
    code, out = ckpt(capsys, "verify", url, "--step", "1")
    assert (code, out.strip()) == (2, "step 1: pruned (the oldest kept step is 3)")
    code, out = ckpt(capsys, "verify", url, "--step", "9")
    assert (code, out.strip()) == (2, f"step 9: not committed under {url}")
    code, out = ckpt(capsys, "verify", url, "--all")
    assert code == 0 and [line.split(":")[0] for line in out.splitlines()] == ["step 3", "step 4"]


def test_bytes_that_rot_after_verification_are_caught_by_load_then_everyone_agrees(
    url: str, tmp_path: Path
) -> None:
    commit_steps(url)
    assert CheckpointStore(url).latest() == NEWEST  # verified by reading, and recorded
    t = Tamper(url, tmp_path)
    t.write(t.file(TENSOR), flip(t.read(TENSOR)))
    assert _resolver(url)() == NEWEST  # the documented edge: the record is trusted
    with pytest.warns(UserWarning, match=f"skipping checkpoint step {NEWEST}"):
        assert_loaded(CheckpointStore(url).load(), GOOD)
    assert _resolver(url)() == GOOD
    assert CheckpointStore(url).latest() == GOOD
    assert not CheckpointStore(url).verify(NEWEST).ok


def test_the_ledger_and_other_names_stay_invisible(url: str, tmp_path: Path) -> None:
    commit_steps(url)
    storage = Storage(url)
    storage.create_object("_ledger/verdicts/pod-0.json", b"{}")
    storage.fs.makedirs(storage.path("step_banana"), exist_ok=True)
    storage.fs.pipe_file(storage.path("step_banana", layout.MARKER), b"")
    storage.fs.pipe_file(storage.path("notes.txt"), b"hello")
    store = CheckpointStore(url, keep_last=2)
    assert store.steps() == [1, 2, 3, 4] and store.latest() == NEWEST
    assert store.prune() == [1, 2]
    assert storage.list_objects() == ["_ledger/verdicts/pod-0.json"]
    assert storage.fs.cat_file(storage.path("notes.txt")) == b"hello"


TRAINER = """
import os, sys, warnings
import supervisor
warnings.simplefilter("ignore")
store = supervisor.CheckpointStore()
loaded = store.load()
print("RESUME", os.environ.get("SUPERVISE_RESUME_STEP"), "LOADED", loaded["step"], flush=True)
"""


@pytest.mark.parametrize(
    "damage",
    [
        c
        for c in CASES
        if c.name
        in {
            "marker empty",
            "tensor byte flipped",
            "header: giant empty tensor",
            "manifest path with .., re-signed",
            "tensor file a FIFO",
            "skeleton links to /dev/zero",
        }
    ],
    ids=lambda c: c.name,
)
def test_supervise_tells_the_trainer_the_step_its_load_returns(
    damage: Damage, supervise, tmp_path: Path
) -> None:
    url = str(tmp_path / "ckpt")
    outside = tmp_path / "outside"
    outside.mkdir()
    commit_steps(url)
    damage.apply(Tamper(url, outside))
    result = supervise("--checkpoint-dir", url, "--", sys.executable, "-c", TRAINER, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["RESUME", str(GOOD), "LOADED", str(GOOD)]
    import subprocess

    from tests.conftest import SUPERVISE

    verify = subprocess.run(
        [SUPERVISE, "ckpt", "verify", url], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 1 and f"newest step that loads is {GOOD}" in verify.stdout


def test_the_resume_step_never_imports_torch(tmp_path: Path) -> None:
    import subprocess

    url = str(tmp_path / "ckpt")
    commit_steps(url)
    t = Tamper(url, tmp_path)
    t.write(t.file(TENSOR), flip(t.read(TENSOR)))
    code = (
        "import json, sys\n"
        "from supervisor.run.supervise import _resolver\n"
        f"step = _resolver({url!r})()\n"
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))\n"
        "print(json.dumps([step, mods]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout) == [GOOD, []]
