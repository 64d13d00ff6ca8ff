"""Reading what is committed, without torch: listing, the latest step, deep verification.

The supervisor process calls these at start-up to decide where a run resumes, so this module
imports neither torch nor numpy. All calls block on storage I/O in the calling thread.

- `steps()` lists committed steps: those whose `COMMITTED` marker exists. Staging
  directories and steps without a marker are invisible here.
- `manifest(step)` reads the marker and the manifest and checks the manifest against the
  hash the marker pins; a mismatch raises `CheckpointError`.
- `latest()` is the newest step whose marker and manifest check out and whose files all
  exist with the recorded sizes (one listing per step tried). It never trusts names or
  modification times: Lightning's `ckpt_path="last"` picks the file modified last
  (Lightning-AI/pytorch-lightning#12816), and its saves are not atomic (#19970), so the
  newest file can be a torn one.
- `verify(step)` additionally reads every byte and compares checksums (XXH3-128).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.core.errors import CheckpointError
from supervisor.storage import checksum, layout
from supervisor.storage.backend import Storage

VERIFY_CHUNK = 8 << 20


@dataclass
class Verification:
    """The outcome of `verify`: `ok` is False with `problems` naming each bad object."""

    step: int
    found: bool
    problems: list[str] = field(default_factory=list)
    bytes_checked: int = 0
    manifest: layout.Manifest | None = None

    @property
    def ok(self) -> bool:
        return self.found and not self.problems


class Reader:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def step_dir(self, step: int) -> str:
        return self.storage.path(layout.step_dirname(step))

    def steps(self) -> list[int]:
        found = []
        for name in self.storage.names():
            step = layout.parse_step_dirname(name)
            if step is not None and self.marker(step) is not None:
                found.append(step)
        return sorted(found)

    def marker(self, step: int) -> layout.Marker | None:
        where = f"{self.step_dir(step)}/{layout.MARKER}"
        raw = self.storage.read(where)
        return None if raw is None else layout.Marker.from_json(raw, where)

    def manifest(self, step: int) -> layout.Manifest:
        marker = self.marker(step)
        if marker is None:
            raise CheckpointError(f"step {step} is not committed under {self.storage.url}")
        where = f"{self.step_dir(step)}/{marker.manifest_path}"
        raw = self.storage.read(where)
        if raw is None:
            raise CheckpointError(f"step {step}: manifest {where} is missing; the step is corrupt")
        if hashlib.sha256(raw).hexdigest() != marker.manifest_sha256:
            raise CheckpointError(f"step {step}: manifest {where} does not match its commit marker")
        manifest = layout.Manifest.from_json(raw, where)
        if manifest.step != step or manifest.attempt != marker.attempt:
            raise CheckpointError(f"step {step}: manifest {where} names another step or attempt")
        return manifest

    def attempt_dir(self, manifest: layout.Manifest) -> str:
        return f"{self.step_dir(manifest.step)}/{manifest.attempt}"

    def shallow_problems(self, manifest: layout.Manifest) -> list[str]:
        """Missing or wrongly sized files, from one listing."""
        sizes = self.storage.sizes(self.attempt_dir(manifest))
        problems = []
        for entry in manifest.files:
            size = sizes.get(entry.path)
            if size is None:
                problems.append(f"{entry.path}: missing")
            elif size != entry.size:
                problems.append(f"{entry.path}: {size} bytes, manifest says {entry.size}")
        return problems

    def latest(self) -> int | None:
        for step in reversed(self.steps()):
            try:
                if not self.shallow_problems(self.manifest(step)):
                    return step
            except CheckpointError:
                continue
        return None

    def verify(self, step: int, progress: Callable[[int, int], None] | None = None) -> Verification:
        """Deep check of one step. `progress(done_bytes, total_bytes)` after each chunk."""
        result = Verification(step, found=self.marker(step) is not None)
        if not result.found:
            return result
        try:
            manifest = self.manifest(step)
        except CheckpointError as err:
            result.problems.append(str(err))
            return result
        result.manifest = manifest
        result.problems.extend(self.shallow_problems(manifest))
        if result.problems:
            return result
        total = manifest.total_bytes
        base = self.attempt_dir(manifest)
        for entry in manifest.files:
            digest, size = checksum.new(), 0
            with (
                self.storage.guard(f"reading {entry.path}"),
                self.storage.open_read(f"{base}/{entry.path}") as stream,
            ):
                while chunk := stream.read(VERIFY_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    result.bytes_checked += len(chunk)
                    if progress:
                        progress(result.bytes_checked, total)
            if size != entry.size or digest.hexdigest() != entry.xxh3:
                result.problems.append(f"{entry.path}: checksum mismatch (the file is corrupt)")
        return result
