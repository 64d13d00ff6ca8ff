"""Reading what is committed, without torch: listing, the latest verified step, verification.

The supervisor process calls these at start-up (and before each restart) to decide where a
run resumes, so this module imports neither torch nor numpy. All calls block on storage I/O
in the calling thread. Nothing here raises for a damaged step; `StorageError` means storage
itself failed.

- `steps()` lists committed steps: those whose `COMMITTED` marker exists, readable or not.
  Staging directories, steps without a marker and every other name (the run ledger's
  `_ledger/`) are invisible here.
- `manifest(step)` reads the marker and the manifest and checks the manifest against the
  hash the marker pins; a missing marker raises `CheckpointError`, anything wrong with
  either object `DamagedError` (see `layout`: file paths and the attempt are confined to
  the step's directory before anything is opened).
- `assess(step)` is the one verdict every reader uses: a step is *verified* when its marker
  and manifest check out, every file exists with the recorded size, and a full
  verification has passed: every byte read against its checksum (XXH3-128), every tensor
  file header checked against the manifest's sizes (dtype, shape and offsets tile the
  file exactly), the tensor indices are exactly 0..tensor_count-1, and the skeleton is
  JSON whose every tagged value `codec.decode` can decode, referencing only those tensors.
- `latest()` is the newest verified step. `CheckpointStore.load()` walks the same steps in
  the same order with the same verdicts, so it loads the step `latest()` names, and
  supervise's resume step is this very call.
- `verify(step)` always reads every byte again (`supervise ckpt verify`).

Cheap by recording: a full verification reads every byte once per step, not once per call.
Its outcome is kept in memory per (step, manifest hash) and written beside the marker as a
small create-only object, `VERIFIED` or `DAMAGED` (`layout.Record`, naming the manifest's
SHA-256; a record naming another hash is ignored). Writing it is best effort: on a
read-only store each new `Reader` verifies again. A step this process just committed
counts as verified in this process (`trust`), since its checksums were computed from the
bytes written; it is not recorded, so the next process (a restarted pod) reads it once.
`DAMAGED` wins over `VERIFIED` and is never removed by supervise: once a step is found
damaged, every later reader skips it without reading it (delete `DAMAGED` by hand to have
it checked again). Nothing here deletes anything.

The edge: bytes that rot after their step was recorded verified are not re-read by
`latest()`. `load()` reads (and checks) every byte anyway, so it detects the rot, records
`DAMAGED` and falls back; from then on `latest()`, `load()`, supervise's resume step and
`supervise ckpt` agree again. supervise's resume step can name that step once before a
`load()` finds it out; the trainer's `load()` then returns the older step.

It never trusts names or modification times: Lightning's `ckpt_path="last"` picks the file
modified last (Lightning-AI/pytorch-lightning#12816), and its saves are not atomic
(#19970), so the newest file can be a torn one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import checksum, codec, layout, tensorfile
from supervisor.storage.backend import Storage
from supervisor.storage.layout import DamagedError

VERIFY_CHUNK = 8 << 20
MARKER_LIMIT = 64 << 10  # a marker is ~200 bytes; a longer one is damage, not read whole
RECORD_LIMIT = 64 << 10
MANIFEST_LIMIT = 256 << 20  # a DCP save of many ranks lists many files
SKELETON_DEPTH = 10_000


@dataclass
class Verification:
    """The outcome of `assess`/`verify`: `ok` is False with `problems` naming each bad
    object. `found` is False when the step is not committed. `recorded` is True when the
    verdict came from a record or this process's memory rather than from reading bytes."""

    step: int
    found: bool
    problems: list[str] = field(default_factory=list)
    bytes_checked: int = 0
    manifest: layout.Manifest | None = None
    recorded: bool = False
    manifest_sha256: str | None = None  # the hash the marker pins, once it parsed

    @property
    def ok(self) -> bool:
        return self.found and not self.problems


class Reader:
    """Reads one checkpoint root. Safe to share between the training thread and the
    store's background thread (the memory of verdicts is a dict of immutable values)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # (step, manifest sha256) -> problems; () means verified.
        self._verdicts: dict[tuple[int, str], tuple[str, ...]] = {}

    def step_dir(self, step: int) -> str:
        return self.storage.path(layout.step_dirname(step))

    def steps(self) -> list[int]:
        found = []
        for name in self.storage.names():
            step = layout.parse_step_dirname(name)
            if step is not None and self._marker_exists(step):
                found.append(step)
        return sorted(found)

    def _marker_exists(self, step: int) -> bool:
        try:
            return self._marker_raw(step) is not None
        except DamagedError:
            return True  # there, but not a readable file: committed and damaged

    def _marker_raw(self, step: int) -> bytes | None:
        return self.storage.read(f"{self.step_dir(step)}/{layout.MARKER}", MARKER_LIMIT)

    def marker(self, step: int) -> layout.Marker | None:
        """The parsed marker, None if there is none; `DamagedError` if it is unreadable."""
        raw = self._marker_raw(step)
        where = f"{self.step_dir(step)}/{layout.MARKER}"
        if raw is None:
            return None
        marker = layout.Marker.from_json(raw, where)
        if marker.step != step:
            raise DamagedError(f"commit marker {where} names step {marker.step}")
        return marker

    def manifest(self, step: int) -> layout.Manifest:
        marker = self.marker(step)
        if marker is None:
            raise CheckpointError(f"step {step} is not committed under {self.storage.url}")
        return self._pinned_manifest(step, marker)

    def _pinned_manifest(self, step: int, marker: layout.Marker) -> layout.Manifest:
        where = f"{self.step_dir(step)}/{marker.manifest_path}"
        raw = self.storage.read(where, MANIFEST_LIMIT)
        if raw is None:
            raise DamagedError(f"step {step}: manifest {where} is missing; the step is corrupt")
        if hashlib.sha256(raw).hexdigest() != marker.manifest_sha256:
            raise DamagedError(f"step {step}: manifest {where} does not match its commit marker")
        manifest = layout.Manifest.from_json(raw, where)
        if manifest.step != step or manifest.attempt != marker.attempt:
            raise DamagedError(f"step {step}: manifest {where} names another step or attempt")
        return manifest

    def attempt_dir(self, manifest: layout.Manifest) -> str:
        return f"{self.step_dir(manifest.step)}/{layout.check_attempt(manifest.attempt, '')}"

    def shallow_problems(self, manifest: layout.Manifest) -> list[str]:
        """Missing or wrongly sized files, from one listing. On local filesystems anything
        but a regular file (a FIFO, a device, a symlink to one) counts as missing."""
        sizes = self.storage.sizes(self.attempt_dir(manifest))
        problems = []
        for entry in manifest.files:
            size = sizes.get(entry.path)
            if size is None:
                # (on local filesystems: or not a regular file)
                problems.append(f"{entry.path} is missing; step {manifest.step} is corrupt")
            elif size != entry.size:
                problems.append(f"{entry.path}: {size} bytes, manifest says {entry.size}")
        return problems

    # The verdict -----------------------------------------------------------------------

    def assess(
        self,
        step: int,
        *,
        read_bytes: bool = True,
        deep: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Verification:
        """Is `step` verified (see the module docstring)? Never raises for damage.

        A verdict already known (in memory, or a `VERIFIED`/`DAMAGED` record for this
        manifest) is used as is, except that `deep=True` reads every byte again unless the
        step is recorded damaged. With `read_bytes=False` an unknown step is checked only
        as far as one listing goes and comes back ok with `recorded=False`: the caller
        reads (and checks) the bytes itself and reports with `settle`. Raises
        `StorageError` when storage fails."""
        result = Verification(step, found=False)
        try:
            marker = self.marker(step)
        except DamagedError as err:
            result.found = True
            result.problems.append(str(err))
            return result
        if marker is None:
            return result
        result.found = True
        result.manifest_sha256 = marker.manifest_sha256
        key = (step, marker.manifest_sha256)
        try:
            result.manifest = self._pinned_manifest(step, marker)
        except DamagedError as err:
            result.problems.append(str(err))
            self._remember(key, result.problems)
            return result
        known = self._verdicts.get(key)
        if known is None:
            known = self._recorded(step, marker.manifest_sha256)
            if known is not None:
                self._verdicts[key] = known
        if known:  # damaged stays damaged
            result.problems.extend(known)
            result.recorded = True
            return result
        # One listing, even for a step known verified: a file deleted or truncated since.
        result.problems.extend(self.shallow_problems(result.manifest))
        if known is not None and not deep and not result.problems:
            result.recorded = True
            return result
        if not result.problems and not read_bytes:
            return result
        if not result.problems:
            self._deep(result.manifest, result, progress)
        self._remember(key, result.problems)
        return result

    def settle(self, step: int, manifest_sha256: str, problems: list[str]) -> None:
        """Remember and record the outcome of reading every byte of `step` elsewhere (a
        load): `problems` empty means verified. Best effort, never raises."""
        self._remember((step, manifest_sha256), problems)

    def trust(self, step: int, manifest_sha256: str) -> None:
        """A step this process wrote and committed: verified in this process's memory only
        (no I/O, no record)."""
        self._verdicts[(step, manifest_sha256)] = ()

    def manifest_sha256(self, step: int) -> str | None:
        """The hash the marker pins, None without a readable marker."""
        with contextlib.suppress(DamagedError):
            marker = self.marker(step)
            return marker.manifest_sha256 if marker is not None else None
        return None

    def latest(self) -> int | None:
        """The newest verified step, or None. Reads the bytes of a step only the first
        time it is judged (see the module docstring); never raises for damage."""
        for step in reversed(self.steps()):
            if self.assess(step).ok:
                return step
        return None

    def verify(self, step: int, progress: Callable[[int, int], None] | None = None) -> Verification:
        """Deep check of one step, every byte read again. `progress(done_bytes,
        total_bytes)` after each chunk. Damage found is recorded, so `latest()` agrees."""
        return self.assess(step, deep=True, progress=progress)

    # Records ---------------------------------------------------------------------------

    def _remember(self, key: tuple[int, str], problems: list[str]) -> None:
        verdict = tuple(problems)
        if self._verdicts.get(key) == verdict:
            return
        if self._verdicts.get(key):
            return  # damaged stays damaged
        self._verdicts[key] = verdict
        kind = layout.DAMAGED if verdict else layout.VERIFIED
        self._record(key[0], layout.Record(kind, key[1], time.time(), verdict[:20]))

    def _recorded(self, step: int, sha: str) -> tuple[str, ...] | None:
        """The recorded verdict for this manifest: problems, () for verified, None."""
        names = set(self.storage.children(self.step_dir(step)))
        verdict = None
        for name in (layout.DAMAGED, layout.VERIFIED):
            if name not in names:
                continue
            try:
                raw = self.storage.read(f"{self.step_dir(step)}/{name}", RECORD_LIMIT)
            except DamagedError:
                continue
            record = layout.Record.from_json(raw) if raw is not None else None
            if record is None or record.kind != name or record.manifest_sha256 != sha:
                continue
            if name == layout.DAMAGED:
                return (f"recorded damaged: {'; '.join(record.problems) or 'no detail'}",)
            verdict = ()
        return verdict

    def _record(self, step: int, record: layout.Record) -> None:
        """Write a record beside the marker, create-only, best effort. Only while the step
        is still committed with the same manifest: a step deleted meanwhile gets none."""
        try:
            if self.manifest_sha256(step) != record.manifest_sha256:
                return
            path = f"{self.step_dir(step)}/{record.kind}"
            with self.storage.guard(f"recording {path}"):
                self.storage.strategy.create_only(path, record.to_json())
        except Exception:  # read-only or failing storage: verify again next time
            return

    # Reading every byte ----------------------------------------------------------------

    def _deep(
        self,
        manifest: layout.Manifest,
        result: Verification,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        total = manifest.total_bytes
        base = self.attempt_dir(manifest)
        indices: list[int] = []
        skeleton: Any = None

        def count(done: int) -> None:
            result.bytes_checked += done
            if progress:
                progress(result.bytes_checked, total)

        for entry in manifest.files:
            where = f"{base}/{entry.path}"
            try:
                entries, raw = self._check_file(entry, where, count)
            except DamagedError as err:
                result.problems.append(str(err))
                continue
            except StorageError as err:
                if isinstance(err.__cause__, FileNotFoundError):
                    result.problems.append(f"{entry.path}: missing")
                    continue
                raise
            indices.extend(e.index for e in entries)
            if entry.path == layout.SKELETON:
                try:
                    skeleton = json.loads(raw)
                except (ValueError, RecursionError) as err:
                    result.problems.append(f"{entry.path}: not JSON ({err})")
        if result.problems or manifest.kind != "state":
            return
        if sorted(indices) != list(range(manifest.tensor_count)):
            result.problems.append(
                f"the tensor files hold {len(indices)} tensors, not indices "
                f"0..{manifest.tensor_count - 1} as the manifest says"
            )
        elif problem := _skeleton_problem(
            skeleton, manifest.tensor_count, layout.PICKLES in {f.path for f in manifest.files}
        ):
            result.problems.append(f"{layout.SKELETON}: cannot be decoded ({problem})")

    def _check_file(
        self, entry: layout.FileEntry, where: str, count: Callable[[int], None]
    ) -> tuple[tuple[tensorfile.Entry, ...], bytes]:
        """Hash one file, never reading past the manifest's size (+1 byte to see a longer
        file); a tensor file's header is checked on the way. Returns the tensor entries
        and, for the skeleton, its bytes."""
        digest = checksum.new()
        entries: tuple[tensorfile.Entry, ...] = ()
        kept = b""
        size = 0
        with self.storage.guard(f"reading {where}"), self.storage.open_read(where) as stream:
            if entry.path.endswith(".safetensors"):
                entries, head = tensorfile.read_header(stream, where, entry.size)
                digest.update(head)
                size = len(head)
                count(len(head))
            left = entry.size - size + 1
            while left > 0 and (chunk := stream.read(min(VERIFY_CHUNK, left))):
                digest.update(chunk)
                size += len(chunk)
                left -= len(chunk)
                count(len(chunk))
                if entry.path == layout.SKELETON:
                    kept += chunk
        if size != entry.size:
            raise DamagedError(f"{entry.path}: {size}+ bytes, the manifest says {entry.size}")
        if digest.hexdigest() != entry.xxh3:
            raise DamagedError(f"{entry.path}: checksum mismatch (the file is corrupt)")
        return entries, kept


_NUMPY_DTYPE = re.compile(r"[<>|=]?([biufc])(\d{1,2})")


def _skeleton_problem(skeleton: Any, tensors: int, pickles: bool) -> str | None:
    """What in the skeleton `codec.decode` could not decode, or None: every tag's value
    has the shape `codec` writes, every `$tensor` names one of `tensors`, base64 decodes,
    and an array's bytes match its dtype and shape. Torch- and numpy-free."""
    stack = [(skeleton, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > SKELETON_DEPTH:
            return "nested too deeply"
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        tag = next(iter(node), None)
        if len(node) not in (1, 2) or tag not in codec.TAGS:
            stack.extend((v, depth + 1) for v in node.values())
            continue
        try:
            children = _tag_children(tag, node[tag], tensors, pickles)
        except (ValueError, TypeError, binascii.Error) as err:
            return f"{tag}: {err}"
        if tag == "$odict":
            children.append(node.get("meta"))
        stack.extend((v, depth + 1) for v in children)
    return None


def _tag_children(tag: str, value: Any, tensors: int, pickles: bool) -> list[Any]:
    """Check one tagged value (ValueError/TypeError if bad); the values nested in it."""

    def index(limit: int | None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{value!r} is not an index")
        if limit is not None and value >= limit:
            raise ValueError(f"index {value} of {limit}")

    def b64(text: Any) -> bytes:
        if not isinstance(text, str):
            raise TypeError("not base64 text")
        return base64.b64decode(text, validate=True)

    def itemsize(dtype: Any) -> int:
        match = _NUMPY_DTYPE.fullmatch(dtype) if isinstance(dtype, str) else None
        if match is None:
            raise ValueError(f"dtype {dtype!r}")
        return int(match.group(2))

    if tag == "$tensor":
        index(tensors)
        return []
    if tag == "$pickle":
        if not pickles:
            raise ValueError(f"refers to {layout.PICKLES}, which the step does not hold")
        index(None)
        return []
    if tag == "$tuple":
        if not isinstance(value, list):
            raise TypeError("not a list")
        return list(value)
    if tag in ("$dict", "$odict"):
        if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in value
        ):
            raise TypeError("not a list of pairs")
        return [v for pair in value for v in pair]
    if tag == "$float":
        if not isinstance(value, str) or len(bytes.fromhex(value)) != 8:
            raise ValueError("not 8 hex bytes")
        return []
    if tag == "$bytes":
        b64(value)
        return []
    if tag == "$ndarray":
        if not isinstance(value, list) or len(value) != 3 or not isinstance(value[1], list):
            raise TypeError("not [dtype, shape, data]")
        dtype, shape, data = value
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"shape {shape!r}")
        if math.prod(shape) * itemsize(dtype) != len(b64(data)):
            raise ValueError("data does not match its shape")
        return []
    if tag == "$npscalar":
        if not isinstance(value, list) or len(value) != 2:
            raise TypeError("not [dtype, data]")
        if itemsize(value[0]) != len(b64(value[1])):
            raise ValueError("data does not match its dtype")
        return []
    raise AssertionError(tag)  # every name in codec.TAGS is handled above
