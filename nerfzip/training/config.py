"""Training configuration as a typed dataclass, and the per-scene defaults.

Presets are named configurations (``defaults_for``), not copies of trainer code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any


@dataclass
class TrainConfig:
    """How a field is trained."""

    field: str = "tensorf-vm"
    """Field family: tensorf-vm, tensorf-cp, mlp-nerf, hash-grid (any registered family)."""
    field_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Settings of the family's own config (e.g. ``{"log2_table_size": 16}`` for hash-grid),
    applied over its defaults and checked by its schema; unknown keys are refused."""
    iters: int = 3000
    """Optimisation steps."""
    batch_size: int = 2048
    """Rays per step."""
    warmup_batch_size: int = 512
    """Rays per step before the first occupancy update (every sample is still queried then)."""
    seed: int = 0
    """Seed of every random choice (initialisation, rays, jitter)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, mps ..."""
    lr_grid: float = 0.02
    """Learning rate of grid factors (TensoRF)."""
    lr_net: float = 1e-3
    """Learning rate of networks (TensoRF decoder and basis; the whole MLP NeRF)."""
    lr_final_ratio: float = 0.1
    """Learning rates decay exponentially to this fraction at the last step."""
    n_voxels_init: int = 128**3
    """TensoRF: voxels in the initial grid."""
    n_voxels_final: int = 300**3
    """TensoRF: voxels after the last upsampling."""
    upsample_at: tuple[float, ...] = (0.1, 0.18, 0.26, 0.36, 0.46)
    """TensoRF: fractions of training at which the grid grows (log-linearly in voxels)."""
    step_ratio: float = 0.5
    """Occupancy sampler: sample spacing as a fraction of a voxel."""
    max_samples: int = 2048
    """Occupancy sampler: most samples per ray; longer rays take proportionally longer steps
    (the sample budget of scenes whose rays cross a large box)."""
    occupancy_resolution: int = 128
    """Cells per axis of the occupancy grid."""
    occupancy_every: int = 32
    """Steps between occupancy grid updates."""
    occupancy_warmup: int = 30
    """No occupancy-based skipping before this step (the field has no shape yet)."""
    occupancy_threshold: float = 1e-3
    """A cell is occupied when a sample through it would have at least this opacity."""
    shrink_at: float = 0.1
    """TensoRF: fraction of training at which the grid is cropped to the occupied box
    (negative: never)."""
    crop_alpha: float = 0.01
    """TensoRF: the crop box encloses cells whose sample opacity reaches this (stricter than
    the occupancy threshold: faint floaters near the walls would keep the box at full size)."""
    l1_density: float = 8e-5
    """L1 weight on density factors before cropping."""
    l1_density_late: float = 4e-5
    """L1 weight on density factors after cropping."""
    tv_density: float = 0.0
    """Total-variation weight on density factors (forward-facing scenes)."""
    tv_app: float = 0.0
    """Total-variation weight on appearance factors (forward-facing scenes)."""
    mlp_width: int = 256
    """MLP NeRF: width of the trunk layers (the view-direction layer is half as wide)."""
    mlp_depth: int = 8
    """MLP NeRF: trunk layers (a skip into the middle one from 4 layers on)."""
    n_coarse: int = 64
    """MLP NeRF: coarse samples per ray."""
    n_fine: int = 64
    """MLP NeRF: fine samples per ray."""
    checkpoint_every: int = 500
    """Steps between checkpoints (also written on interruption and at the end)."""


def defaults_for(scene_format: str, field: str) -> TrainConfig:
    """The defaults used for a scene format and field family: the format's (TensoRF's
    published settings, scaled to a CPU budget), then the family's own changes
    (``Field.training_defaults``)."""
    from nerfzip.fields.base import field_class

    cfg = format_defaults(scene_format, TrainConfig(field=field))
    return field_class(field).training_defaults(field, scene_format, cfg)


def format_defaults(scene_format: str, cfg: TrainConfig) -> TrainConfig:
    """The training defaults of a scene format (any family)."""
    if scene_format == "llff":
        # TensoRF's LLFF weights are 1.0 on a TV term it scales by 1e-2 inside; ours is unscaled.
        # NDC rays cross the whole frustum (a 2-unit z range) and the scene fills most of it:
        # at half-voxel steps a ray would take ~600 samples. 128 per ray (NeRF's LLFF budget
        # is 64 + 128) and smaller batches keep a step under a second on a CPU.
        cfg = replace(cfg, n_voxels_final=400**3, tv_density=0.01, tv_app=0.01, l1_density=0.0,
                      l1_density_late=0.0, shrink_at=-1.0, max_samples=128, batch_size=1024)
    elif scene_format == "nerfstudio":
        # Cameras sit inside the aabb_scale box and rays cross up to ~4 units of it.
        cfg = replace(cfg, n_voxels_final=256**3, tv_density=0.001, tv_app=0.001,
                      max_samples=128, batch_size=1024)
    elif scene_format == "procedural":
        cfg = replace(cfg, n_voxels_init=32**3, n_voxels_final=96**3, occupancy_resolution=64,
                      occupancy_every=50, occupancy_warmup=100)
    return cfg
