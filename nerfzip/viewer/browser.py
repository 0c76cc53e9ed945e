"""Headless Chromium for the viewer's tests and benchmark: the system's ``chromium`` (Debian's
package) driven by the ``playwright`` package, never a browser that playwright downloads, with
software WebGL2 (SwiftShader), and a static file server for an exported site."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox",
                 "--disable-dev-shm-usage"]
"""Software WebGL2 (SwiftShader): the same pictures on any machine, GPU or not; no sandbox (CI
runs as root) and no /dev/shm (small in containers)."""


def find_chromium() -> str | None:
    """The chromium binary on the path, or None (Debian: apt-get install chromium)."""
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


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


def wait_ready(page, timeout_ms: int = 60_000) -> None:
    """Wait until the exported page has drawn its first frame; its error as an exception."""
    page.wait_for_function("window.nerfzip && (window.nerfzip.ready || window.nerfzip.error)",
                           timeout=timeout_ms)
    error = page.evaluate("window.nerfzip.error")
    if error is not None:
        raise RuntimeError(f"the page says: {error}")
