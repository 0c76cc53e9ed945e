"""The learned entropy model's constraint: a tensor's values are integer latents times a
per-channel step, coded with a learned factorized prior (and, for a plane or a line, a
checkerboard context model for half of its positions); fine-tuning trains the steps and the
models with the field and adds their rate estimate, weighted by lambda, to the loss."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from nerfzip.codec.codecs.learned import LearnedSpec
from nerfzip.codec.context_model import CheckerboardContext
from nerfzip.codec.entropy_model import (
    FactorizedPrior,
    FrozenPrior,
    channels_first,
)
from nerfzip.codec.tensors import TensorSpec
from nerfzip.compression.constraints.base import Constraint
from nerfzip.errors import NerfzipError

MB_BITS = 8 * (1 << 20)
"""Bits in a megabyte (2^20 bytes): the unit of the rate term, so lambda is MSE per MB."""
STEP_GAIN = 10.0
"""Fine-tuning trains ``u = log(step) / STEP_GAIN``: at the grids' learning rate a step moves
STEP_GAIN times faster in log scale than a grid value moves (Adam's updates are about lr in
the parameter's own units), so a few hundred steps can halve or double it."""


@dataclass
class LatentPrior(Constraint):
    """Values along ``axis`` are ``round(x / step[c]) * step[c]``, entropy-coded with
    ``prior``. ``lmbda`` weighs the prior's rate estimate (in MB) against the rendering MSE
    during fine-tuning; ``learn_step`` lets fine-tuning move the steps."""

    axis: int
    step: Tensor
    prior: FactorizedPrior
    lmbda: float
    learn_step: bool = True
    rate_sample: int = 0
    """Values per tensor the rate estimate of one step reads (0: all; else a random subset,
    scaled up, an unbiased estimate)."""
    seed: int = 0
    context: CheckerboardContext | None = None
    """A checkerboard context model of the non-anchor positions (the prior then rates the
    anchors only); None: the prior rates every latent."""
    calls: int = field(default=0, compare=False)

    order = 1
    slot = "rounding"

    def shape(self, x: Tensor) -> list[int]:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return shape

    def project(self, x: Tensor) -> Tensor:
        return self.rounded(x, self.step)

    def project_with(self, x: Tensor, trained: list[Tensor]) -> Tensor:
        return self.rounded(x, self.step_of(trained))

    def rounded(self, x: Tensor, step: Tensor) -> Tensor:
        """``round(x / step) * step``, exactly the codec's values: straight-through in x, and
        in the step the gradient of ``step * round(x / step)`` with the rounding taken as
        identity (as LSQ learns its steps)."""
        step = step.to(x.dtype).view(self.shape(x))
        y = x / step
        q = torch.round(y).detach() + (y - y.detach())  # exactly round(y), gradient 1
        return q * step

    def step_of(self, trained: list[Tensor]) -> Tensor:
        return (trained[0] * STEP_GAIN).exp() if self.learn_step else self.step

    def trainable(self) -> list[Tensor]:
        """The steps (as ``log(step) / STEP_GAIN``), the prior's parameters and the context
        model's."""
        ctx = [] if self.context is None else [p.detach() for p in self.context.params()]
        return [self.step.log() / STEP_GAIN] + [p.detach() for p in self.prior.params()] + ctx

    def split(self, trained: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The prior's and the context model's tensors of ``trained[1:]``."""
        n = len(self.prior.params())
        return trained[1:1 + n], trained[1 + n:]

    def penalty_with(self, x: Tensor, trained: list[Tensor]) -> Tensor | None:
        """lambda x the estimated coded size of ``x``'s latents in MB: the models' bits of
        ``x / step`` plus uniform noise in [-1/2, 1/2) (Ballé's relaxation of rounding); the
        context model reads its neighbours rounded (what the decoder sees, straight-through)."""
        step = self.step_of(trained).to(x.dtype)
        y = channels_first(x, self.axis) / step[:, None]
        gen = torch.Generator(device=y.device).manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        prior_params, ctx_params = self.split(trained)
        if self.context is None:
            n = y.shape[1]
            scale = 1.0
            if 0 < self.rate_sample < y.numel():
                per = max(1, self.rate_sample // y.shape[0])
                idx = torch.randint(0, n, (per,), generator=gen, device=y.device)
                y, scale = y[:, idx], n / per
            noisy = y + (torch.rand(y.shape, generator=gen, device=y.device) - 0.5)
            bits = self.prior.bits(noisy, prior_params) * scale
            return self.lmbda * bits / MB_BITS
        noisy = y + (torch.rand(y.shape, generator=gen, device=y.device) - 0.5)
        rounded = y + (torch.round(y) - y).detach()
        anchors = noisy[:, self.context.anchors]
        bits = self.sampled_bits(anchors, None, gen, lambda v: self.prior.bits(v, prior_params))
        m = self.context.others.numel()
        bits = bits + self.sampled_bits(
            noisy, m, gen, lambda sel: self.context.bits(noisy, rounded, ctx_params, sel))
        return self.lmbda * bits / MB_BITS

    def sampled_bits(self, v: Tensor, m: int | None, gen: torch.Generator, rate) -> Tensor:
        """``rate`` of v [C, n] (m None) or of the m non-anchors (``rate(select)``) on a random
        subset of at most ``rate_sample`` values, scaled up (an unbiased estimate)."""
        n = v.shape[1] if m is None else m
        if not 0 < self.rate_sample < v.shape[0] * n:
            return rate(v if m is None else None)
        per = max(1, self.rate_sample // v.shape[0])
        idx = torch.randint(0, n, (per,), generator=gen, device=v.device)
        return rate(v[:, idx] if m is None else idx) * (n / per)

    def trained(self, trained: list[Tensor], latent: list[Tensor] | None) -> LatentPrior:
        prior = self.prior
        prior_params, ctx_params = self.split(trained)
        with torch.no_grad():
            for p, t in zip(prior.params(), prior_params):
                p.copy_(t.detach())
            if self.context is not None:
                for p, t in zip(self.context.params(), ctx_params):
                    p.copy_(t.detach())
                self.context.frozen = None
        prior.frozen = None  # the tables no longer match the densities
        step = (trained[0].detach() * STEP_GAIN).exp() if self.learn_step else self.step
        return replace(self, step=step, prior=prior, calls=self.calls)

    def absorb(self, new: Constraint, name: str) -> Constraint:
        """A later rounding (quant, half) would undo the learned coding: refused."""
        if new.slot == "rounding" and not isinstance(new, LatentPrior):
            raise NerfzipError(f"{name} is coded with a learned entropy model (entropy_model); "
                               f"{type(new).__name__} cannot round it again: run that pass "
                               "before entropy_model, or keep it off this tensor (include=)")
        return new

    # --- the coder's side ------------------------------------------------------------------
    def update(self) -> FrozenPrior:
        """Freeze the prior's tables and the context model (the codecs code with these)."""
        if self.context is not None:
            self.context.update()
        return self.prior.update()

    def latents(self, x: Tensor) -> Tensor:
        """Integer latents [C, N] of ``x`` (as the codec computes them)."""
        from nerfzip.codec.codecs.learned import latents

        return latents(x, self.step, self.axis)

    def estimate_bits(self, x: Tensor) -> float:
        """The model's own estimate of the coded size of ``x``'s latents (continuous densities
        at the rounded latents; with a context model, the prior's for the anchors and the
        context model's for the others), in bits."""
        device = self.prior.matrices[0].device
        q = self.latents(x).to(device, torch.float32)
        with torch.no_grad():
            if self.context is None:
                return float(self.prior.bits(q))
            return float(self.prior.bits(q[:, self.context.anchors])) + \
                float(self.context.bits(q, q))

    def frozen_context(self):  # -> FrozenContext | None
        """The context model's frozen integers (freezing it if needed), None without one."""
        if self.context is None:
            return None
        return self.context.frozen or self.context.update()

    def storage(self, spec: TensorSpec) -> TensorSpec:
        frozen = self.prior.frozen or self.prior.update()
        return replace(spec, mode="learned",
                       prior=LearnedSpec(self.axis, self.step.detach().cpu().float(), frozen,
                                         self.frozen_context()))

