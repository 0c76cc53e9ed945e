"""Headless Chromium for the viewer tests (tests/ helper, on the path under pytest): Debian's
``chromium`` driven by the ``playwright`` package (never the browser playwright downloads), and a
static file server for an exported site."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]
"""Software WebGL2 (SwiftShader): the same pictures on any machine, GPU or not."""


def chromium_or_skip() -> str:
    """The chromium binary (skips the test where there is none: apt-get install chromium)."""
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("no chromium binary (Debian: apt-get install -y chromium; .ci/run does)")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free local port, as any static host would; yields its URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
