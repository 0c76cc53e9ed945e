"""``nerfzip export-web``: the exported page, opened in headless Chromium (software WebGL2),
draws what the Python renderer draws for the same camera, follows the mouse, and bad input gives
one line and exit 2.

Needs Debian's ``chromium`` (``.ci/run`` installs it) driven by the ``playwright`` package; the
browser tests skip only where no chromium binary exists. ``NERFZIP_SCREENSHOTS=DIR`` copies the
page's screenshot there (the README's picture).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from web_browser import CHROMIUM_ARGS, chromium_or_skip, static_server  # tests/ helpers
from web_scene import psnr, write_baked

from nerfzip.cli.main import main
from nerfzip.codec import nrz
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.fields.octree import Octree, OctreeConfig
from nerfzip.viewer.camera import View, render, to_uint8
from nerfzip.viewer.export import export_web, pack_octree

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    path = tmp_path_factory.mktemp("baked") / "procedural_octree.nrz"
    return path, write_baked(path, depth=6)


@pytest.fixture(scope="module")
def palette_baked(baked, tmp_path_factory):
    """The baked octree with every 8 leaves (in Morton order) sharing one SH vector: a
    vector-quantized octree, which the page receives as a palette and an index per leaf."""
    _, model = baked
    model = nrz.load(baked[0])
    with torch.no_grad():
        sh = model.field.sh
        sh.copy_(sh[:, torch.arange(sh.shape[1]) // 8 * 8])
    path = tmp_path_factory.mktemp("vq") / "palette_octree.nrz"
    nrz.save(model, path)
    return path, nrz.load(path)


@pytest.fixture(scope="module")
def mlp_baked(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp_octree.nrz"
    return path, write_baked(path, depth=5, appearance="mlp")


@pytest.fixture(scope="module")
def ndc_baked(baked, tmp_path_factory):
    """The baked octree read as living in NDC space, as an LLFF scene's does: the page must
    map its rays to NDC as ``cameras.to_ndc`` does."""
    model = nrz.load(baked[0])
    model.space = replace(model.space, near=0.0, far=1.0, format="llff", name="ndc",
                          ndc={"focal": 60.0, "width": 72, "height": 64, "near": 1.0})
    path = tmp_path_factory.mktemp("ndc") / "ndc_octree.nrz"
    nrz.save(model, path)
    return path, nrz.load(path)


NDC_VIEW = View(torch.tensor([[0.98, 0.0, 0.199, 0.05], [0.0, 1.0, 0.0, -0.1],
                              [-0.199, 0.0, 0.98, 0.0]], dtype=torch.float64),
                55.0, 55.0, 36.0, 32.0, 72, 64)
"""A forward-facing camera near the NDC scene's origin, turned a little."""


@pytest.fixture(scope="module")
def site(baked, palette_baked, mlp_baked, ndc_baked, tmp_path_factory):
    """Four exports under one static root: ``plain/`` (float16 density, 8-bit SH per leaf),
    ``compact/`` (the palette octree with 8-bit log density), ``mlp/`` (features decoded by
    the octree's MLP) and ``ndc/`` (the plain octree in an NDC scene)."""
    root = tmp_path_factory.mktemp("web")
    report = export_web(baked[0], root / "plain")
    export_web(palette_baked[0], root / "compact", density_bits=8)
    export_web(mlp_baked[0], root / "mlp")
    export_web(ndc_baked[0], root / "ndc")
    return root, report


@pytest.fixture(scope="module")
def page(site):
    browser_exe = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with static_server(site[0]) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_exe, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 400, "height": 300}), url
        browser.close()


def open_page(page, url: str, fragment: str) -> float:
    """Load the page at ``url#fragment``; seconds to its first frame."""
    start = time.monotonic()
    page.goto(f"{url}/index.html#{fragment}")
    page.reload()  # a new fragment alone would not reload the page
    page.wait_for_function("window.nerfzip && (window.nerfzip.ready || window.nerfzip.error)",
                           timeout=60_000)
    assert page.evaluate("window.nerfzip.error") is None
    return time.monotonic() - start


def canvas(page) -> torch.Tensor:
    out = page.evaluate("window.nerfzip.readPixels()")
    data = bytearray(base64.b64decode(out["rgb"]))
    return torch.frombuffer(data, dtype=torch.uint8).view(out["height"], out["width"], 3)


def test_export_folder_is_small_and_self_contained(site):
    out, report = site[0] / "plain", site[1]
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "nerfzip-shader.js",
                                                     "nerfzip-web.js", "scene.bin.gz",
                                                     "scene.json"]
    meta = json.loads((out / "scene.json").read_text())
    # 8-bit SH codes + float16 density + mask bytes, gzip-compressed: under 21 bytes a leaf.
    assert meta["data"]["raw_bytes"] < 32 * meta["leaves"]
    assert meta["data"]["bytes"] < meta["data"]["raw_bytes"]
    assert report.bytes == sum(p.stat().st_size for p in out.iterdir())
    html = "".join((out / name).read_text() for name in ("index.html", "nerfzip-shader.js",
                                                           "nerfzip-web.js"))
    assert "http://" not in html and "https://" not in html  # nothing from the network


@pytest.mark.parametrize("variant", ["plain", "compact", "mlp", "ndc"])
def test_page_matches_the_python_renderer(variant, baked, palette_baked, mlp_baked, ndc_baked,
                                          site, page):
    model = {"plain": baked, "compact": palette_baked, "mlp": mlp_baked,
             "ndc": ndc_baked}[variant][1]
    meta = json.loads((site[0] / variant / "scene.json").read_text())
    names = [s["name"] for s in meta["data"]["sections"]]
    assert ("sh_palette" in names) == (variant == "compact")
    assert ("decoder" in names) == (variant == "mlp")
    pg, url = page
    scene = load_procedural(resolution=72, n_train=1, n_test=2)
    view = NDC_VIEW if variant == "ndc" else View.of(scene.split("test").cameras, 1)
    seconds = open_page(pg, f"{url}/{variant}", f"ui=0&camera={view.to_fragment()}")
    web, ref = canvas(pg), to_uint8(render(model, view))
    assert web.shape == ref.shape == (view.height, view.width, 3)
    background = (ref.int() - 255).abs().sum(-1) > 30
    assert background.float().mean() > 0.2  # the scene fills the view: not a blank check
    score = psnr(web, ref)
    print(f"{variant}: canvas vs Python renderer: {score:.2f} dB; first frame in "
          f"{seconds:.2f} s; {meta['data']['bytes']:,} bytes of scene data")
    assert score >= 30.0
    if os.environ.get("NERFZIP_SCREENSHOTS") and variant == "plain":
        # What a visitor sees: the scene's first camera fitted to the window, and the panel.
        open_page(pg, f"{url}/{variant}", "")
        pg.screenshot(path=str(Path(os.environ["NERFZIP_SCREENSHOTS"]) / "export_web.png"))


def test_dragging_orbits_and_the_url_keeps_the_camera(baked, page):
    _, model = baked
    pg, url = page
    scene = load_procedural(resolution=64, n_train=1, n_test=1)
    view = View.of(scene.split("test").cameras, 0)
    open_page(pg, f"{url}/plain", f"ui=0&camera={view.to_fragment()}")
    before = canvas(pg)
    pg.mouse.move(30, 30)
    pg.mouse.down()
    pg.mouse.move(50, 38, steps=4)
    pg.mouse.up()
    pg.wait_for_function(f"!location.hash.includes({json.dumps(view.to_fragment())})")
    moved = View.from_fragment(pg.evaluate("window.nerfzip.camera()"))
    assert float((moved.c2w[:, 3] - view.c2w[:, 3]).norm()) > 0.1  # the camera turned
    # Same distance to the orbit's target: an orbit, not a translation.
    target = torch.tensor(json.loads(pg.evaluate("JSON.stringify(window.nerfzip.target)")),
                          dtype=torch.float64)
    assert abs(float((moved.c2w[:, 3] - target).norm() - (view.c2w[:, 3] - target).norm())) \
        < 1e-3
    after = canvas(pg)
    assert psnr(after, before) < 25.0  # the picture changed with it
    assert psnr(after, to_uint8(render(model, moved))) >= 30.0


def test_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.nrz"
    bad.write_bytes(b"not a radiance field")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "export-web", str(bad),
                           "-o", str(tmp_path / "site")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "bad.nrz" in proc.stderr
    assert not (tmp_path / "site").exists()
    cases = [
        ([str(ROOT / "tests/golden/tiny_vm_2.0.nrz")], "tensorf-vm field"),
        ([str(tmp_path / "missing.nrz")], "no such file"),
    ]
    for extra, fragment in cases:
        assert main(["export-web", *extra, "-o", str(tmp_path / "site")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and fragment in err, err
    assert main(["export-web", str(bad), "-o", str(tmp_path / "s"), "--camera", "1,2,3"]) == 2
    assert "18 finite" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export-web", str(bad), "-o", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_decoders_too_large_for_the_page_are_refused_in_one_line():
    tree, _ = Octree.from_leaves(torch.tensor([[-1.0] * 3, [1.0] * 3]),
                                 torch.tensor([[0, 0, 0], [1, 2, 3]]),
                                 OctreeConfig(depth=2, appearance="mlp", hidden=128))
    with pytest.raises(NerfzipError, match="at most 64") as e:
        pack_octree(tree)
    assert "\n" not in str(e.value)


def test_export_replaces_an_earlier_export_whole(baked, tmp_path):
    out = tmp_path / "site"
    export_web(baked[0], out)
    first = json.loads((out / "scene.json").read_text())["data"]["bytes"]
    export_web(baked[0], out, sh_degree=0)
    meta = json.loads((out / "scene.json").read_text())
    assert meta["sh_degree"] == 0 and meta["data"]["bytes"] < first
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temporary folder left


def test_a_page_without_its_data_says_so(site, page, tmp_path):
    pg, url = page
    shutil.copytree(site[0] / "plain", tmp_path / "broken")
    (tmp_path / "broken" / "scene.bin.gz").unlink()
    with static_server(tmp_path / "broken") as broken:
        pg.goto(f"{broken}/index.html")
        pg.wait_for_function("window.nerfzip && window.nerfzip.error", timeout=60_000)
        assert "scene.bin.gz: HTTP 404" in pg.evaluate("window.nerfzip.error")
        assert "scene.bin.gz" in pg.inner_text("#error")
