"""The JSON skeleton: a nested state as JSON, with its tensors pulled out by index.

`encode(state)` walks the structure once and returns a JSON-ready skeleton plus the list of
tensors it references; `decode(skeleton, tensors)` rebuilds the structure. What round-trips
exactly:

- None, bool, int (any size), str, and float, including inf, -inf and NaN (non-finite values
  are stored as their 8 IEEE bytes, so even a NaN payload survives);
- list, tuple, dict with any encodable keys, OrderedDict with its `_metadata` attribute
  (what `nn.Module.load_state_dict` reads for versioning);
- bytes; numpy arrays and scalars (e.g. `np.random.get_state()`, a Generator's
  `bit_generator.state`); Python `random.getstate()`;
- torch tensors (any dtype the tensor file can hold), referenced as `{"$tensor": i}`.

Anything else raises `CheckpointError` naming the path, unless the store was opened with
`allow_pickle=True`: then the object goes to `pickles` and is written with `torch.save` and
read back with `weights_only=True`.

No I/O and no threads. torch and numpy are never imported here: objects are recognised by
their type's module, so the supervisor process can import this module for free.
"""

from __future__ import annotations

import base64
import math
import struct
from collections import OrderedDict
from typing import Any

from supervisor.core.errors import CheckpointError

# Keys that mark an encoded non-JSON value; a real dict key starting with "$" forces the
# pair-list form so it cannot be mistaken for one.
_TAGS = (
    "$tensor",
    "$tuple",
    "$dict",
    "$odict",
    "$float",
    "$bytes",
    "$ndarray",
    "$npscalar",
    "$pickle",
)


class Encoded:
    """The result of `encode`: the skeleton and the out-of-band values it refers to."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.pickles: list[Any] = []
        self.skeleton: Any = None


def _is_tensor(obj: object) -> bool:
    # torch.Tensor and subclasses (nn.Parameter) without importing torch.
    return any(c.__module__ == "torch" and c.__name__ == "Tensor" for c in type(obj).__mro__)


def _is_numpy(obj: object, name: str) -> bool:
    return type(obj).__module__ == "numpy" and type(obj).__name__ == name


def encode(state: Any, allow_pickle: bool = False) -> Encoded:
    out = Encoded()
    out.skeleton = _encode(state, out, allow_pickle, "state")
    return out


def _encode(obj: Any, out: Encoded, allow_pickle: bool, path: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and type(obj) is int:
        return obj
    if type(obj) is float:
        if math.isfinite(obj):
            return obj
        return {"$float": struct.pack("<d", obj).hex()}
    if _is_tensor(obj):
        out.tensors.append(obj)
        return {"$tensor": len(out.tensors) - 1}
    if type(obj) is list:
        return [_encode(v, out, allow_pickle, f"{path}[{i}]") for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return {
            "$tuple": [_encode(v, out, allow_pickle, f"{path}[{i}]") for i, v in enumerate(obj)]
        }
    if type(obj) is dict and all(type(k) is str and not k.startswith("$") for k in obj):
        return {k: _encode(v, out, allow_pickle, f"{path}[{k!r}]") for k, v in obj.items()}
    if type(obj) in (dict, OrderedDict):
        pairs = [
            [
                _encode(k, out, allow_pickle, f"{path}.key"),
                _encode(v, out, allow_pickle, f"{path}[{k!r}]"),
            ]
            for k, v in obj.items()
        ]
        if type(obj) is dict:
            return {"$dict": pairs}
        meta = getattr(obj, "_metadata", None)
        return {"$odict": pairs, "meta": _encode(meta, out, allow_pickle, f"{path}._metadata")}
    if type(obj) is bytes:
        return {"$bytes": base64.b64encode(obj).decode()}
    if _is_numpy(obj, "ndarray") and obj.dtype.kind in "biufc":
        data = obj.tobytes(order="C")
        return {"$ndarray": [obj.dtype.str, list(obj.shape), base64.b64encode(data).decode()]}
    if type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and obj.dtype.kind in "biufc":
        return {"$npscalar": [obj.dtype.str, base64.b64encode(obj.tobytes()).decode()]}
    if allow_pickle:
        out.pickles.append(obj)
        return {"$pickle": len(out.pickles) - 1}
    raise CheckpointError(
        f"cannot store {path} of type {type(obj).__module__}.{type(obj).__qualname__} without "
        "pickle: convert it to tensors/lists/dicts, or open the store with allow_pickle=True "
        "(torch.save, loaded with weights_only=True)"
    )


def decode(skeleton: Any, tensors: list[Any], pickles: list[Any] | None = None) -> Any:
    return _decode(skeleton, tensors, pickles or [])


def _decode(obj: Any, tensors: list[Any], pickles: list[Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, pickles) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) in (1, 2):
        tag = next(iter(obj))
        if tag == "$tensor":
            return tensors[obj[tag]]
        if tag == "$tuple":
            return tuple(_decode(v, tensors, pickles) for v in obj[tag])
        if tag == "$dict":
            return {_decode(k, tensors, pickles): _decode(v, tensors, pickles) for k, v in obj[tag]}
        if tag == "$odict":
            result = OrderedDict(
                (_decode(k, tensors, pickles), _decode(v, tensors, pickles)) for k, v in obj[tag]
            )
            meta = _decode(obj.get("meta"), tensors, pickles)
            if meta is not None:
                result._metadata = meta  # type: ignore[attr-defined]
            return result
        if tag == "$float":
            return struct.unpack("<d", bytes.fromhex(obj[tag]))[0]
        if tag == "$bytes":
            return base64.b64decode(obj[tag])
        if tag == "$ndarray":
            import numpy as np

            dtype, shape, data = obj[tag]
            return np.frombuffer(base64.b64decode(data), dtype=dtype).reshape(shape).copy()
        if tag == "$npscalar":
            import numpy as np

            dtype, data = obj[tag]
            return np.frombuffer(base64.b64decode(data), dtype=dtype)[0]
        if tag == "$pickle":
            return pickles[obj[tag]]
    return {k: _decode(v, tensors, pickles) for k, v in obj.items()}
