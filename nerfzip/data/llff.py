"""LLFF forward-facing captures: ``poses_bounds.npy`` + ``images_{downscale}/``, processed as the
original NeRF ``load_llff_data`` does, with the field living in NDC space.

``poses_bounds.npy`` holds one row of 17 numbers per image: a 3x5 matrix (a 3x3 rotation whose
columns are the camera's [down, right, back] axes, the camera position, and ``[H, W, focal]`` of
the full-resolution images) followed by the near / far scene depths seen by that camera.

Processing (Mildenhall et al. 2020, ``load_llff_data`` with ``bd_factor=0.75``, ``recenter``):

1. reorder the rotation columns to OpenGL's [right, up, back] (``[y, -x, z]``);
2. scale the world by ``sc = 1 / (0.75 * min near bound)`` so the closest content sits a little
   beyond depth 1, the NDC near plane;
3. recentre: express every pose in the frame of the average pose (mean position, summed
   viewing and up directions), so the average camera looks down ``-z`` from the origin.

Why NDC: a forward-facing capture sees an unbounded scene through one frustum; the NDC warp
(``cameras.to_ndc``) maps that frustum, depths 1 to infinity, onto a cube, with samples linear in
disparity, so a bounded grid spends its resolution where the cameras can resolve detail. It is
also the space in which the nerf-pytorch fern checkpoint in ``../shared/models`` was trained.
The field's box is TensoRF's NDC box ``[-1.5, -1.67, -1] .. [1.5, 1.67, 1]``; rays run over
t in [0, 1] in NDC, ending at infinity, so the background colour is never seen (black).
The usual protocol holds out every 8th view (``i % 8 == 0``) for testing; val is the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nerfzip.data.cameras import Cameras
from nerfzip.data.formats import SceneFormat, register_format
from nerfzip.data.scene import NDCParams, Scene, SceneSplit
from nerfzip.errors import NerfzipError
from nerfzip.utils.io import read_image, resize_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BD_FACTOR = 0.75
HOLDOUT = 8
NDC_AABB = [[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]]  # TensoRF's box for LLFF scenes


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``poses_bounds.npy`` -> poses [N, 3, 5] (LLFF axes) and bounds [N, 2], float64."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise NerfzipError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise NerfzipError(f"{path}: cannot read as a .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise NerfzipError(f"{path}: expected an [N, 17] array, got shape {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NerfzipError(f"{path}: holds non-finite values")
    return arr[:, :15].reshape(-1, 3, 5), arr[:, 15:]


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(poses: np.ndarray) -> np.ndarray:
    """The mean camera [3, 4] of c2w poses [N, 3, 4]: mean position, summed back (z) and up (y)
    axes made orthonormal (NeRF's ``poses_avg``)."""
    center = poses[:, :, 3].mean(0)
    z = normalize(poses[:, :, 2].sum(0))
    up = poses[:, :, 1].sum(0)
    x = normalize(np.cross(up, z))
    y = normalize(np.cross(z, x))
    return np.stack([x, y, z, center], axis=1)


def recenter_poses(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses [N, 3, 4] expressed in the frame of their average pose; returns (poses, average)."""
    avg = average_pose(poses)
    bottom = np.array([[0.0, 0.0, 0.0, 1.0]])
    avg4 = np.concatenate([avg, bottom], 0)
    poses4 = np.concatenate([poses, np.broadcast_to(bottom, (len(poses), 1, 4))], 1)
    return (np.linalg.inv(avg4) @ poses4)[:, :3, :4], avg


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_images(root: Path, downscale: int) -> tuple[list[Path], np.ndarray]:
    """The images of ``images_{downscale}/``, or those of ``images/`` resized (box filter) when
    that folder is absent; uint8 [N, H, W, 3]."""
    folder = root / f"images_{downscale}"
    resize = False
    if downscale == 1 or not folder.is_dir():
        folder, resize = root / "images", downscale != 1
    if not folder.is_dir():
        raise NerfzipError(f"{root}: neither images_{downscale}/ nor images/ found")
    files = image_files(folder)
    if not files:
        raise NerfzipError(f"{folder}: no .png or .jpg images")
    images = []
    for f in files:
        img = read_image(f)[..., :3]  # an alpha channel means nothing in a real capture
        if resize:
            h, w = img.shape[:2]
            img = resize_image(img, w // downscale, h // downscale)
        images.append(img)
    if any(im.shape != images[0].shape for im in images):
        raise NerfzipError(f"{folder}: images differ in size")
    return files, np.stack(images)


def load_llff(root: str | Path, downscale: int = 8) -> Scene:
    """Load an LLFF scene folder as an NDC-space scene (see the module docstring)."""
    root = Path(root)
    if downscale < 1:
        raise NerfzipError(f"--downscale must be >= 1, got {downscale}")
    poses_path = root / "poses_bounds.npy"
    raw, bounds = read_poses_bounds(poses_path)
    files, images = read_images(root, downscale)
    if len(files) != len(raw):
        raise NerfzipError(f"{poses_path}: {len(raw)} poses but {len(files)} images in "
                           f"{files[0].parent.name}/")
    h, w = images.shape[1:3]
    h_full, w_full, focal_full = raw[0, :, 4]
    # The stored focal is for the full-resolution images; scale it by the actual width ratio.
    focal = float(focal_full * w / w_full)

    # LLFF [down, right, back] -> OpenGL [right, up, back].
    poses = np.concatenate([raw[:, :, 1:2], -raw[:, :, 0:1], raw[:, :, 2:4]], axis=2)
    scale = 1.0 / (bounds.min() * BD_FACTOR)
    poses[:, :, 3] *= scale
    bounds = bounds * scale
    poses, avg = recenter_poses(poses)

    n = len(files)
    cams = Cameras(
        c2w=torch.from_numpy(poses).float(),
        fx=torch.full((n,), focal), fy=torch.full((n,), focal),
        cx=torch.full((n,), w / 2.0), cy=torch.full((n,), h / 2.0),
        width=torch.full((n,), w, dtype=torch.long), height=torch.full((n,), h, dtype=torch.long),
    )
    test_idx = [i for i in range(n) if i % HOLDOUT == 0]
    train_idx = [i for i in range(n) if i % HOLDOUT != 0]
    all_images = torch.from_numpy(images)
    names = [f.name for f in files]

    def split(idx: list[int]) -> SceneSplit:
        sel = torch.tensor(idx, dtype=torch.long)
        return SceneSplit(all_images[sel], cams[sel], [names[i] for i in idx])

    test = split(test_idx)
    info = {
        "scale": f"{scale:.6g} (1 / (0.75 * min near bound {bounds.min() / scale:.4g}))",
        "bounds": f"near {bounds[:, 0].min():.4g}..{bounds[:, 0].max():.4g} "
                  f"far {bounds[:, 1].min():.4g}..{bounds[:, 1].max():.4g} (scaled)",
        "recenter": "world = inverse of average pose (scaled) " + np.array2string(
            avg, precision=4, suppress_small=True, separator=",").replace("\n", ""),
        "full_res": f"{int(w_full)}x{int(h_full)} focal {focal_full:.6g}",
    }
    return Scene(
        name=root.name, format="llff",
        splits={"train": split(train_idx), "val": test, "test": test},
        background=torch.zeros(3), aabb=torch.tensor(NDC_AABB), near=0.0, far=1.0,
        ndc=NDCParams(focal=focal, width=int(w), height=int(h), near=1.0),
        source=str(root), info=info,
    )


def load_folder(path: Path, downscale: int | None) -> Scene:
    """The registered loader: images_8 by default (the protocol's)."""
    return load_llff(path, downscale or 8)


register_format(SceneFormat(
    "llff", load_folder,
    detect=lambda path: (path / "poses_bounds.npy").is_file(),
    expects="poses_bounds.npy (LLFF)", priority=20))
