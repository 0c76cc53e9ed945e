"""``nerfzip view``: the viser viewer starts, a headless Chromium page connects and shows the
scene as the Python renderer draws the camera the viewer reports; the level-of-detail octree
keeps the scene; a taken port or a bad file is one line and exit 2.

``NERFZIP_SCREENSHOTS=DIR`` copies the page's screenshot there (the README's picture).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from web_browser import CHROMIUM_ARGS, chromium_or_skip  # tests/ helpers
from web_scene import psnr, write_baked

from nerfzip.data.procedural import load_procedural
from nerfzip.viewer.camera import View, render, to_uint8
from nerfzip.viewer.live import coarsen, matrix_to_quat, quat_to_matrix, view_of_camera

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nerfzip(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nerfzip.cli.main", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    path = tmp_path_factory.mktemp("baked") / "procedural_octree.nrz"
    return path, write_baked(path, depth=6)


@pytest.fixture(scope="module")
def viewer(baked):
    """A running ``nerfzip view`` of the baked file: (process, url)."""
    port = free_port()
    proc = nerfzip("view", str(baked[0]), "--port", str(port), "--resolution", "800")
    deadline = time.monotonic() + 90
    line = ""
    while time.monotonic() < deadline and "viewer of" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"the viewer exited: {proc.stderr.read()}")
    assert "viewer of" in line
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # never a full pipe
    yield proc, f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_cameras_convert_both_ways():
    q = np.array([0.3, -0.5, 0.2, 0.78])
    q /= np.linalg.norm(q)
    back = matrix_to_quat(quat_to_matrix(q))
    assert np.allclose(back, q) or np.allclose(back, -q)
    # A viser camera at the origin with identity rotation looks down +z (OpenCV): nerfzip's
    # c2w then has its -z axis (the viewing direction) along +z.
    v = view_of_camera(np.zeros(3), np.array([1.0, 0, 0, 0]), np.pi / 2, 200, 100)
    assert torch.allclose(-v.c2w[:, 2], torch.tensor([0.0, 0, 1], dtype=torch.float64))
    assert v.fy == pytest.approx(50.0) and v.cx == 100 and v.cy == 50


def test_coarser_octree_keeps_the_picture(baked):
    _, model = baked
    coarse = coarsen(model.field, model.field.config.depth - 1)
    assert coarse.config.leaves < model.field.config.leaves / 3
    view = View.of(load_procedural(resolution=48, n_train=1, n_test=1).split("test").cameras,
                   0)
    fine = to_uint8(render(model, view))
    model_coarse = type(model)(coarse, model.render, model.space, None, model.meta)
    assert psnr(to_uint8(render(model_coarse, view)), fine) > 20.0


def test_viewer_page_shows_the_scene(viewer, baked, tmp_path):
    _, url = viewer
    exe = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 400})
        page.goto(url)
        text = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            values = page.evaluate("[...document.querySelectorAll('input')].map(e => e.value)")
            text = next((v for v in values if v.count(",") == 17), None)
            if text and "(still)" in page.evaluate("document.body.innerText"):
                break
            time.sleep(0.3)
        assert text, "the viewer never drew a still frame"
        assert "Connected" in page.evaluate("document.body.innerText")
        page.get_by_label("training cameras").uncheck()
        time.sleep(0.5)
        shot = tmp_path / "view.png"
        page.screenshot(path=str(shot))
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Save PNG").click()
        saved = torch.from_numpy(np.asarray(Image.open(download.value.path()).convert("RGB"))
                                 .copy())
        browser.close()
    view = View.from_fragment(text)
    assert (view.width, view.height) == (800, 400)  # the canvas, pixel for pixel
    # The initial camera: where the scene's first test view stands, looking the same way.
    first = View.of(load_procedural().split("test").cameras, 0)
    assert torch.allclose(view.c2w[:, 3], first.c2w[:, 3], atol=1e-3)
    assert torch.allclose(view.c2w[:, 2], first.c2w[:, 2], atol=1e-3)
    screen = torch.from_numpy(np.asarray(Image.open(shot).convert("RGB")).copy())
    ref = to_uint8(render(baked[1], view))
    # Left of the panel, below the browser's notice, right of the axes gizmo.
    crop = (slice(160, 400), slice(80, 450))
    score = psnr(screen[crop], ref[crop])
    blank = psnr(screen[crop], torch.full_like(ref[crop], 255))
    print(f"viewer screenshot vs Python render: {score:.2f} dB (vs blank: {blank:.2f} dB)")
    assert score >= 30.0 and blank < 20.0
    assert torch.equal(saved, ref)  # Save PNG: the still frame of the current view, exactly
    if os.environ.get("NERFZIP_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["NERFZIP_SCREENSHOTS"]) / "view.png")


def test_taken_port_and_bad_file_are_one_line_and_exit_2(viewer, baked, tmp_path):
    port = viewer[1].rsplit(":", 1)[1]
    bad = tmp_path / "bad.nrz"
    bad.write_bytes(b"\x00" * 64)
    for args, fragment in ([str(baked[0]), "--port", port], "--port " + port), \
            ([str(bad), "--port", str(free_port())], "bad.nrz"):
        proc = nerfzip("view", *args)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert err.strip().count("\n") == 0 and fragment in err and "Traceback" not in err


def test_slow_families_refine_in_pieces_and_the_panel_has_the_figures(tmp_path):
    """A TensoRF file (no octree): the viewer renders it as the Python renderer does, gives up
    a refinement as soon as the camera moves, and its panel shows the results.json PSNR."""
    from nerfzip.viewer.live import LiveViewer, ViewerConfig, figures, open_model

    path = tmp_path / "tiny_vm.nrz"
    shutil.copy(ROOT / "tests/golden/tiny_vm_2.0.nrz", path)
    (tmp_path / "results.json").write_text('{"mean": {"psnr": 27.5, "ssim": 0.9}, '
                                           '"views_evaluated": 8}')
    model = open_model(path)
    text = figures(model, path)
    assert "PSNR 27.50 dB" in text and "tensorf-vm" in text and "sections" in text
    viewer = LiveViewer(model, path, ViewerConfig(port=free_port(), chunk=256))
    try:
        view = viewer.first.resized(24, 20)
        calls = []
        gave_up = viewer.render(view, lambda: calls.append(1) or len(calls) < 2)
        assert gave_up is None and len(calls) == 2  # stopped after the first piece
        full = viewer.render(view, lambda: True)
        assert torch.equal(to_uint8(full), to_uint8(render(model, view)))
    finally:
        viewer.stop()
