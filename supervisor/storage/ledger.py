"""The run ledger's objects on any fsspec URL: list, read, and write create-only.

The ledger (`supervisor.gang.records` names its objects) is a folder of small JSON objects
that are written once and never changed. This is its storage edge: `FsLedger(url)` lists
the objects of a folder (`attempts`, `verdicts`, `claims`), reads one whole, and creates
one only if nothing is at its name yet, with the same create-only primitive the checkpoint
commit marker uses (`strategy.CommitStrategy.create_only`): on a local path and on
`memory://`, `s3://` or `gs://` alike.

Every call blocks the calling thread and raises `StorageError` when the storage fails;
the caller (`supervisor.run.gang`) bounds how long it waits.
"""

from __future__ import annotations

from typing import Any

from supervisor.gang.records import ATTEMPTS, CLAIMS, ENDED, SUFFIX, VERDICTS
from supervisor.storage.backend import Storage

FOLDERS = (ATTEMPTS, VERDICTS, CLAIMS, ENDED)


class FsLedger:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self._storage = Storage(url, storage_options)

    def list(self, folder: str | None = None) -> list[str]:
        """Object names (`verdicts/<id>.json`) in `folder`, or in every folder."""
        names = []
        for each in (folder,) if folder else FOLDERS:
            children = self._storage.children(self._storage.path(each))
            names.extend(f"{each}/{name}" for name in children if name.endswith(SUFFIX))
        return names

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when it is not there."""
        return self._storage.read(self._storage.path(*name.split("/")))

    def create(self, name: str, data: bytes) -> bool:
        """Write `data` at `name` unless an object is there already; False when it was."""
        path = self._storage.path(*name.split("/"))
        with self._storage.guard(f"creating {path}"):
            return self._storage.strategy.create_only(path, data)
