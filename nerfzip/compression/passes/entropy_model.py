"""The ``entropy_model`` pass: a field's feature grids as latents, quantized with a per-channel
step and coded with a learned entropy model, fine-tuned for rate and distortion.

Each feature grid (TensoRF VM planes and lines, CP lines, hash-grid tables:
``Field.feature_grids``) becomes
integer latents ``round(x / step)`` per channel (its components) with a factorized prior
(``nerfzip.codec.entropy_model``, Ballé et al. 2018) fitted to them. Fine-tuning (the
``finetune`` machinery, ``fit/finetune.py``) then minimises

    loss = MSE(rendered, training pixels) + lambda * R,

R the priors' estimate of the latents' coded size in MB (2^20 bytes) under additive uniform
noise, while the renderer sees the rounded latents (straight-through), so the grids, the
networks, the steps and the priors learn together (ECTensoRF, Deng & Tartaglione, ICML 2024,
with a factorized prior). Planes and lines also get a checkerboard context model
(``nerfzip.codec.context_model``, He et al. 2021; ``context=true``): half of the positions are
coded given their decoded neighbours; it is fitted to the final latents (or, with
``train_context=true``, trained with them for its rate). At the end the models are frozen
(``update``) and the file stores each grid as the range-coded latents, the steps and the
priors' integer tables (codec 10), or in two passes with the context model (codec 11),
whichever is smaller;
the other tensors (decoder, basis) are stored as the pipeline's other passes say (lossless by
default; ``quant(8, include=decoder)`` after this pass, for instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nerfzip.codec.context_model import CheckerboardContext, spatial_shape
from nerfzip.codec.entropy_model import FactorizedPrior, channels_first
from nerfzip.codec.tensors import TensorSpec, encode_tensor
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Codebook, Factorized, constrained
from nerfzip.compression.constraints.learned_prior import MB_BITS, LatentPrior
from nerfzip.compression.fit.finetune import train_constrained
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.schema import limits


@dataclass
class Config:
    """Learned entropy coding of the feature grids, fine-tuned for rate + distortion."""

    lmbda: float = field(default=0.01, metadata=limits(0.0, 100.0, lo_open=True))
    """Rate weight (lambda= in pipelines): loss = MSE + lambda x latent MB (higher: smaller)."""
    steps: int = field(default=1000, metadata=limits(0))
    """Fine-tuning steps (0: quantize, fit the priors and code, without training)."""
    step: float = field(default=0.0, metadata=limits(0.0, 1.0))
    """Initial quantization step of every channel (0: each channel's range / 2^bits)."""
    bits: int = field(default=8, metadata=limits(2, 16))
    """With step=0: the initial step spans each channel's range in 2^bits steps."""
    learn_step: bool = True
    """Train the per-channel steps with the rest (False: keep the initial ones)."""
    batch_size: int = field(default=4096, metadata=limits(1))
    """Rays per fine-tuning step."""
    lr_grid: float = field(default=2e-3, metadata=limits(0.0))
    """Learning rate of the grids, steps and priors."""
    lr_net: float = field(default=1e-4, metadata=limits(0.0))
    """Learning rate of the networks."""
    prior_steps: int = field(default=300, metadata=limits(0, 100000))
    """Adam steps fitting each prior to its initial latents before fine-tuning."""
    rate_sample: int = field(default=65536, metadata=limits(0))
    """Latent values per grid the rate term reads each step (a random subset; 0: all)."""
    context: bool = True
    """Also model planes and lines with a checkerboard context model (half of the positions
    predicted from their neighbours); the file keeps whichever coding is smaller."""
    train_context: bool = False
    """Fine-tune for the context model's rate (False: for the factorized prior's, the context
    model fitted to the final latents; then it can only make the file smaller)."""
    include: str = ""
    """Only feature grids whose name contains this text."""
    seed: int = 0
    """Seed of the ray sampling and the noise."""


def initial_step(v: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Per channel of v [C, N]: ``cfg.step``, or the channel's range / 2^bits (never 0)."""
    if cfg.step > 0:
        return torch.full((v.shape[0],), cfg.step, device=v.device)
    span = v.amax(dim=1) - v.amin(dim=1)
    # A (nearly) constant channel still gets a step that keeps its latents well inside the
    # coder's range: at most 2^10 steps per unit of its largest magnitude.
    span = torch.maximum(span, v.abs().amax(dim=1) * 2.0 ** -10).clamp_min(1e-6)
    return span / (1 << cfg.bits)


def grids_to_code(c: Compressed, cfg: Config) -> dict[str, int]:
    """The feature grids the pass codes, with their channel axis; refuses, before anything
    runs, fields it does not cover and grids other passes made into something else."""
    field_ = c.model.field
    if not field_.feature_grids():
        raise NerfzipError(f"entropy_model works on fields with feature grids (tensorf-vm, "
                           f"tensorf-cp, hash-grid), not {field_.family}")
    grids = {name: g.axis for name, g in field_.feature_grids().items() if cfg.include in name}
    if not grids:
        raise NerfzipError(f"entropy_model: no feature grid matches include={cfg.include!r}")
    for name in grids:
        kinds = [type(k).__name__ for k in c.constraints.get(name, [])
                 if isinstance(k, (Codebook, Factorized))]
        if kinds:
            raise NerfzipError(f"entropy_model: {name} is already {kinds[0]} (vq / "
                               "tensor_decompose); its latents would be those, not the grid")
    return grids


@register_pass("entropy_model", Config, renames={"lambda": "lmbda"})
def entropy_model(model: RadianceModel | Compressed, cfg: Config, ctx: PassContext
                  ) -> tuple[Compressed, dict[str, Any]]:
    """Feature grids as latents coded with a learned entropy model, trained for rate + MSE."""
    c = Compressed.of(model)
    grids = grids_to_code(c, cfg)
    if cfg.steps and ctx.scene is None:
        raise NerfzipError("entropy_model needs the scene's training views to fine-tune (pass "
                           "--data, or steps=0)")
    tensors = c.tensors()
    for i, (name, axis) in enumerate(grids.items()):
        x = constrained(tensors[name].detach(), c.constraints.get(name, []))
        v = channels_first(x, axis)
        step = initial_step(v, cfg)
        prior_seed = cfg.seed * 7919 + i
        q = torch.round(v / step[:, None])
        spread = torch.nan_to_num(4 * q.std(dim=1), nan=1.0).cpu()  # (one value: no std)
        prior = FactorizedPrior(v.shape[0], init_scale=spread).to(v.device)
        with torch.no_grad():  # the spike starts at the share of exact zeros
            prior.spike.copy_(torch.logit((q == 0).float().mean(dim=1).clamp(1e-3, 0.9))[:, None])
        prior.fit(q, steps=cfg.prior_steps, seed=prior_seed)
        trains = cfg.train_context or not cfg.steps
        context = context_model(c, name, x, axis, q, cfg, prior_seed) if trains else None
        c.add(name, LatentPrior(axis, step, prior, cfg.lmbda, cfg.learn_step,
                                cfg.rate_sample, prior_seed, context))
    c.project()
    report: dict[str, Any] = {"lambda": cfg.lmbda, "grids": len(grids),
                              "latents": sum(tensors[n].numel() for n in grids)}
    if cfg.steps:
        c, ft = train_constrained(c, cfg.steps, cfg.batch_size, cfg.lr_grid, cfg.lr_net,
                                  cfg.seed, ctx.scene, ctx.quiet, what="entropy_model")
        report.update({k: v for k, v in ft.items() if k not in ("lr_grid", "lr_net")})
    if cfg.steps and cfg.prior_steps:
        refit_priors(c, grids, cfg)
    if cfg.steps and cfg.context and not cfg.train_context:
        attach_contexts(c, grids, cfg)
    report.update(coded_sizes(c, grids))
    args = {"lmbda": cfg.lmbda, "steps": cfg.steps, "step": cfg.step, "bits": cfg.bits,
            "learn_step": cfg.learn_step, "batch_size": cfg.batch_size, "lr_grid": cfg.lr_grid,
            "lr_net": cfg.lr_net, "prior_steps": cfg.prior_steps,
            "rate_sample": cfg.rate_sample, "context": cfg.context,
            "train_context": cfg.train_context, "include": cfg.include, "seed": cfg.seed}
    c.record("entropy_model", args, report)
    return c, report


def context_model(c: Compressed, name: str, x: torch.Tensor, axis: int, q: torch.Tensor,
                  cfg: Config, seed: int) -> CheckerboardContext | None:
    """A checkerboard context model fitted to a spatial grid's latents q [C, N] (planes and
    lines; None for hashed tables, or with ``context=false``)."""
    spatial = spatial_shape(tuple(x.shape), axis)
    if not cfg.context or spatial is None or not c.model.field.feature_grids()[name].spatial:
        return None
    ctx = CheckerboardContext(q.shape[0], spatial).to(q.device)
    ctx.fit(q, steps=cfg.prior_steps // 3, seed=seed)
    return ctx


def attach_contexts(c: Compressed, grids: dict[str, int], cfg: Config) -> None:
    """Give each plane and line a context model fitted to its final latents (it changes only
    the code length, never what renders)."""
    tensors = c.tensors()
    for i, (name, axis) in enumerate(grids.items()):
        cons = c.constraints[name]
        (k,) = [j for j, con in enumerate(cons) if isinstance(con, LatentPrior)]
        x = tensors[name].detach()
        q = cons[k].latents(x).to(torch.float32).to(x.device)
        context = context_model(c, name, x, axis, q, cfg, cfg.seed * 7919 + i + 2)
        cons[k] = replace(cons[k], context=context)


def refit_priors(c: Compressed, grids: dict[str, int], cfg: Config) -> None:
    """Fit each prior again to its final latents (the prior changes only the code length,
    never what renders, so this is free: the densities catch up with the last steps)."""
    tensors = c.tensors()
    for i, name in enumerate(grids):
        (con,) = [k for k in c.constraints[name] if isinstance(k, LatentPrior)]
        q = con.latents(tensors[name].detach()).to(torch.float32).to(tensors[name].device)
        con.prior.fit(q, steps=max(1, cfg.prior_steps // 2), lr=5e-3,
                      seed=cfg.seed * 7919 + i + 1)
        con.prior.frozen = None
        if con.context is not None:
            con.context.fit(q, steps=max(1, cfg.prior_steps // 3), seed=cfg.seed * 7919 + i + 1)
            con.context.frozen = None


def coded_sizes(c: Compressed, grids: dict[str, int]) -> dict[str, Any]:
    """Freeze every model (``update``) and measure, in real bytes: the models' estimate of the
    latents' size against the range-coded streams (with a context model: the anchors under
    the prior, the others under the context model; ``factorized_bytes``: every latent under
    the prior, for comparison), and what the file stores for the grids (each grid's smallest
    coding: context-coded, range-coded with the prior's tables, or plain symbols)."""
    tensors = c.tensors()
    estimate, streams, factorized, sections, ranged, contexts = 0.0, 0, 0, 0, 0, 0
    for name in grids:
        (prior,) = [k for k in c.constraints[name] if isinstance(k, LatentPrior)]
        frozen = prior.update()
        x = tensors[name].detach().cpu()
        estimate += prior.estimate_bits(x)
        q = prior.latents(x)
        stream, escapes = frozen.compress(q)
        factorized += len(stream) + 4 * len(escapes)
        if prior.context is not None:
            ctx = prior.context.frozen
            stream, escapes = frozen.compress(q[:, prior.context.anchors.cpu()])
            more, more_escapes = ctx.compress(q.numpy())
            streams += len(stream) + 4 * len(escapes) + len(more) + 4 * more_escapes.size
        else:
            streams += len(stream) + 4 * len(escapes)
        spec = TensorSpec()
        for k in c.constraints[name]:
            spec = k.storage(spec)
        node = encode_tensor(x, spec)
        sections += node.nbytes()
        ranged += node.params.get("coder") == "range"
        contexts += node.codec == "learned_context"
    return {"estimate_bytes": round(estimate / 8), "stream_bytes": streams,
            "factorized_bytes": factorized, "estimate_mb": estimate / MB_BITS,
            "grid_bytes": sections, "range_coded": ranged, "context_coded": contexts}
