"""nerfstudio / instant-ngp captures: one ``transforms.json`` with intrinsics, OpenCV distortion
and camera-to-world poses, beside the images it names.

Conventions:

- ``transform_matrix`` is camera-to-world in the OpenGL convention (camera looks down ``-z``,
  ``+y`` up), the same as Blender files; we keep the file's world axes.
- Intrinsics ``fl_x fl_y cx cy w h`` and distortion ``k1 k2 p1 p2`` may be given at the top level
  (one shared camera) or per frame (per-frame values win). Without ``fl_x`` / ``fl_y`` the focal
  comes from ``camera_angle_x`` / ``camera_angle_y``; ``cx``, ``cy`` default to the image centre.
  Distortion coefficients act on normalised coordinates, so they do not change with resolution.
- ``file_path`` is relative to the json's folder and may use Windows separators
  (``images\\0001.jpg``).
- World normalisation follows instant-ngp's NeRF loader, which maps positions
  ``p -> p * scale + offset`` (``scale`` 0.33, ``offset`` 0.5 unless the json says otherwise) so
  that the unit cube [0, 1]^3 is the region of interest, grown by ``aabb_scale`` around its
  centre 0.5. We keep that region but centre it at the origin: ``p -> p * scale + (offset - 0.5)``
  and the scene box is ``[-aabb_scale / 2, aabb_scale / 2]^3``. (instant-ngp also permutes the
  axes to its own frame afterwards; a permutation does not change which points the box holds.)
- Real captures have no transparent background: everything seen is in the images, and a large
  ``aabb_scale`` exists so that the far background lies inside the box. Rays that leave the box
  without hitting anything were never observed, so the background colour only fills in there; we
  use black (0, 0, 0), also for images that carry an alpha channel.
- Rays start at ``near = 0.05`` and end at ``far`` = the box diagonal (or the distance from a
  camera outside the box to its farthest corner, if larger); the renderer clips them to the box.
- Every 8th frame (``i % 8 == 0`` after sorting by ``file_path``) is held out for testing; val is
  the test set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from nerfzip.data.blender import composite
from nerfzip.data.cameras import Cameras
from nerfzip.data.formats import SceneFormat, register_format
from nerfzip.data.scene import Scene, SceneSplit
from nerfzip.errors import NerfzipError
from nerfzip.utils.io import read_image, read_json, resize_image

HOLDOUT = 8
NEAR = 0.05
DEFAULT_SCALE = 0.33  # instant-ngp's NeRF loader defaults
DEFAULT_OFFSET = 0.5
DISTORTION_KEYS = ("k1", "k2", "p1", "p2")
UNSUPPORTED_KEYS = ("k3", "k4")  # higher-order radial terms our camera model lacks
MAX_LISTED = 10


def frame_value(frame: dict, meta: dict, key: str) -> object:
    """A per-frame value, else the shared top-level one, else None."""
    return frame[key] if key in frame else meta.get(key)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image's header, without decoding it."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise NerfzipError(f"{path}: cannot decode image ({e})") from None


def frame_intrinsics(frame: dict, meta: dict, img_path: Path) -> list[float]:
    """``[fx, fy, cx, cy, w, h]`` at full resolution for one frame."""
    w, h = frame_value(frame, meta, "w"), frame_value(frame, meta, "h")
    if w is None or h is None:
        w, h = image_size(img_path)
    w, h = float(w), float(h)
    fx, fy = frame_value(frame, meta, "fl_x"), frame_value(frame, meta, "fl_y")
    ax, ay = frame_value(frame, meta, "camera_angle_x"), frame_value(frame, meta, "camera_angle_y")
    if fx is None and ax is not None:
        fx = 0.5 * w / math.tan(0.5 * float(ax))
    if fy is None and ay is not None:
        fy = 0.5 * h / math.tan(0.5 * float(ay))
    if fx is None:
        fx = fy
    if fx is None:
        raise KeyError("fl_x (or camera_angle_x)")
    if fy is None:
        fy = fx  # square pixels when only one focal is given
    cx, cy = frame_value(frame, meta, "cx"), frame_value(frame, meta, "cy")
    cx = w / 2.0 if cx is None else cx
    cy = h / 2.0 if cy is None else cy
    return [float(fx), float(fy), float(cx), float(cy), w, h]


def check_camera_model(frame: dict, meta: dict, where: str) -> None:
    model = frame_value(frame, meta, "camera_model")
    if model is not None and str(model).upper() not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise NerfzipError(f"{where}: camera_model {model!r} is not supported "
                           "(only pinhole with OpenCV k1 k2 p1 p2)")
    for k in UNSUPPORTED_KEYS:
        if float(frame_value(frame, meta, k) or 0.0) != 0.0:
            raise NerfzipError(f"{where}: distortion {k} is not supported (only k1 k2 p1 p2)")


def world_transform(meta: dict, meta_path: Path) -> tuple[float, np.ndarray, float]:
    """(scale, offset [3], aabb_scale) from the json, with instant-ngp's defaults."""
    try:
        scale = float(meta.get("scale", DEFAULT_SCALE))
        offset = np.broadcast_to(np.asarray(meta.get("offset", DEFAULT_OFFSET), np.float64), (3,))
        aabb_scale = float(meta.get("aabb_scale", 1))
    except (TypeError, ValueError) as e:
        raise NerfzipError(f"{meta_path}: bad scale, offset or aabb_scale ({e})") from None
    if not (scale > 0 and aabb_scale > 0 and np.isfinite(offset).all()):
        raise NerfzipError(f"{meta_path}: scale and aabb_scale must be positive")
    return scale, offset.copy(), aabb_scale


def with_suffix(root: Path, rel: str) -> str:
    """``rel``, or ``rel.png`` when ``rel`` has no suffix (Blender-style paths, which instant-ngp
    also accepts) and that file exists."""
    if Path(rel).suffix == "" and (root / f"{rel}.png").is_file():
        return f"{rel}.png"
    return rel


def parse_frames(root: Path, meta: dict, meta_path: Path) -> tuple[list[str], np.ndarray,
                                                                     np.ndarray, np.ndarray]:
    """Relative image paths (sorted), poses [N, 3, 4], intrinsics [N, 6], distortion [N, 4]."""
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise NerfzipError(f"{meta_path}: no 'frames' list")
    try:
        rels = [with_suffix(root, str(f["file_path"]).replace("\\", "/")) for f in frames]
    except (KeyError, TypeError) as e:
        raise NerfzipError(f"{meta_path}: a frame lacks {e}") from None
    order = sorted(range(len(frames)), key=lambda i: rels[i])
    missing = [rels[i] for i in order if not (root / rels[i]).is_file()]
    if missing:
        n = len(missing)
        listed = ", ".join(missing[:MAX_LISTED]) + (", ..." if n > MAX_LISTED else "")
        raise NerfzipError(f"{meta_path}: {n} frame{'s have' if n > 1 else ' has'} no image: "
                           f"{listed}")
    poses, intr, dist = [], [], []
    for i in order:
        frame, where = frames[i], f"{meta_path}: frame {rels[i]}"
        try:
            check_camera_model(frame, meta, where)
            pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
            intr.append(frame_intrinsics(frame, meta, root / rels[i]))
            dist.append([float(frame_value(frame, meta, k) or 0.0) for k in DISTORTION_KEYS])
        except (KeyError, TypeError, ValueError) as e:
            raise NerfzipError(f"{where}: missing or bad key {e}") from None
        if pose.shape not in ((4, 4), (3, 4)) or not np.isfinite(pose).all():
            raise NerfzipError(f"{where}: transform_matrix must be a finite 4x4 matrix")
        poses.append(pose[:3])
    return [rels[i] for i in order], np.stack(poses), np.array(intr), np.array(dist)


def load_images(root: Path, rels: list[str], full: Cameras, scaled: Cameras,
                background: np.ndarray) -> np.ndarray:
    """Every image checked against its full-resolution size, box-filtered to the scaled size and
    composited on the background: uint8 [N, H, W, 3]."""
    images = []
    for i, rel in enumerate(rels):
        img = read_image(root / rel)
        h, w = img.shape[:2]
        if (w, h) != (int(full.width[i]), int(full.height[i])):
            raise NerfzipError(f"{root / rel}: image is {w}x{h} but transforms.json says "
                               f"{int(full.width[i])}x{int(full.height[i])}")
        img = resize_image(img, int(scaled.width[i]), int(scaled.height[i]))
        images.append(composite(img, background))
    if any(im.shape != images[0].shape for im in images):
        raise NerfzipError(f"{root}: images differ in size; one scene needs one image size")
    return np.stack(images)


def load_nerfstudio(root: str | Path, downscale: int = 4) -> Scene:
    """Load a nerfstudio / instant-ngp ``transforms.json`` folder (see the module docstring)."""
    root = Path(root)
    if downscale < 1:
        raise NerfzipError(f"--downscale must be >= 1, got {downscale}")
    meta_path = root / "transforms.json"
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise NerfzipError(f"{meta_path}: expected a JSON object at the top level")
    rels, poses, intr, dist = parse_frames(root, meta, meta_path)
    scale, offset, aabb_scale = world_transform(meta, meta_path)
    poses[:, :, 3] = poses[:, :, 3] * scale + (offset - 0.5)

    n = len(rels)
    full = Cameras(
        c2w=torch.from_numpy(poses).float(),
        fx=torch.from_numpy(intr[:, 0]).float(), fy=torch.from_numpy(intr[:, 1]).float(),
        cx=torch.from_numpy(intr[:, 2]).float(), cy=torch.from_numpy(intr[:, 3]).float(),
        width=torch.from_numpy(np.round(intr[:, 4])).long(),
        height=torch.from_numpy(np.round(intr[:, 5])).long(),
        distortion=torch.from_numpy(dist).float() if (dist != 0).any() else None,
    )
    cams = full.scaled(1.0 / downscale)
    background = np.zeros(3, dtype=np.float32)
    images = torch.from_numpy(load_images(root, rels, full, cams, background))

    half = aabb_scale / 2.0
    aabb = torch.tensor([[-half] * 3, [half] * 3])
    corners = np.array([[x, y, z] for x in (-half, half) for y in (-half, half)
                        for z in (-half, half)])
    pos = poses[:, :, 3]
    # A camera outside the box may need more than the diagonal to reach the far side.
    far = max(math.sqrt(3.0) * aabb_scale,
              float(np.linalg.norm(pos[:, None] - corners[None], axis=-1).max()))
    names = [Path(r).name for r in rels]

    def split(idx: list[int]) -> SceneSplit:
        sel = torch.tensor(idx, dtype=torch.long)
        return SceneSplit(images[sel], cams[sel], [names[i] for i in idx])

    test = split([i for i in range(n) if i % HOLDOUT == 0])
    inside = int((np.abs(pos) <= half).all(axis=1).sum())
    info = {
        "scale": f"{scale:g} (world p -> p * scale + offset - 0.5)",
        "offset": ", ".join(f"{v:g}" for v in offset),
        "aabb_scale": f"{aabb_scale:g}",
        "cameras": "x {:.3g}..{:.3g} y {:.3g}..{:.3g} z {:.3g}..{:.3g}; ".format(
            *np.stack([pos.min(0), pos.max(0)], 1).ravel()) + f"{inside}/{n} inside the box",
    }
    return Scene(
        name=root.name, format="nerfstudio",
        splits={"train": split([i for i in range(n) if i % HOLDOUT != 0]), "val": test,
                "test": test},
        background=torch.from_numpy(background), aabb=aabb, near=NEAR, far=far,
        source=str(root), info=info,
    )


def load_folder(path: Path, downscale: int | None) -> Scene:
    """The registered loader: a quarter of the resolution by default (the protocol's)."""
    return load_nerfstudio(path, downscale or 4)


register_format(SceneFormat(
    "nerfstudio", load_folder,
    detect=lambda path: (path / "transforms.json").is_file(),
    expects="transforms.json (nerfstudio / instant-ngp)", priority=30))
