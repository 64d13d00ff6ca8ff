"""The JSON skeleton: a nested state as JSON, with its tensors pulled out by index.

`encode(state)` walks the structure once and returns a JSON-ready skeleton plus the list of
tensors it references; `decode(skeleton, tensors)` rebuilds the structure. What round-trips
exactly:

- None, bool, str, and float, including inf, -inf and NaN (non-finite values are stored as
  their 8 IEEE bytes, so even a NaN payload survives);
- int with magnitude below 2**2048 (`MAX_INT_BITS`): such an int has at most 617 decimal
  digits, under the lowest limit `sys.set_int_max_str_digits` accepts (640), so it writes
  and reads back whatever limit either process runs with;
- list, tuple, dict with any encodable keys, OrderedDict with its `_metadata` attribute
  (what `nn.Module.load_state_dict` reads for versioning), nested at most `MAX_DEPTH` deep
  (a deeper structure, or one that contains itself, is refused rather than overflowing the
  stack here or in the JSON reader);
- bytes; numpy arrays and scalars (e.g. `np.random.get_state()`, a Generator's
  `bit_generator.state`); Python `random.getstate()`;
- torch tensors, referenced as `{"$tensor": i}`, bit for bit: dense (strided) layout, on
  any device that `.cpu()` can copy from (loaded onto the CPU, or `map_location`), of any
  dtype the tensor file holds (`tensorfile.DTYPES`: bool, the ints, float16/32/64,
  bfloat16, float8_e4m3fn/e5m2, complex64). Any shape, zero-size included, and any
  strides: a view is saved as its own values, made contiguous. Lazy conjugate and negative
  bits are resolved, so the values saved are the values the tensor shows. An
  `nn.Parameter` or buffer comes back as a plain tensor without `requires_grad`; tensors
  that shared storage come back as separate tensors.

Refused, with `CheckpointError` naming the path in the state (`state['opt'][3]`), before
anything is written: sparse, nested, quantized and meta tensors, other tensor subclasses
(DTensor: use `save_sharded`), other dtypes (complex128, complex32, the fnuz float8s), and
any other object, unless the store was opened with `allow_pickle=True`: then such tensors
and objects go to `pickles`, written with `torch.save` and read back with
`weights_only=True` (`load_pickles`). Too deep nesting and too large ints are refused
either way.

No I/O and no threads. torch and numpy are imported only inside the functions that need
them (`decode` of numpy values, `dump_pickles`, `load_pickles`): objects are recognised by
their type's module, so the supervisor process can import this module for free.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
from collections import OrderedDict
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage.tensorfile import DTYPES

#: Containers nested deeper than this are refused. A training state is a few levels deep;
#: the JSON skeleton spends up to three levels per container, and must stay well inside
#: Python's recursion limit (1000) when it is written and read back.
MAX_DEPTH = 100
#: Ints must be below 2**MAX_INT_BITS in magnitude (see the module docstring).
MAX_INT_BITS = 2048
# What `nn.Parameter` and `nn.Buffer` are, as (module, name); saved as plain tensors.
_PLAIN_TENSORS = {
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.parameter", "Buffer"),
}

# Keys that mark an encoded non-JSON value; a real dict key starting with "$" forces the
# pair-list form so it cannot be mistaken for one.
TAGS = (
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
    """Walk `state` once; raise `CheckpointError` naming the first value that cannot be
    stored (see the module docstring)."""
    out = Encoded()
    out.skeleton = _encode(state, out, allow_pickle, "state", 0)
    return out


def tensor_problem(t: Any) -> str | None:
    """Why the tensor file cannot store `t` bit for bit, or None if it can."""
    import torch  # already imported by whoever made `t`

    kind = (type(t).__module__, type(t).__name__)
    if kind not in _PLAIN_TENSORS:
        return f"is a tensor subclass ({kind[0]}.{kind[1]}); save_sharded saves DTensors"
    if t.is_nested:
        return "is a nested tensor"
    if t.is_quantized:
        return "is a quantized tensor; dequantize it"
    if t.layout is not torch.strided:
        return f"has layout {t.layout}; only dense (strided) tensors are stored, convert it"
    if t.is_meta:
        return "is on the meta device and holds no data"
    if t.dtype not in _stored_dtypes():
        return f"has dtype {t.dtype}, which the tensor file cannot hold; convert it"
    return None


@functools.cache
def _stored_dtypes() -> frozenset[Any]:
    import torch

    return frozenset(getattr(torch, name) for name in DTYPES if hasattr(torch, name))


def _encode(obj: Any, out: Encoded, allow_pickle: bool, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CheckpointError(
            f"cannot store {path}: nested more than {MAX_DEPTH} containers deep (or it "
            "contains itself)"
        )
    depth += 1
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and type(obj) is int:
        if abs(obj).bit_length() > MAX_INT_BITS:
            raise CheckpointError(
                f"cannot store {path}: an int of {abs(obj).bit_length()} bits; ints must be "
                f"below 2**{MAX_INT_BITS} in magnitude (store it as bytes or a str)"
            )
        return obj
    if type(obj) is float:
        if math.isfinite(obj):
            return obj
        return {"$float": struct.pack("<d", obj).hex()}
    if _is_tensor(obj):
        problem = tensor_problem(obj)
        if problem is None:
            out.tensors.append(obj)
            return {"$tensor": len(out.tensors) - 1}
        if not allow_pickle:
            raise CheckpointError(
                f"cannot store {path}: the tensor {problem} (or open the store with "
                "allow_pickle=True, which stores it with torch.save)"
            )
    if type(obj) is list:
        return [_encode(v, out, allow_pickle, f"{path}[{i}]", depth) for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return {
            "$tuple": [
                _encode(v, out, allow_pickle, f"{path}[{i}]", depth) for i, v in enumerate(obj)
            ]
        }
    if type(obj) is dict and all(type(k) is str and not k.startswith("$") for k in obj):
        return {k: _encode(v, out, allow_pickle, f"{path}[{k!r}]", depth) for k, v in obj.items()}
    if type(obj) in (dict, OrderedDict):
        pairs = [
            [
                _encode(k, out, allow_pickle, f"{path}.key", depth),
                _encode(v, out, allow_pickle, f"{path}[{k!r}]", depth),
            ]
            for k, v in obj.items()
        ]
        if type(obj) is dict:
            return {"$dict": pairs}
        meta = getattr(obj, "_metadata", None)
        return {
            "$odict": pairs,
            "meta": _encode(meta, out, allow_pickle, f"{path}._metadata", depth),
        }
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
    """The state `encode` walked. A skeleton that does not fit its tensors and pickles
    (an index out of range, a malformed tag) raises `CheckpointError`."""
    try:
        return _decode(skeleton, tensors, pickles or [])
    except (IndexError, KeyError, TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(
            f"the state's skeleton does not fit its files ({type(err).__name__}: {err}); "
            "the step is corrupt"
        ) from err


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


def dump_pickles(objects: list[Any]) -> bytes:
    """`objects` as `torch.save` bytes (stores opened with `allow_pickle=True` only);
    `CheckpointError` if torch cannot pickle one of them."""
    import io

    import torch

    stream = io.BytesIO()
    try:
        torch.save(objects, stream)
    except Exception as err:
        raise CheckpointError(f"cannot pickle the state's other objects: {err}") from err
    return stream.getvalue()


def load_pickles(raw: bytes, where: str) -> list[Any]:
    """The objects in `raw`, read by torch's weights-only unpickler, which builds only
    tensors, primitive containers and the types torch allows (`torch.serialization`'s
    safe globals): a planted file's other globals are never imported or called.
    `CheckpointError` naming `where` if anything else is in it."""
    import io

    import torch

    try:
        objects = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as err:
        raise CheckpointError(
            f"{where} holds objects the weights-only unpickler refuses ({err}); the step "
            "cannot be loaded safely"
        ) from err
    if not isinstance(objects, list):
        raise CheckpointError(f"{where} does not hold a list of objects; the step is corrupt")
    return objects
