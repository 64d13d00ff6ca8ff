"""Reading a `torch.distributed.checkpoint` (DCP) step without running code from storage.

DCP stores its index, `.metadata`, as a plain pickle (`FileSystemReader.read_metadata` calls
`pickle.load`), and its default planner reads every non-tensor value of the state with
`torch.load(weights_only=False)` (`DefaultLoadPlanner.load_bytes`): a planted file would run
whatever its `__reduce__` names. Checksums do not help on their own: anyone who can write
the step's files can also write a manifest and marker that match them. So a sharded load
reads through this module:

- `reader(base, path, files)`: a DCP reader (`base` is DCP's `FileSystemReader` or
  `FsspecReader`) whose `read_metadata` reads `.metadata` whole, compares its size and
  checksum with the committed manifest's entry (`files`, keyed by path under the DCP
  directory), and unpickles it with `MetadataUnpickler`, which builds only the classes of
  DCP's metadata (`ALLOWED`) and refuses every other global before importing it.
- `planner()`: DCP's default load planner, reading non-tensor values with torch's
  weights-only unpickler (tensors, primitive containers, torch's safe globals).

DCP reads tensor data with `torch.load(weights_only=True)` itself. Anything refused raises
`CheckpointError` naming the file. torch is imported inside functions only.
"""

from __future__ import annotations

import functools
import io
import pickle
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage import checksum, layout

METADATA = ".metadata"
# The globals a DCP `.metadata` pickle names (torch 2.x): its dataclasses and enums, the
# path type of `StorageMeta.checkpoint_id`, and torch's own value types. Each one only
# builds a value; none can reach the filesystem, a shell or an import.
ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # a name -> torch.layout table lookup
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "complex", "slice"},
}


class MetadataUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only `ALLOWED` names and torch's dtypes, layouts and
    memory formats; any other global raises `pickle.UnpicklingError` before it is imported
    (the restriction the `pickle` documentation describes under "Restricting Globals")."""

    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch":
            import torch

            value = getattr(torch, name, None)
            if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
                return value
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_metadata(raw: bytes, expected: layout.FileEntry | None, where: str) -> Any:
    """DCP's `Metadata` from the bytes of a `.metadata` file, checked against `expected`
    (the committed manifest's entry) before a byte is unpickled."""
    if expected is None:
        raise CheckpointError(f"{where} is not in the step's manifest; refusing to read it")
    if len(raw) != expected.size or checksum.of(raw) != expected.xxh3:
        raise CheckpointError(f"{where} fails its checksum; the step is corrupt")
    try:
        metadata = MetadataUnpickler(io.BytesIO(raw)).load()
    except Exception as err:
        raise CheckpointError(
            f"{where} is not a DCP index this supervise reads safely ({err}); refusing it"
        ) from err
    from torch.distributed.checkpoint.metadata import Metadata

    if not isinstance(metadata, Metadata):
        raise CheckpointError(f"{where} does not hold DCP metadata; the step is corrupt")
    return metadata


def reader(base: type, path: str, files: dict[str, layout.FileEntry], **options: Any) -> Any:
    """A `base` (DCP StorageReader class) over `path` whose metadata is verified and read
    by `MetadataUnpickler`. `files`: the manifest's entries keyed by path under `path`."""
    return _guarded(base)(path, files, **options)


@functools.cache
def _guarded(base: type) -> type:
    from torch.distributed.checkpoint.metadata import StorageMeta

    class GuardedReader(base):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, files: dict[str, layout.FileEntry], **options: Any):
            super().__init__(path, **options)
            self.expected_files = files
            # DCP folds a reader's errors into its own exception's message; `load_sharded`
            # raises this one instead.
            self.refused: CheckpointError | None = None

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            # As DCP's own read_metadata, with the pickle read checked and restricted.
            where = str(self._get_metadata_path(kwargs.get("rank")))
            with self.fs.create_stream(where, "rb") as stream:
                raw = stream.read()
            name = where.rsplit("/", 1)[-1]
            try:
                metadata = load_metadata(raw, self.expected_files.get(name), where)
            except CheckpointError as err:
                self.refused = err
                raise
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    GuardedReader.__name__ = GuardedReader.__qualname__ = f"Guarded{base.__name__}"
    return GuardedReader


def planner() -> Any:
    """DCP's default load planner, reading non-tensor values weights-only."""
    return _planner_class()()


@functools.cache
def _planner_class() -> type:
    import torch
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            fqn = read_item.dest_index.fqn
            try:
                obj = torch.load(value, weights_only=True)
            except Exception as err:
                raise CheckpointError(
                    f"DCP value {fqn!r} holds objects the weights-only unpickler refuses "
                    f"({err}); refusing to load it"
                ) from err
            # As DefaultLoadPlanner.load_bytes, which differs only in weights_only=False.
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    return WeightsOnlyLoadPlanner
