"""Every tensor round-trips bit for bit through sync and async saves, or is refused at save.

The expected values are built independently of how the store resolves views: a conjugate
view is compared with `complex(real, -imag)`, a negative view with `-x`, and so on.
"""

from __future__ import annotations

import sys
import uuid
import warnings

import pytest
import torch

from supervisor.core.errors import CheckpointError
from supervisor.storage import codec
from supervisor.storage.tensorfile import DTYPES
from tests.storage.conftest import Backend


@pytest.fixture(params=["local", "memory"])
def where(request: pytest.FixtureRequest, tmp_path) -> Backend:
    if request.param == "local":
        return Backend("local", str(tmp_path / "ckpt"))
    return Backend("memory", f"memory://rt-{uuid.uuid4().hex[:12]}")


def random_bits(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Any bit pattern of `dtype` (NaN payloads, subnormals); bool as 0/1."""
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    size = torch.empty((), dtype=dtype).element_size()
    n = int(torch.Size(shape).numel())
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


def table() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (what is saved, the values it must load back as, built independently)."""
    cases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, name in enumerate(sorted(DTYPES)):
        t = random_bits(getattr(torch, name), (7, 3), seed=i)
        cases[f"dtype {name}"] = (t, t.clone())
    z = torch.complex(torch.randn(4, 3), torch.randn(4, 3))
    cases["conj view"] = (z.conj(), torch.complex(z.real, -z.imag))
    x = torch.randn(5, 2)
    cases["neg view"] = (torch._neg_view(x), -x)
    cases["imag of conj (a neg view)"] = (z.conj().imag, -z.imag)
    cases["conj of a transpose"] = (z.t().conj(), torch.complex(z.real, -z.imag).t().contiguous())
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    cases["transpose"] = (base.t(), base.t().contiguous())
    cases["step slice"] = (base[:, ::2], base[:, ::2].contiguous())
    cases["storage offset"] = (base[1:3, 2:], base[1:3, 2:].contiguous())
    cases["expanded (stride 0)"] = (base[0].expand(3, 6), base[0].repeat(3, 1))
    channels_last = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    cases["channels_last"] = (channels_last, channels_last.contiguous())
    cases["0-dim"] = (torch.tensor(2.5), torch.tensor(2.5))
    cases["zero-size"] = (torch.empty(0, 4), torch.empty(0, 4))
    cases["zero-size middle dim"] = (torch.empty(3, 0, 2, dtype=torch.int16),) * 2
    grad = torch.randn(3, requires_grad=True)
    cases["requires_grad"] = (grad, grad.detach().clone())
    param = torch.nn.Parameter(torch.randn(2, 2))
    cases["nn.Parameter"] = (param, param.detach().clone())
    return cases


def raw_bytes(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy()) if t.numel() else b""


def check(saved: dict, expected: dict, loaded: dict) -> None:
    assert list(loaded) == list(saved)
    for name, want in expected.items():
        got = loaded[name]
        assert type(got) is torch.Tensor, name
        assert not got.requires_grad and not got.is_conj() and not got.is_neg(), name
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        assert raw_bytes(got) == raw_bytes(want), name


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_supported_tensor_round_trips_bitwise(where: Backend, mode: str) -> None:
    cases = table()
    saved = {name: t for name, (t, _) in cases.items()}
    expected = {name: want for name, (_, want) in cases.items()}
    # Shared storage: both views come back with their own values.
    shared = torch.arange(10.0)
    saved["shared whole"], saved["shared part"] = shared, shared[2:5]
    expected["shared whole"], expected["shared part"] = shared.clone(), shared[2:5].clone()
    with where.store(shard_bytes=1 << 10) as store:
        if mode == "sync":
            store.save(1, saved)
        else:
            store.save_async(1, saved).wait()
        check(saved, expected, store.load(1))


def test_a_lazily_conjugated_view_saves_its_values_not_its_memory(where: Backend) -> None:
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    with where.store() as store:
        store.save(1, {"z": z.conj(), "n": torch._neg_view(torch.tensor([1.0, -2.0]))})
        back = store.load(1)
    assert back["z"].tolist() == [1 - 2j, 3 + 4j]
    assert back["n"].tolist() == [-1.0, 2.0]


class Subclassed(torch.Tensor):
    pass


def refused_tensors() -> dict[str, tuple[object, str]]:
    with warnings.catch_warnings():  # torch's "beta"/"deprecated"/"prototype" notes
        warnings.simplefilter("ignore")
        return _refused_tensors()


def _refused_tensors() -> dict[str, tuple[object, str]]:
    x = torch.randn(4)
    cases = {
        "sparse coo": (torch.eye(3).to_sparse(), "layout torch.sparse_coo"),
        "sparse csr": (torch.eye(3).to_sparse_csr(), "layout torch.sparse_csr"),
        "meta": (torch.empty(3, device="meta"), "meta device"),
        "quantized": (
            torch.quantize_per_tensor(x, 0.1, 0, torch.quint8),
            "quantized",
        ),
        "complex128": (torch.zeros(2, dtype=torch.complex128), "dtype torch.complex128"),
        "complex32": (torch.zeros(2, dtype=torch.complex32), "dtype torch.complex32"),
        "subclass": (x.as_subclass(Subclassed), "tensor subclass"),
    }
    nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    cases["nested"] = (nested, "nested tensor")
    if hasattr(torch, "float8_e4m3fnuz"):
        cases["float8 fnuz"] = (torch.zeros(2).to(torch.float8_e4m3fnuz), "float8_e4m3fnuz")
    return cases


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case", sorted(refused_tensors()))
def test_an_unsupported_tensor_is_refused_at_save_naming_its_path(
    where: Backend, mode: str, case: str
) -> None:
    tensor, why = refused_tensors()[case]
    state = {"model": {"w": torch.ones(2)}, "opt": [0, 1, 2, tensor]}
    with where.store() as store:
        save = store.save if mode == "sync" else store.save_async
        with pytest.raises(CheckpointError) as caught:
            save(1, state)
        assert "state['opt'][3]" in str(caught.value) and why in str(caught.value)
        assert store.steps() == []


def nested_lists(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_structure_limits_are_refused_at_save_naming_the_path(where: Backend, mode: str) -> None:
    cyclic: list = [1]
    cyclic.append(cyclic)
    refused = {
        "10_000 nested lists": (nested_lists(10_000), "nested more than"),
        "10_000 nested dicts": (nested_dicts(10_000), "nested more than"),
        "nested tuples": (((((),),),) * 1, None),  # shallow: fine, a control
        "a cycle": (cyclic, "nested more than"),
        "10**5000": (10**5000, "ints must be below 2**2048"),
        "-(2**2048)": (-(2**2048), "ints must be below 2**2048"),
    }
    with where.store() as store:
        save = store.save if mode == "sync" else store.save_async
        for name, (value, why) in refused.items():
            if why is None:
                continue
            with pytest.raises(CheckpointError) as caught:
                save(1, {"opt": [0, 1, 2, value]})
            assert "state['opt'][3]" in str(caught.value), name
            assert why in str(caught.value), name
        assert store.steps() == []


def test_the_limits_themselves_round_trip_under_the_strictest_int_digit_limit(
    where: Backend,
) -> None:
    biggest = 2**codec.MAX_INT_BITS - 1
    state = {
        "ints": [biggest, -biggest, 0, -1, 2**64],
        "deep": nested_lists(codec.MAX_DEPTH - 1),
        "deep dicts": nested_dicts(codec.MAX_DEPTH - 1),
    }
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the lowest Python accepts
    try:
        with where.store() as store:
            store.save(1, state)
            assert store.load(1) == state
    finally:
        sys.set_int_max_str_digits(before)


def test_pickled_store_takes_what_the_tensor_file_cannot(where: Backend) -> None:
    sparse = torch.eye(3).to_sparse()
    with where.store(allow_pickle=True) as store:
        store.save(1, {"s": sparse, "w": torch.ones(2).conj()})
        back = store.load(1)
    assert back["s"].is_sparse and back["s"].to_dense().equal(torch.eye(3))
    assert back["w"].equal(torch.ones(2))


@pytest.mark.parametrize(
    "skeleton",
    [{"$tensor": 5}, {"$pickle": 0}, {"$tuple": 3}, {"$dict": [[1]]}, {"$ndarray": ["<f4"]}],
)
def test_a_skeleton_that_does_not_fit_its_files_is_a_checkpoint_error(skeleton) -> None:
    with pytest.raises(CheckpointError, match="skeleton does not fit"):
        codec.decode({"x": skeleton}, [torch.ones(1)], [])
