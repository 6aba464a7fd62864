"""The worker caps glibc's malloc arenas at start, unless the operator chose a number."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from stream.malloc_arenas import limit_malloc_arenas


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_arenas_are_capped_on_glibc():
    assert ctypes.util.find_library("c")
    assert limit_malloc_arenas(2) is True


def test_an_operators_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False
