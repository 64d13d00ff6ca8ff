"""Retention is a pure decision over committed step numbers."""

from __future__ import annotations

import pytest

from supervisor.core.errors import ConfigError
from supervisor.storage.retention import Retention, to_delete


def test_keeps_the_newest_n() -> None:
    assert to_delete([1, 2, 3, 4, 5], Retention(keep_last=2)) == [1, 2, 3]
    assert to_delete([5, 1, 3], Retention(keep_last=3)) == []


def test_keeps_every_kth_and_protected_steps() -> None:
    steps = range(1, 21)
    assert to_delete(steps, Retention(keep_last=2, keep_every=10), protected=[7]) == [
        s for s in steps if s not in (7, 10, 19, 20)
    ]


@pytest.mark.parametrize("keep_last", [0, 1, -3, 2.5, True])
def test_fewer_than_two_is_a_config_error(keep_last) -> None:
    with pytest.raises(ConfigError, match="keep_last"):
        Retention(keep_last=keep_last)


@pytest.mark.parametrize("keep_every", [0, -1, 1.5])
def test_bad_keep_every_is_a_config_error(keep_every) -> None:
    with pytest.raises(ConfigError, match="keep_every"):
        Retention(keep_every=keep_every)
