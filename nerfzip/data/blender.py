"""Blender / NeRF-synthetic scenes: ``transforms_{train,val,test}.json`` + RGBA PNGs.

RGBA images are composited on a white background (the standard protocol); ``downscale`` divides
the resolution with a box filter. The object lies inside [-1.5, 1.5]^3; rays run from 2 to 6.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from nerfzip.data.cameras import Cameras
from nerfzip.data.formats import SceneFormat, register_format
from nerfzip.data.scene import Scene, SceneSplit
from nerfzip.errors import NerfzipError
from nerfzip.utils.io import read_image, read_json, resize_image

SPLITS = ("train", "val", "test")


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``rgb * a + bg * (1 - a)`` in floating point, rounded back to uint8."""
    if rgba.shape[-1] == 3:
        return rgba
    x = rgba.astype(np.float32) / 255.0
    rgb = x[..., :3] * x[..., 3:4] + background[None, None, :] * (1.0 - x[..., 3:4])
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def load_split(root: Path, split: str, downscale: int, background: np.ndarray) -> SceneSplit:
    meta_path = root / f"transforms_{split}.json"
    meta = read_json(meta_path)
    try:
        angle = float(meta["camera_angle_x"])
        frames = meta["frames"]
    except (KeyError, TypeError, ValueError) as e:
        raise NerfzipError(f"{meta_path}: missing or bad key {e}") from None
    images, poses, names = [], [], []
    for i, frame in enumerate(frames):
        try:
            rel = str(frame["file_path"]).replace("\\", "/")
            pose = np.asarray(frame["transform_matrix"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise NerfzipError(f"{meta_path}: frame {i}: missing or bad key {e}") from None
        if pose.shape != (4, 4):
            raise NerfzipError(f"{meta_path}: frame {i}: transform_matrix must be 4x4")
        img_path = root / rel
        if img_path.suffix == "":
            img_path = img_path.with_suffix(".png")
        if not img_path.is_file():
            raise NerfzipError(f"{meta_path}: frame {i}: image {img_path} not found")
        img = read_image(img_path)
        h, w = img.shape[:2]
        img = resize_image(img, w // downscale, h // downscale)
        images.append(composite(img, background))
        poses.append(pose[:3])
        names.append(Path(rel).name)
    if not images:
        raise NerfzipError(f"{meta_path}: no frames")
    h, w = images[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in images):
        raise NerfzipError(f"{meta_path}: images differ in size")
    focal = 0.5 * w / math.tan(0.5 * angle)
    n = len(images)
    cams = Cameras(
        c2w=torch.from_numpy(np.stack(poses)),
        fx=torch.full((n,), focal), fy=torch.full((n,), focal),
        cx=torch.full((n,), w / 2.0), cy=torch.full((n,), h / 2.0),
        width=torch.full((n,), w, dtype=torch.long), height=torch.full((n,), h, dtype=torch.long),
    )
    return SceneSplit(torch.from_numpy(np.stack(images)), cams, names)


def load_blender(root: str | Path, downscale: int = 1) -> Scene:
    """Load a NeRF-synthetic scene folder."""
    root = Path(root)
    if downscale < 1:
        raise NerfzipError(f"--downscale must be >= 1, got {downscale}")
    background = np.ones(3, dtype=np.float32)
    splits = {}
    for split in SPLITS:
        if (root / f"transforms_{split}.json").is_file():
            splits[split] = load_split(root, split, downscale, background)
    if "train" not in splits:
        raise NerfzipError(f"{root}: transforms_train.json not found")
    if "test" not in splits:
        splits["test"] = splits.get("val", splits["train"])
    return Scene(
        name=root.name, format="blender", splits=splits, background=torch.ones(3),
        aabb=torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]), near=2.0, far=6.0,
        source=str(root),
    )


def load_folder(path: Path, downscale: int | None) -> Scene:
    """The registered loader: the protocol's full resolution by default."""
    return load_blender(path, downscale or 1)


register_format(SceneFormat(
    "blender", load_folder,
    detect=lambda path: (path / "transforms_train.json").is_file(),
    expects="transforms_train.json (Blender)", priority=10))
