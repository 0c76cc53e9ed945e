"""The training loop: random rays from the training views, a photometric loss, the field's
regularisers, the coarse-to-fine grid schedule, occupancy updates, atomic checkpoints and exact
resumption.

Every random choice draws from one ``torch.Generator`` whose state is checkpointed, so a run
resumed from a checkpoint takes the same steps as one that was never interrupted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field, field_class
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig, render_rays
from nerfzip.training.checkpoint import (
    model_from,
    optimizer_tensors,
    read_model_file,
    restore_optimizer,
    save_model,
)
from nerfzip.training.config import TrainConfig
from nerfzip.utils.io import write_json
from nerfzip.utils.progress import progress_bar
from nerfzip.utils.schema import from_dict

StepCallback = Callable[["Trainer", dict[str, float]], None]


def new_field(cfg: TrainConfig, scene: Scene) -> Field:
    """A freshly initialised field of the configured family over the scene's box."""
    return field_class(cfg.field).for_training(cfg.field, cfg, scene.aabb)


def render_config_for(field: Field, cfg: TrainConfig, step: int | None = None) -> RenderConfig:
    """The render settings the field asks for at ``step`` (``Field.render_settings``)."""
    return RenderConfig(**field.render_settings(cfg, step))


class Trainer:
    """Trains one field on one scene, writing checkpoints to ``out_dir``."""

    def __init__(self, scene: Scene, cfg: TrainConfig, out_dir: str | Path,
                 downscale: int | None = None):
        self.scene, self.cfg, self.out_dir = scene, cfg, Path(out_dir)
        self.device = torch.device(cfg.device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.train_seconds = 0.0
        field = new_field(cfg, scene)
        occupancy = None
        if field.wants_occupancy():
            occupancy = OccupancyGrid(scene.aabb, cfg.occupancy_resolution)
        self.model = RadianceModel(field, render_config_for(field, cfg, 0),
                                   SceneSpace.of(scene, downscale), occupancy)
        self.model.to(self.device)
        self.train = scene.split("train")
        self.optimizer = self.make_optimizer()

    # --- set-up --------------------------------------------------------------------------
    @property
    def field(self) -> Field:
        return self.model.field

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the field's parameter groups, with its per-group options (e.g. eps)."""
        groups = self.field.optimizer_groups({"grid": self.lr("grid"), "net": self.lr("net")})
        return torch.optim.Adam(groups, betas=(0.9, 0.99))

    def lr(self, group: str) -> float:
        base = self.cfg.lr_grid if group == "grid" else self.cfg.lr_net
        return base * self.cfg.lr_final_ratio ** (self.step / max(1, self.cfg.iters))

    # --- schedule ------------------------------------------------------------------------
    def apply_schedule(self) -> None:
        """Occupancy updates and the field's own schedule (``Field.schedule``) due now."""
        cfg, field = self.cfg, self.field
        occ = self.model.occupancy
        if occ is not None and (self.step == cfg.occupancy_warmup or (
                self.step > cfg.occupancy_warmup and self.step % cfg.occupancy_every == 0)):
            occ.update(field.density, self.model.render.step_size, cfg.occupancy_threshold,
                       generator=self.gen, young=self.step < 4 * cfg.occupancy_warmup)
        if field.schedule(cfg, self.step, occ, self.model.render.step_size):
            self.model.render = render_config_for(field, cfg, self.step)
            self.optimizer = self.make_optimizer()

    # --- one step ------------------------------------------------------------------------
    def sample_batch(self) -> tuple:
        warm = self.model.occupancy is not None and self.step < self.cfg.occupancy_warmup
        batch = self.cfg.warmup_batch_size if warm else self.cfg.batch_size
        rays, target = self.scene.random_rays("train", batch, self.gen)
        return rays.to(self.device), target.to(self.device)

    def train_step(self) -> dict[str, float]:
        self.apply_schedule()
        rays, target = self.sample_batch()
        field = self.field
        field.train()
        out = render_rays(field, rays, self.model.background, self.model.render,
                          self.model.occupancy, train=True, generator=self.gen)
        mse = F.mse_loss(out["rgb"], target)
        loss = mse
        if "rgb_coarse" in out:
            loss = loss + F.mse_loss(out["rgb_coarse"], target)
        loss = loss + field.regularization(self.cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(group["name"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()),
                "psnr": -10.0 * math.log10(max(float(mse.detach()), 1e-10)),
                "samples": float(out["num_samples"]) / len(rays)}

    # --- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """``checkpoint.safetensors``: model + optimizer + generator state, written atomically."""
        opt_tensors, groups = optimizer_tensors(self.optimizer)
        opt_tensors["rng.state"] = self.gen.get_state()
        train_state = {"step": self.step, "config": asdict(self.cfg), "param_groups": groups,
                       "train_seconds": self.train_seconds}
        save_model(self.model, self.out_dir / "checkpoint.safetensors", extra=opt_tensors,
                   extra_header={"train": train_state})

    def save_final(self) -> None:
        self.model.meta.update({"train_steps": self.step, "train_seconds": self.train_seconds,
                                "train_config": asdict(self.cfg)})
        save_model(self.model, self.out_dir / "model.safetensors")

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint written by ``save_checkpoint``."""
        header, tensors = read_model_file(path)
        if "train" not in header:
            raise NerfzipError(f"{path}: not a training checkpoint (no optimizer state)")
        self.model = model_from(header, tensors).to(self.device)
        state = header["train"]
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.gen.set_state(tensors["rng.state"])
        self.optimizer = self.make_optimizer()
        restore_optimizer(self.optimizer, tensors, state["param_groups"])

    # --- loop ----------------------------------------------------------------------------
    def run(self, callback: StepCallback | None = None, quiet: bool = False) -> RadianceModel:
        """Train to ``cfg.iters``; Ctrl-C writes a checkpoint before stopping."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / "config.json",
                   {"train": asdict(self.cfg), "scene": self.model.space.to_dict()})
        bar = progress_bar(total=self.cfg.iters, initial=self.step, desc="train", quiet=quiet)
        try:
            while self.step < self.cfg.iters:
                t0 = time.perf_counter()
                stats = self.train_step()
                self.train_seconds += time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}",
                                spr=f"{stats['samples']:.0f}")
                if callback is not None:
                    callback(self, stats)
                if self.step % self.cfg.checkpoint_every == 0 and self.step < self.cfg.iters:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            bar.close()
            self.save_checkpoint()
            raise
        bar.close()
        self.save_checkpoint()
        self.save_final()
        return self.model


def resume_config(run_dir: Path) -> tuple[TrainConfig, dict]:
    """The training and scene configuration a run was started with."""
    path = run_dir / "checkpoint.safetensors"
    if not path.is_file():
        raise NerfzipError(f"{run_dir}: no checkpoint.safetensors to resume from")
    header, _ = read_model_file(path)
    train_state = header.get("train")
    if not isinstance(train_state, dict):
        raise NerfzipError(f"{path}: not a training checkpoint (no training state)")
    cfg = from_dict(TrainConfig, train_state.get("config"), f"{path}: train.config")
    return cfg, header["space"]


def train(scene: Scene, cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          downscale: int | None = None, callback: StepCallback | None = None,
          quiet: bool = False) -> RadianceModel:
    """Train a field on ``scene`` into ``out_dir`` (``resume``: continue its checkpoint)."""
    trainer = Trainer(scene, cfg, out_dir, downscale)
    ckpt = Path(out_dir) / "checkpoint.safetensors"
    if resume:
        trainer.restore(ckpt)
    return trainer.run(callback, quiet)

