"""Names and records of the checkpoint layout: what a step looks like in storage.

Plain data and parsing, no I/O. Under one root URL:

    root/step_000000000012/COMMITTED                 marker, written last, create-only
    root/step_000000000012/<attempt>/manifest.json   files with sizes and checksums, reason, ...
    root/step_000000000012/<attempt>/state.json      the JSON skeleton of the state
    root/step_000000000012/<attempt>/tensors-00000.safetensors
    root/step_000000000012.tmp-<attempt>/            local filesystems only: staging, renamed
    root/_ledger/...                                 reserved for the run ledger (see below)

Step numbers are zero-padded so that lexicographic order is numeric order in every listing.
Each save runs as a fresh `attempt`; the marker names the attempt that won, so files of a
zombie writer for the same step are never read (and are cleaned up later).

A step is committed iff its `COMMITTED` marker exists; it is sound iff the marker parses and
names the SHA-256 of the attempt's manifest, and the manifest parses. Every parse error of a
stored object raises `DamagedError` (a `CheckpointError`) saying which object is bad.
Beside the marker, `VERIFIED` and `DAMAGED` are the reader's small create-only records of a
full verification (`Record`, see `reader`); neither is ever an attempt name.

Confinement: every name that comes from a stored object and becomes part of a path is checked
here before it is used. An attempt is one lowercase segment (`check_attempt`); a file path of
a manifest is relative, '/'-separated parts of letters, digits and `_ . = -`, none empty,
'.' or '..', no backslash or NUL (`check_file_path`). A hostile manifest or marker therefore
cannot name anything outside its step's directory.

`_ledger/` (`LEDGER_PREFIX`) at the top of the root is reserved for the run ledger's small
create-only records: no step name can collide with it, the store and `supervise ckpt`
never list it, and nothing that tidies checkpoints deletes under it. Its keys are checked by
`check_ledger_key`: '/'-separated parts of letters, digits and `_ . = -`, none empty and none
starting with '.' (local disks use such names for records still being written).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.gang.options import LEDGER_PREFIX  # where the ledger lives

FORMAT = "supervise-checkpoint"
FORMAT_VERSION = 1
MARKER = "COMMITTED"
VERIFIED = "VERIFIED"
DAMAGED = "DAMAGED"
RECORDS = (VERIFIED, DAMAGED)
MANIFEST = "manifest.json"
SKELETON = "state.json"
PICKLES = "objects.pt"
STEP_DIGITS = 12
# Why a step was saved: a short label (`REASON_RULE`). The known ones are the channel's
# checkpoint requests (supervisor.child_contract.CHECKPOINT_REASONS; a test keeps the two
# equal), so a trainer can pass the reason supervise asked with straight through; any other
# label that follows the rule ("eval", "best-val") is as good.
REASONS = ("periodic", "degraded", "preempted", "requested", "final")
REASON_RULE = "1 to 32 of a-z 0-9 . _ -, starting with a letter or digit"
_REASON_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
KINDS = ("state", "dcp")

_STEP_RE = re.compile(rf"^step_(\d{{{STEP_DIGITS},}})$")
_STAGING_RE = re.compile(rf"^step_(\d{{{STEP_DIGITS},}})\.tmp-([0-9a-z-]+)$")
_KEY_PART_RE = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9_.=-]*")
_ATTEMPT_RE = re.compile(r"[0-9a-z][0-9a-z-]{0,127}")
_PATH_PART_RE = re.compile(r"[A-Za-z0-9_.=-]{1,255}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_XXH3_RE = re.compile(r"[0-9a-f]{32}")


class DamagedError(CheckpointError):
    """A stored object of a committed step is wrong: unparseable, inconsistent with the
    manifest, failing its checksum, of the wrong file type, or naming a path outside its
    step. Readers skip such a step and record it (`reader`); it never means that storage
    itself failed (that is `StorageError`)."""


def check_attempt(attempt: object, where: str) -> str:
    """`attempt` if it is one safe lowercase path segment (as `new_attempt` makes them)."""
    if not isinstance(attempt, str) or not _ATTEMPT_RE.fullmatch(attempt):
        raise DamagedError(f"{where}: attempt {attempt!r} is not a valid attempt name")
    return attempt


def check_file_path(path: object, where: str) -> str:
    """`path` if it is relative and stays inside the attempt directory (see the module
    docstring); `DamagedError` otherwise."""
    if (
        not isinstance(path, str)
        or not path
        or len(path) > 1024
        or not all(
            _PATH_PART_RE.fullmatch(part) and part not in (".", "..") for part in path.split("/")
        )
    ):
        raise DamagedError(f"{where}: file path {path!r} leaves the step directory or is invalid")
    return path


def _int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def step_dirname(step: int) -> str:
    return f"step_{step:0{STEP_DIGITS}d}"


def staging_dirname(step: int, attempt: str) -> str:
    return f"{step_dirname(step)}.tmp-{attempt}"


def parse_step_dirname(name: str) -> int | None:
    """The step of a final step directory name, or None for anything else."""
    match = _STEP_RE.match(name)
    return int(match.group(1)) if match else None


def parse_staging_dirname(name: str) -> tuple[int, str] | None:
    match = _STAGING_RE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def new_attempt() -> str:
    """Unique per save; sortable by start time so `ls` shows the newest attempt last."""
    return f"{time.time_ns():x}-{uuid.uuid4().hex[:12]}"


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint step must be a non-negative int, got {step!r}")
    if step >= 10**STEP_DIGITS:
        raise CheckpointError(f"checkpoint step {step} has more than {STEP_DIGITS} digits")
    return step


def check_reason(reason: object) -> str:
    """`reason` if it is a label by `REASON_RULE` (a known one or any other); otherwise
    `CheckpointError` naming the rule."""
    if not isinstance(reason, str) or not _REASON_RE.fullmatch(reason):
        raise CheckpointError(f"checkpoint reason must be {REASON_RULE}: got {reason!r}")
    return reason


def check_ledger_prefix(prefix: object) -> str:
    """`prefix` if it is `LEDGER_PREFIX` or a folder under it; ValueError otherwise."""
    if not isinstance(prefix, str):
        raise ValueError(f"a ledger key must be a str, got {prefix!r}")
    parts = prefix.split("/")
    if parts[0] != LEDGER_PREFIX or not all(_KEY_PART_RE.fullmatch(p) for p in parts[1:]):
        raise ValueError(
            f"ledger key {prefix!r} must be {LEDGER_PREFIX}/ followed by '/'-separated parts of "
            "letters, digits and _ . = - (not starting with '.')"
        )
    return prefix


def check_ledger_key(key: object) -> str:
    """`key` if it names an object under `LEDGER_PREFIX`; ValueError otherwise."""
    if check_ledger_prefix(key) == LEDGER_PREFIX:
        raise ValueError(f"ledger key {key!r} names the prefix itself, not an object under it")
    return str(key)


@dataclass(frozen=True)
class FileEntry:
    """One data file of an attempt: path relative to the attempt directory."""

    path: str
    size: int
    xxh3: str  # checksum.ALGORITHM hex digest


@dataclass(frozen=True)
class Manifest:
    """What a committed step holds. Readable without torch: `supervise ckpt ls` shows it."""

    step: int
    attempt: str
    reason: str
    kind: str
    wall_time: float
    world_size: int
    files: tuple[FileEntry, ...]
    tensor_bytes: int = 0
    tensor_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def same_content(self, other: Manifest) -> bool:
        """Identical data: same kind and the same files, sizes and checksums."""
        mine = sorted((f.path, f.size, f.xxh3) for f in self.files)
        theirs = sorted((f.path, f.size, f.xxh3) for f in other.files)
        return self.kind == other.kind and mine == theirs

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "version": FORMAT_VERSION, **asdict(self)}
        body["files"] = [asdict(f) for f in self.files]
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        """Parse and check a manifest: `DamagedError` for anything malformed, a file path
        that leaves the attempt directory, a repeated path, or a state save without its
        skeleton."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                raise ValueError("not a supervise checkpoint manifest")
            if body.get("version") != FORMAT_VERSION:
                raise ValueError(
                    f"format version {body.get('version')}, this supervise reads {FORMAT_VERSION}"
                )
            if not isinstance(body["files"], list):
                raise ValueError("files is not a list")
            files = []
            for f in body["files"]:
                if not isinstance(f, dict) or not isinstance(f["xxh3"], str):
                    raise ValueError(f"bad file entry {f!r}")
                if not _XXH3_RE.fullmatch(f["xxh3"]):
                    raise ValueError(f"bad checksum {f['xxh3']!r}")
                path = check_file_path(f["path"], where)
                files.append(FileEntry(path, _int(f["size"], "size"), f["xxh3"]))
            if len({f.path for f in files}) != len(files):
                raise ValueError("a file is listed twice")
            kind = str(body["kind"])
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            if kind == "state" and SKELETON not in {f.path for f in files}:
                raise ValueError(f"a state checkpoint without {SKELETON}")
            metadata, versions = body.get("metadata") or {}, body.get("versions") or {}
            if not isinstance(metadata, dict) or not isinstance(versions, dict):
                raise ValueError("metadata and versions must be objects")
            return cls(
                step=_int(body["step"], "step"),
                attempt=check_attempt(body["attempt"], where),
                reason=str(body["reason"]),
                kind=kind,
                wall_time=float(body["wall_time"]),
                world_size=_int(body["world_size"], "world_size", 1),
                files=tuple(files),
                tensor_bytes=_int(body.get("tensor_bytes", 0), "tensor_bytes"),
                tensor_count=_int(body.get("tensor_count", 0), "tensor_count"),
                metadata=dict(metadata),
                versions=dict(versions),
            )
        except DamagedError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as err:
            raise DamagedError(
                f"manifest {where} is unreadable ({err}); the step is corrupt"
            ) from err


@dataclass(frozen=True)
class Marker:
    """The commit record. Its existence is the commit; it pins the manifest by hash."""

    step: int
    attempt: str
    manifest_sha256: str

    @property
    def manifest_path(self) -> str:
        return f"{self.attempt}/{MANIFEST}"

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def for_manifest(cls, manifest: Manifest, raw: bytes) -> Marker:
        return cls(manifest.step, manifest.attempt, hashlib.sha256(raw).hexdigest())

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Marker:
        """Parse and check a marker: `DamagedError` for anything but a JSON object naming a
        valid step, attempt (one safe segment) and SHA-256."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                raise ValueError("not a supervise commit marker")
            sha = body["manifest_sha256"]
            if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
                raise ValueError(f"bad manifest hash {sha!r}")
            return cls(_int(body["step"], "step"), check_attempt(body["attempt"], where), sha)
        except DamagedError:
            raise
        except (ValueError, KeyError, TypeError) as err:
            raise DamagedError(f"commit marker {where} is unreadable ({err})") from err


@dataclass(frozen=True)
class Record:
    """`VERIFIED` or `DAMAGED` beside a step's marker: the outcome of one full verification
    of the manifest whose SHA-256 it names (a record naming another hash is ignored)."""

    kind: str  # VERIFIED or DAMAGED
    manifest_sha256: str
    wall_time: float
    problems: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        body = {"format": FORMAT, **asdict(self), "problems": list(self.problems)}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Record | None:
        """The record, or None for anything unparseable (then it is as if absent)."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                return None
            if body["kind"] not in RECORDS or not isinstance(body["manifest_sha256"], str):
                return None
            problems = tuple(str(p) for p in body.get("problems") or ())
            return cls(body["kind"], body["manifest_sha256"], float(body["wall_time"]), problems)
        except (ValueError, KeyError, TypeError):
            return None
