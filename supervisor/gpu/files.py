"""The GPU input files, `--gpu-config` and `--fake-gpus`: found, then read within bounds.

`read_data(path, flag)` reads at most `MAX_BYTES` (a larger file is refused before it is
read), decodes UTF-8, parses JSON (YAML for .yaml/.yml) and refuses NaN and the infinities
anywhere in it; every refusal is a `ConfigError` of one line naming the flag. Memory is
bounded by the file cap: counts inside the data are checked by their readers before they
allocate anything. `scenario_path(name)` finds a scenario shipped with the package by name
(`xid79`, `xid79.json`) where no such file exists. Blocks on the file read only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from supervisor.core.errors import ConfigError

MAX_BYTES = 1 << 20  # a scenario or a rules file is a few KiB; 1 MiB is generous
SHIPPED = Path(__file__).with_name("scenarios")  # the scenarios in the wheel


def scenario_path(name: str) -> str:
    """`name` itself where it is a file, else the shipped scenario of that name, else
    `name` (whose read then fails naming it)."""
    if os.path.exists(name) or os.sep in name or not name:
        return name
    for candidate in (name, f"{name}.json", f"{name}.yaml"):
        shipped = SHIPPED / candidate
        if shipped.is_file():
            return str(shipped)
    return name


def shipped_scenarios() -> list[str]:
    """The names of the shipped scenarios, sorted."""
    return sorted(p.stem for p in SHIPPED.iterdir() if p.suffix in (".json", ".yaml"))


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number a GPU file may hold")


def read_data(path: str, flag: str) -> object:
    """The parsed contents of `path`; raises `ConfigError` naming `flag`."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_BYTES:
                raise ConfigError(f"{flag}: {path} is larger than {MAX_BYTES >> 20} MiB")
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot read {path}: {err.strerror}") from None
    if len(raw) > MAX_BYTES:  # a file that grew, or a device
        raise ConfigError(f"{flag}: {path} is larger than {MAX_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{flag}: {path} is not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise ConfigError(f"{flag}: {path} is not a text file (it holds NUL bytes)")
    kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
    try:
        if kind == "YAML":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ConfigError(f"{flag}: {path} nests too deeply") from None
    except Exception as err:  # json's ValueError, yaml.YAMLError (not a ValueError)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{flag}: {path} is not valid {kind}: {reason}") from None
    _check_finite(data, f"{flag}: {path}")
    return data


def _check_finite(data: object, where: str) -> None:
    """Refuse NaN and the infinities (YAML's .nan, .inf) anywhere in `data`. Each container
    is visited once, so YAML aliases cannot make this walk explode."""
    seen: set[int] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{where} holds {item}: give finite numbers")
        if isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
