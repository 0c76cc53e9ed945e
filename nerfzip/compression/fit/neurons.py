"""Structured pruning of MLP NeRFs: remove whole neurons of every trunk layer (and, with
``colour_branch``, feature channels and view-direction neurons), so each matrix really shrinks
and every query does less work.

Which neurons go: the lowest ``score = |activity| x |outgoing weights|``, where activity is
the neuron's mean absolute output at calibration points (or, without a scene, the norm of its
incoming weights, which says less: a neuron with large weights may never fire).

Without a scene the kept weights are copied as they are. With a scene the pruned network is
rebuilt layer by layer so that it reproduces the original network's pre-activations at
calibration points: each narrower layer's weights are the least-squares fit, from the pruned
inputs, of what the original layer computed (channel pruning with feature-map reconstruction:
He et al., ICCV 2017; Luo et al., ThiNet, ICCV 2017). The heads that read the last trunk layer
are refitted the same way. That rebuild starts the pruned network close, but on real scenes
still several dB short: ``refit_steps`` then distil the original into it, from rendered
novel-view rays and point-wise targets (``distill.train_student``), which recovers most of it.

Calibration points are where rendering looks: the samples the hierarchical sampler draws on
random training rays (coarse stratified + fine importance samples), with their view directions.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.fit.student import (
    DistillConfig,
    OccupiedPoints,
    density_grid,
    heldout_psnr,
    tail_mean,
    train_student,
)
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.encoding import positional_encoding
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.renderer import importance_depths, shade_samples
from nerfzip.rendering.samplers import stratified

CALIBRATION_RAYS = 2048
CALIBRATION_POINTS = 1 << 16
REFIT_LR = 1e-3
"""Default learning rate of the refit (``prune(..., refit_lr=...)``)."""


@torch.no_grad()
def calibration_points(model: RadianceModel, scene: Scene, seed: int = 0
                       ) -> tuple[Tensor, Tensor]:
    """A random ``CALIBRATION_POINTS`` [P, 3] of the samples where the hierarchical sampler of
    ``model`` queries its fine network on ``CALIBRATION_RAYS`` random training rays, and their
    unit view directions [P, 3]."""
    gen = torch.Generator().manual_seed(seed)
    device = model.field.aabb.device
    rays, _ = scene.random_rays("train", CALIBRATION_RAYS, gen)
    rays = rays.to(device)
    cfg = model.render
    field = model.field
    coarse = field.coarse_field() if hasattr(field, "coarse_field") else field
    z = stratified(rays.near, rays.far, cfg.n_coarse, perturb=True, generator=gen)
    weights = shade_samples(coarse, rays, z, model.background, cfg.last_delta,
                            rgb=False)["weights"]
    z_all = importance_depths(z, weights, cfg.n_fine, deterministic=False, generator=gen)
    pts = rays.origins[:, None, :] + z_all[..., None] * rays.directions[:, None, :]
    dirs = rays.viewdirs[:, None, :].expand_as(pts)
    pick = torch.randperm(pts.shape[0] * pts.shape[1], generator=gen)[:CALIBRATION_POINTS]
    pick = pick.to(device)
    return pts.reshape(-1, 3)[pick], dirs.reshape(-1, 3)[pick]


def trunk_activations(net, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The encoding, each trunk layer's input and each trunk layer's output (post-activation)
    of an ``MLPNetwork`` at ``x``."""
    enc = positional_encoding(x, net.pos_freqs)
    inputs, outputs = [], []
    h = enc
    for i, layer in enumerate(net.layers):
        if i in net.skips:
            h = torch.cat((h, enc), dim=-1)
        inputs.append(h)
        h = layer(h)
        if i > 0 or net.first_activation:
            h = torch.relu(h)
        outputs.append(h)
    return enc, inputs, outputs


def neuron_keep(net, ratio: float, activity: list[Tensor] | None = None) -> list[Tensor]:
    """Sorted indices of the neurons each trunk layer keeps. Score: activity (mean |output| at
    calibration points, or the incoming weight norm) x outgoing weight norm."""
    layers = list(net.layers)
    keep = []
    for i, layer in enumerate(layers):
        n = layer.out_features
        incoming = activity[i] if activity is not None else layer.weight.norm(dim=1)
        if i + 1 < len(layers):
            outgoing = layers[i + 1].weight[:, :n].norm(dim=0)
        else:
            outgoing = torch.cat([net.alpha_head.weight, net.feature.weight]).norm(dim=0)
        keep.append(_top(incoming * outgoing, ratio))
    return keep


def branch_activations(net, h: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """The colour branch of an ``MLPNetwork`` from last-trunk features ``h`` and unit view
    directions ``d``: the feature channels (post-activation) and the direction layer's
    neurons (post-ReLU)."""
    f = net.feature(h)
    if net.feature_activation:
        f = torch.relu(f)
    g = torch.relu(net.dir_layer(torch.cat((f, positional_encoding(d, net.dir_freqs)), -1)))
    return f, g


def branch_keep(net, ratio: float, activity: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
    """Sorted indices of the feature channels and direction-layer neurons the colour branch
    keeps, scored like trunk neurons (``neuron_keep``)."""
    n_f = net.feature.out_features
    feature_out = net.dir_layer.weight[:, :n_f].norm(dim=0)
    direction_out = net.rgb_head.weight.norm(dim=0)
    if activity is None:
        activity = (net.feature.weight.norm(dim=1), net.dir_layer.weight.norm(dim=1))
    return tuple(_top(a * o, ratio) for a, o in  # type: ignore[return-value]
                 zip(activity, (feature_out, direction_out)))


def _top(score: Tensor, ratio: float) -> Tensor:
    k = max(1, score.numel() - int(round(ratio * score.numel())))
    return torch.sort(torch.topk(score, k).indices).values


def select_inputs(weight: Tensor, width_in: int, prev: Tensor | None) -> Tensor:
    """Columns of ``weight`` left when the previous layer keeps neurons ``prev`` (columns past
    ``width_in`` are a skip connection's encoding and stay)."""
    if prev is None:
        return weight
    return torch.cat([weight[:, :width_in][:, prev], weight[:, width_in:]], dim=1)


def full_branch(net) -> tuple[Tensor, Tensor]:
    """The colour branch's indices when it keeps everything."""
    return (torch.arange(net.feature.out_features, device=net.feature.weight.device),
            torch.arange(net.dir_layer.out_features, device=net.feature.weight.device))


def copy_pruned(old, new, keep: list[Tensor], branch: tuple[Tensor, Tensor]) -> None:
    """Copy the kept rows / columns of ``old``'s layers into the narrower ``new``."""
    prev = None
    for i, (a, b) in enumerate(zip(old.layers, new.layers)):
        width_in = old.layers[i - 1].out_features if i else 0
        b.weight.copy_(select_inputs(a.weight, width_in, prev)[keep[i]])
        b.bias.copy_(a.bias[keep[i]])
        prev = keep[i]
    keep_f, keep_d = branch
    new.alpha_head.weight.copy_(old.alpha_head.weight[:, prev])
    new.alpha_head.bias.copy_(old.alpha_head.bias)
    new.feature.weight.copy_(old.feature.weight[keep_f][:, prev])
    new.feature.bias.copy_(old.feature.bias[keep_f])
    width_f = old.feature.out_features
    new.dir_layer.weight.copy_(select_inputs(old.dir_layer.weight, width_f, keep_f)[keep_d])
    new.dir_layer.bias.copy_(old.dir_layer.bias[keep_d])
    new.rgb_head.weight.copy_(old.rgb_head.weight[:, keep_d])
    new.rgb_head.bias.copy_(old.rgb_head.bias)


def least_squares(inputs: Tensor, targets: Tensor, ridge: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Weight [out, in] and bias [out] minimising ``|inputs W^T + b - targets|^2`` (with a
    small ridge term so that dead or duplicate inputs do not make the system singular)."""
    a = torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1).double()
    gram = a.T @ a
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype,
                                                       device=gram.device)
    sol = torch.linalg.solve(gram, a.T @ targets.double())
    return sol[:-1].T.float(), sol[-1].float()


@torch.no_grad()
def reconstruct(old, new, keep: list[Tensor], x: Tensor, d: Tensor,
                branch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
    """Refit ``new``'s trunk layers and the alpha / feature heads so that, at ``x``, they
    reproduce ``old``'s pre-activations of the kept neurons (and the heads' outputs); with a
    pruned colour ``branch``, refit the direction layer and colour head too (seen along
    ``d``). Returns each refitted layer's relative error."""
    enc, old_in, _ = trunk_activations(old, x)
    errors = {}
    h = enc
    for i, (a, b) in enumerate(zip(old.layers, new.layers)):
        if i in new.skips:
            h = torch.cat((h, enc), dim=-1)
        errors[f"layers.{i}"] = fit_layer(b, h, a(old_in[i])[:, keep[i]])
        out = b(h)
        h = torch.relu(out) if i > 0 or new.first_activation else out
    last_old = old.layers[-1](old_in[-1])
    if len(old.layers) > 1 or old.first_activation:
        last_old = torch.relu(last_old)
    keep_f = full_branch(old)[0] if branch is None else branch[0]
    for head, rows in (("alpha_head", slice(None)), ("feature", keep_f)):
        errors[head] = fit_layer(getattr(new, head), h, getattr(old, head)(last_old)[:, rows])
    if branch is not None:
        f_old, _ = branch_activations(old, last_old, d)
        f_new, _ = branch_activations(new, h, d)
        denc = positional_encoding(d, old.dir_freqs)
        g_target = old.dir_layer(torch.cat((f_old, denc), -1))
        errors["dir_layer"] = fit_layer(new.dir_layer, torch.cat((f_new, denc), -1),
                                        g_target[:, branch[1]])
        _, g_new = branch_activations(new, h, d)
        errors["rgb_head"] = fit_layer(new.rgb_head, g_new,
                                       old.rgb_head(torch.relu(g_target)))
    return errors


def fit_layer(layer: nn.Linear, inputs: Tensor, target: Tensor) -> float:
    """Set ``layer`` to the least-squares map from ``inputs`` to ``target``; returns its
    relative error."""
    w, bias = least_squares(inputs, target)
    layer.weight.copy_(w)
    layer.bias.copy_(bias)
    return float((layer(inputs) - target).norm() / target.norm().clamp(min=1e-12))


def prune_neurons(c: Compressed, ratio: float, scene: Scene | None, refit_steps: int = 0,
                  refit_lr: float = REFIT_LR, colour_branch: bool = False, quiet: bool = True
                  ) -> dict[str, Any]:
    """Remove ``ratio`` of every trunk layer's neurons in both networks of an MLP NeRF (in
    place on ``c``), and with ``colour_branch`` the same share of the feature channels and
    direction-layer neurons; with ``scene``, choose them by activity, refit the kept weights
    by least squares, then (``refit_steps`` > 0) distil the original into the pruned model
    (``refit``)."""
    from nerfzip.fields.mlp_nerf import MLPNeRF

    field = c.model.field
    if not isinstance(field, MLPNeRF):
        raise NerfzipError(f"prune(method=neurons) works on MLP NeRFs, not {field.family}")
    if c.constraints or field.low_rank:
        raise NerfzipError("prune(method=neurons) must come before passes that constrain or "
                           "factorise layers (it changes their shapes)")
    before = field.num_parameters()
    cfg = field.config
    widths = list(cfg.widths or (cfg.hidden,) * cfg.depth)
    nets = {name: getattr(field, name) for name in ("fine", "coarse")
            if getattr(field, name) is not None}
    x = d = None
    if refit_steps > 0 and scene is None:
        raise NerfzipError("prune(method=neurons, refit_steps=...) needs the scene's training "
                           "views")
    if scene is not None:
        x, d = calibration_points(c.model, scene)
    keeps, branches = {}, {}
    for name, net in nets.items():
        activity = branch_activity = None
        if x is not None:
            with torch.no_grad():
                outputs = trunk_activations(net, x)[2]
                activity = [h.abs().mean(dim=0) for h in outputs]
                branch_activity = tuple(a.abs().mean(dim=0)
                                        for a in branch_activations(net, outputs[-1], d))
        keeps[name] = neuron_keep(net, ratio, activity)
        branches[name] = (branch_keep(net, ratio, branch_activity) if colour_branch
                          else full_branch(net))
    # Coarse and fine share one config: they keep the same number of neurons per layer.
    new_widths = tuple(int(k.numel()) for k in keeps["fine"])
    feature_width, dir_width = (int(k.numel()) for k in branches["fine"])
    new_cfg = replace(cfg, widths=new_widths, hidden=feature_width, dir_hidden=dir_width)
    new_field = type(field)(new_cfg, field.aabb.detach().clone()).to(field.aabb.device)
    report: dict[str, Any] = {"widths_before": widths, "widths_after": list(new_widths),
                              "parameters_before": before,
                              "parameters_after": new_field.num_parameters(),
                              "reconstructed": x is not None}
    if colour_branch:
        report["colour_branch_before"] = [cfg.hidden, cfg.dir_hidden]
        report["colour_branch_after"] = [feature_width, dir_width]
    with torch.no_grad():
        for name, keep in keeps.items():
            old, new = nets[name], getattr(new_field, name)
            copy_pruned(old, new, keep, branches[name])
            if x is not None:
                report[f"{name}_fit_error"] = reconstruct(
                    old, new, keep, x, d, branches[name] if colour_branch else None)
    new_field.low_rank = dict(field.low_rank)
    original = c.model
    c.model = replace(original, field=new_field)
    if refit_steps > 0:
        assert scene is not None
        report["refit"] = refit(original, c.model, scene, refit_steps, refit_lr, quiet)
    if x is not None:
        report["colour_error"] = colour_error(field, new_field, x, d)
    return report


def refit(original: RadianceModel, pruned: RadianceModel, scene: Scene, steps: int,
          lr: float = REFIT_LR, quiet: bool = True) -> dict[str, float]:
    """Train the pruned model to render like the original, in place: distillation
    (``distill.train_student``) from rendered random novel-view rays plus point-wise density
    and colour targets in occupied space. The points come from the model's occupancy grid, or
    from a grid built from the original's density for a hierarchically sampled model.

    Matching sample outputs alone (what the least-squares rebuild does) leaves a pruned network
    several dB short on real scenes; the rendered rays weigh errors as the images do. Returns
    the pruned model's PSNR against the original on held-out novel rays, before and after."""
    cfg = DistillConfig(steps=steps, lr=lr)
    cfg.check()
    points = None
    if original.occupancy is None or original.render.sampler != "occupancy":
        grid, step = density_grid(original, 1.0, torch.Generator().manual_seed(cfg.seed))
        points = OccupiedPoints(grid, original.field.aabb, step)
    before = heldout_psnr(pruned, original, scene, n=1024)
    t0 = time.perf_counter()
    log = train_student(pruned, original, scene, cfg, quiet, points)
    seconds = time.perf_counter() - t0
    return {"heldout_psnr_before": before,
            "heldout_psnr_after": heldout_psnr(pruned, original, scene, n=1024),
            "train_psnr_last": tail_mean(log["psnr"]), "seconds": seconds}


@torch.no_grad()
def colour_error(old: nn.Module, new: nn.Module, x: Tensor, d: Tensor) -> float:
    """Mean absolute colour difference of the fine networks at the calibration points."""
    return float((old(x, d)[1] - new(x, d)[1]).abs().mean())
