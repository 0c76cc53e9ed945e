"""Headless Chromium for the viewer tests (tests/ helper, on the path under pytest)."""

from __future__ import annotations

import pytest

from nerfzip.viewer.browser import CHROMIUM_ARGS, find_chromium, static_server

__all__ = ["CHROMIUM_ARGS", "chromium_or_skip", "static_server"]


def chromium_or_skip() -> str:
    """The chromium binary (skips the test where there is none: apt-get install chromium)."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium binary (Debian: apt-get install -y chromium; .ci/run does)")
    return exe
