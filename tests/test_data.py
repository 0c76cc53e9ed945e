"""Scene loaders: the shared real scenes (Blender lego, LLFF fern, nerfstudio fox) and one-line
errors on bad input folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfzip.data.blender import load_blender
from nerfzip.data.cameras import pixel_rays
from nerfzip.data.llff import load_llff
from nerfzip.data.load import load_scene
from nerfzip.data.nerfstudio import load_nerfstudio
from nerfzip.errors import NerfzipError


def shared_data() -> Path:
    """``../shared/data`` beside the repository, or skip."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip("../shared/data not found: real-scene tests need the shared scenes beside "
                    "the repo")
    return root


@pytest.fixture(scope="module")
def lego():
    return load_blender(shared_data() / "nerf_synthetic" / "lego")


@pytest.fixture(scope="module")
def fern():
    return load_llff(shared_data() / "nerf_llff_data" / "fern")


@pytest.fixture(scope="module")
def fox():
    return load_nerfstudio(shared_data() / "nerfstudio" / "fox")


# --- real scenes -----------------------------------------------------------------------------


def test_lego(lego):
    assert {k: len(v) for k, v in lego.splits.items()} == {"train": 100, "val": 100, "test": 200}
    assert lego.split("train").images.shape == (100, 400, 400, 3)
    cams = lego.split("test").cameras
    assert float(cams.fx[0]) == pytest.approx(555.555, abs=1e-3)
    assert float(cams.cx[0]) == 200.0
    torch.testing.assert_close(lego.background, torch.ones(3))
    assert (lego.near, lego.far) == (2.0, 6.0)


def test_lego_composites_on_white(lego):
    rgba = np.asarray(Image.open(shared_data() / "nerf_synthetic/lego/train/r_0.png"))
    v, u = 53, 151  # an edge pixel with partial alpha (40 / 255)
    r, g, b, a = (float(x) / 255 for x in rgba[v, u])
    assert 0 < a < 1
    expected = [round((c * a + 1.0 * (1 - a)) * 255) for c in (r, g, b)]
    assert lego.split("train").names[0] == "r_0"
    assert lego.split("train").images[0, v, u].tolist() == expected
    assert lego.split("train").images[0, 0, 0].tolist() == [255, 255, 255]  # transparent corner


def test_fern(fern):
    assert len(fern.split("train")) == 17 and len(fern.split("test")) == 3
    assert fern.split("test").names == ["image000.png", "image008.png", "image016.png"]
    assert fern.split("val") is fern.split("test")
    assert fern.split("train").images.shape == (17, 378, 504, 3)
    assert fern.ndc is not None and (fern.ndc.width, fern.ndc.height) == (504, 378)
    assert fern.ndc.focal == pytest.approx(3260.526 / 8, abs=1e-2)  # full-res focal / 8
    assert (fern.near, fern.far) == (0.0, 1.0)
    torch.testing.assert_close(fern.aabb, torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]]))
    assert "scale" in fern.info and "recenter" in fern.info
    # Recentred: the mean camera sits at the origin looking down -z.
    c2w = torch.cat([fern.split("train").cameras.c2w, fern.split("test").cameras.c2w])
    assert float(c2w[:, :, 3].mean(0).abs().max()) < 1e-5
    assert float(c2w[:, 2, 2].mean()) > 0.99  # back axes along +z


def test_fern_centre_rays_stay_in_ndc_box(fern):
    for split in ("train", "test"):
        cams = fern.split(split).cameras
        n = len(cams)
        o, d = pixel_rays(cams, torch.arange(n), torch.full((n,), 252), torch.full((n,), 189))
        rays = fern.make_rays(o, d)
        torch.testing.assert_close(rays.origins[:, 2], torch.full((n,), -1.0))
        t = torch.linspace(0, 1, 33)
        pts = rays.origins[:, None] + t[None, :, None] * rays.directions[:, None]
        assert bool((pts >= fern.aabb[0]).all() and (pts <= fern.aabb[1]).all())
        torch.testing.assert_close(pts[:, -1, 2], torch.ones(n))  # t = 1 is infinity


def test_fox(fox):
    assert len(fox.split("train")) + len(fox.split("test")) == 67
    assert len(fox.split("test")) == 9  # every 8th of 67
    assert fox.split("train").images.shape[1:] == (480, 270, 3)  # portrait 1920x1080 / 4
    cams = fox.split("train").cameras
    assert (int(cams.width[0]), int(cams.height[0])) == (270, 480)
    assert float(cams.fx[0]) == pytest.approx(1375.52 / 4, rel=1e-5)
    assert float(cams.cy[0]) == pytest.approx(965.268 / 4, rel=1e-5)
    assert cams.distortion is not None and cams.distortion.shape == (len(cams), 4)
    torch.testing.assert_close(cams.distortion[0],
                               torch.tensor([0.0578421, -0.0805099, -0.000980296, 0.00015575]))
    torch.testing.assert_close(fox.aabb, torch.tensor([[-2.0] * 3, [2.0] * 3]))  # aabb_scale 4
    # Backslash paths found their images; names are the file names, sorted.
    names = fox.split("test").names
    assert names[0] == "0001.jpg" and names == sorted(names)
    torch.testing.assert_close(fox.background, torch.zeros(3))


def test_fox_positions_scaled(fox):
    meta = json.loads((shared_data() / "nerfstudio/fox/transforms.json").read_text())
    first = np.array(sorted(meta["frames"], key=lambda f: f["file_path"])[0]["transform_matrix"])
    c2w = fox.split("test").cameras.c2w[0]
    torch.testing.assert_close(c2w[:, 3], torch.tensor(first[:3, 3] * 0.33).float())
    torch.testing.assert_close(c2w[:, :3], torch.tensor(first[:3, :3]).float())


# --- small synthetic folders -----------------------------------------------------------------


def write_png(path: Path, w: int, h: int, channels: int = 3, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, channels), value, dtype=np.uint8)
    Image.fromarray(arr).save(path)


def ns_frame(name: str, x: float = 0.0) -> dict:
    pose = np.eye(4)
    pose[0, 3] = x
    return {"file_path": name, "transform_matrix": pose.tolist()}


def test_nerfstudio_small_folder(tmp_path):
    meta = {"camera_angle_x": 1.0, "aabb_scale": 2, "scale": 0.5, "offset": [0.5, 1.0, 0.5],
            "frames": [ns_frame(f"imgs\\{i:02d}.png", x=float(i)) for i in range(3)]}
    meta["frames"][2]["fl_x"] = 9.0  # a per-frame value wins over the shared angle
    meta["frames"][1]["file_path"] = "imgs\\01"  # Blender-style, no suffix: .png is assumed
    (tmp_path / "imgs").mkdir()
    rgba = np.zeros((8, 12, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # half-transparent red
    for i in range(3):
        Image.fromarray(rgba).save(tmp_path / "imgs" / f"{i:02d}.png")
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path, downscale=2)
    assert scene.format == "nerfstudio"
    train, test = scene.split("train"), scene.split("test")
    assert test.names == ["00.png"] and train.names == ["01.png", "02.png"]
    assert train.images.shape == (2, 4, 6, 3)
    # Composited on black: 200 * 128 / 255 = 100.4 -> 100.
    assert train.images[0, 0, 0].tolist() == [100, 0, 0]
    assert float(train.cameras.fx[0]) == pytest.approx(0.5 * 12 / np.tan(0.5) / 2)
    assert float(train.cameras.fx[1]) == pytest.approx(9.0 / 2)
    assert float(train.cameras.fy[0]) == pytest.approx(float(train.cameras.fx[0]))
    assert train.cameras.distortion is None
    # p -> p * 0.5 + (offset - 0.5)
    torch.testing.assert_close(train.cameras.c2w[1, :, 3], torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))


def test_llff_small_folder_resizes_images(tmp_path):
    n = 3
    rows = []
    for i in range(n):
        # LLFF columns: down = -y, right = +x, back = +z (an unrotated OpenGL camera), the
        # position (0.1 i, 0, 0), then [H, W, focal] of the full-size images.
        m = np.array([[0, 1, 0, 0.1 * i, 16], [-1, 0, 0, 0, 24], [0, 0, 1, 0, 20.0]])
        rows.append(np.concatenate([m.ravel(), [2.0, 10.0]]))
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows))
    for i in range(n):
        write_png(tmp_path / "images" / f"img{i}.png", 24, 16, value=10 * i)
    scene = load_scene(tmp_path, downscale=2)  # no images_2/: images/ box-filtered
    assert scene.format == "llff"
    assert scene.split("train").images.shape == (2, 8, 12, 3)
    assert scene.ndc is not None and scene.ndc.focal == pytest.approx(10.0)
    assert scene.info["scale"].startswith(f"{1 / (2.0 * 0.75):.6g}")
    # Scaled by 1 / (0.75 * min near 2) = 2/3: x = 0, 1/15, 2/15; recentred on their mean 1/15.
    c2w = scene.split("test").cameras.c2w[0]
    torch.testing.assert_close(c2w, torch.tensor([[1.0, 0, 0, -1 / 15], [0, 1, 0, 0],
                                                  [0, 0, 1, 0]]))
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows[:2]))
    with pytest.raises(NerfzipError, match="2 poses but 3 images"):
        load_scene(tmp_path, downscale=2)


# --- bad input ---------------------------------------------------------------------------------


def test_blender_missing_image_names_file(tmp_path):
    meta = {"camera_angle_x": 0.7, "frames": [
        {"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(NerfzipError, match=r"r_0\.png not found"):
        load_scene(tmp_path)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "transforms_train.json").write_text('{\n  "camera_angle_x": 0.7,\n  "frames": [\n'
                                                    '    {"file_path": "a",}\n')
    with pytest.raises(NerfzipError, match=r"transforms_train\.json: malformed JSON at line 4"):
        load_scene(tmp_path)


def test_wrong_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NerfzipError, match="not a scene folder"):
        load_scene(tmp_path)
    with pytest.raises(NerfzipError, match="no such scene folder"):
        load_scene(tmp_path / "nope")


def test_nerfstudio_missing_images_listed(tmp_path):
    write_png(tmp_path / "images" / "0001.jpg", 4, 4)
    meta = {"fl_x": 5.0, "w": 4, "h": 4,
            "frames": [ns_frame(f"images\\{i:04d}.jpg") for i in (1, 2, 3)]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(NerfzipError) as err:
        load_scene(tmp_path)
    msg = str(err.value)
    assert "2 frames have no image: images/0002.jpg, images/0003.jpg" in msg
    assert "transforms.json" in msg and "\n" not in msg


def test_nerfstudio_size_mismatch(tmp_path):
    write_png(tmp_path / "a.png", 6, 4)
    meta = {"fl_x": 5.0, "w": 8, "h": 4, "frames": [ns_frame("a.png")]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(NerfzipError, match=r"a\.png: image is 6x4 but transforms.json says 8x4"):
        load_scene(tmp_path, downscale=1)


def test_nerfstudio_no_focal(tmp_path):
    write_png(tmp_path / "a.png", 6, 4)
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [ns_frame("a.png")]}))
    with pytest.raises(NerfzipError, match="fl_x"):
        load_scene(tmp_path)


def test_llff_bad_poses_file(tmp_path):
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 15)))
    with pytest.raises(NerfzipError, match=r"poses_bounds\.npy: expected an \[N, 17\] array"):
        load_scene(tmp_path)
    (tmp_path / "poses_bounds.npy").write_bytes(b"not numpy")
    with pytest.raises(NerfzipError, match=r"poses_bounds\.npy: cannot read"):
        load_scene(tmp_path)


# --- the format registry -----------------------------------------------------------------------


def test_unrecognised_folder_lists_every_format(tmp_path):
    with pytest.raises(NerfzipError) as err:
        load_scene(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: not a scene folder (expected transforms_train.json (Blender), "
        "poses_bounds.npy (LLFF) or transforms.json (nerfstudio / instant-ngp))")
    with pytest.raises(NerfzipError, match="unknown scene format 'nope'"):
        load_scene(tmp_path, fmt="nope")


def test_a_registered_format_is_detected_and_loaded(tmp_path):
    from nerfzip.data import formats
    from nerfzip.data.procedural import load_procedural

    seen = []

    def load_toy(path: Path, downscale: int | None):
        seen.append((path, downscale))
        return load_procedural(resolution=8, n_train=1, n_test=1)

    toy = formats.register_format(formats.SceneFormat(
        "toy", load_toy, detect=lambda p: (p / "toy.txt").is_file(), expects="toy.txt (toy)",
        priority=5))
    try:
        (tmp_path / "toy.txt").write_text("")
        (tmp_path / "transforms.json").write_text("{}")  # priority 5 beats nerfstudio's 30
        assert load_scene(tmp_path, downscale=3).name == "procedural"
        assert seen == [(tmp_path, 3)]
        with pytest.raises(ValueError, match="already registered"):
            formats.register_format(toy)
    finally:
        del formats.FORMATS["toy"]
