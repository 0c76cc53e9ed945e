"""What every constraint on a tensor can do: the interface ``Compressed``, fine-tuning and the
encoder call, so that none of them needs to know the kinds of constraint there are.

A constraint says where a tensor's values may lie (exactly zero here, on this grid, one of
these vectors, a product of these factors). It owns

- its **projection** (``project``): the nearest tensor that satisfies it, with a
  straight-through gradient where the projection rounds;
- its **parametrisation for fine-tuning**: the extra tensors fine-tuning trains
  (``trainable``: a codebook), the tensors the constrained tensor is trained through instead
  of itself (``latent`` / ``from_latent``: a factorisation's core and factors), a term it adds
  to the loss (``penalty_with``: a learned prior's rate), and the constraint that results
  (``trained``);
- its **precedence** (``order``) and its **merge rule** (``absorb`` / ``replaces``): what
  happens when a later pass constrains the same tensor again;
- its **storage spec** (``storage``): what it adds to the ``TensorSpec`` the .nrz encoder
  writes the tensor with.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from nerfzip.codec.tensors import TensorSpec


def straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    """``rounded``'s values with ``x``'s gradient. Written ``rounded + (x - x)`` rather than
    ``x + (rounded - x)``: the latter can be one ulp off the grid, the former is exact."""
    return rounded.detach() + (x - x.detach())


class Constraint:
    """Base of every constraint type (a dataclass per type; see the module docstring)."""

    order: ClassVar[int] = 0
    """Projection order: lower first (factorisation -1, codebook 0, rounding 1, mask 2: a
    pruned entry is zero whatever grid it would round to)."""
    slot: ClassVar[str] = ""
    """Constraints in the same slot replace each other (a new grid replaces an older one)..."""
    stacks: ClassVar[bool] = False
    """...unless they stack (masks add up)."""
    factor_bits: ClassVar[int | None] = None
    """Bits a factorised tensor's factors are rounded to when this constraint arrives on it
    (None: this constraint does not round)."""

    def project(self, x: Tensor) -> Tensor:
        """The nearest tensor satisfying the constraint (straight-through where it rounds)."""
        raise NotImplementedError

    # --- merging -------------------------------------------------------------------------
    def absorb(self, new: Constraint, name: str) -> Constraint:
        """What ``new`` becomes when it arrives on tensor ``name`` already under ``self``
        (by default itself); may raise ``NerfzipError`` when the two cannot coexist."""
        return new

    def replaces(self, old: Constraint) -> bool:
        """Whether adding ``self`` drops ``old`` from the tensor's constraints."""
        return old.slot == self.slot and not old.stacks

    # --- fine-tuning ---------------------------------------------------------------------
    def trainable(self) -> list[Tensor]:
        """Tensors of the constraint that fine-tuning trains (e.g. codebook entries)."""
        return []

    def project_with(self, x: Tensor, trained: list[Tensor]) -> Tensor:
        """``project`` with the trainable tensors replaced by ``trained`` (differentiable)."""
        return self.project(x)

    def penalty_with(self, x: Tensor, trained: list[Tensor]) -> Tensor | None:
        """A term fine-tuning adds to its loss for ``x`` (the tensor as it reaches this
        constraint), differentiable in ``x`` and ``trained`` (a learned prior's weighted rate
        estimate); None: nothing."""
        return None

    def latent(self) -> list[Tensor] | None:
        """The tensors the constrained tensor is trained through instead of itself (None:
        the tensor itself)."""
        return None

    def from_latent(self, latent: list[Tensor]) -> Tensor:
        """The tensor of trainable ``latent`` tensors (differentiable)."""
        raise NotImplementedError

    def trained(self, trained: list[Tensor], latent: list[Tensor] | None) -> Constraint:
        """The constraint after fine-tuning: ``trained`` are the final values of
        ``trainable()``, ``latent`` those of ``latent()``."""
        return self

    # --- storage -------------------------------------------------------------------------
    def storage(self, spec: TensorSpec) -> TensorSpec:
        """``spec`` with what this constraint asks of the encoder (folded over a tensor's
        constraints in the order they were added, from the file's base spec)."""
        return spec


def constrained(x: Tensor, constraints: list[Constraint]) -> Tensor:
    """``x`` with its constraints applied in their ``order``."""
    for c in sorted(constraints, key=lambda c: c.order):
        x = c.project(x)
    return x
