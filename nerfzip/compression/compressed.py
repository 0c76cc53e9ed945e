"""What a compressed model carries between passes: the model, the constraints each pass put on
its tensors (``constraints/``: which entries are pruned, which grid a tensor is quantized to,
which codebook its feature vectors come from, which factors it is the product of) and the pass
history; and how it is saved (``save``: every tensor as its constraints say).

Constraints are what fine-tuning keeps (``fit/finetune``), what the .nrz encoder is told
(``save_options``) and what the tests check stays fixed. A ``Compressed`` marks the model it
holds (``PENDING``), so that saving that model on its own, which would store constrained
tensors dense, is refused by the codec instead of silently losing the factors or codebooks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nerfzip.codec.nrz import SaveOptions, SaveReport
from nerfzip.codec.nrz import save as save_nrz
from nerfzip.codec.tensors import TensorSpec
from nerfzip.compression.constraints import Constraint, constrained
from nerfzip.rendering.model import RadianceModel

PENDING = "pending_constraints"
"""Attribute of a model held by a ``Compressed``: its constraints (name -> list), live."""


def merged(current: list[Constraint], constraint: Constraint, name: str) -> list[Constraint]:
    """Tensor ``name``'s constraints once ``constraint`` arrives on ``current`` (a new list):
    the tensor's constraints decide what it becomes (``absorb``) and which of them it replaces
    (``replaces``)."""
    for c in current:
        constraint = c.absorb(constraint, name)
    return [c for c in current if not constraint.replaces(c)] + [constraint]


def storage_spec(constraints: list[Constraint], base: TensorSpec) -> TensorSpec:
    """The spec the encoder writes a tensor under ``constraints`` with (each folds its own
    ``storage`` into ``base``, in the order they were added)."""
    for c in constraints:
        base = c.storage(base)
    return base


@dataclass
class Compressed:
    """A model under compression: the model, per-tensor constraints and the pass history."""

    model: RadianceModel
    constraints: dict[str, list[Constraint]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        setattr(self.model, PENDING, self.constraints)

    @classmethod
    def of(cls, model: RadianceModel | Compressed) -> Compressed:
        """A deep copy to work on (passes never mutate their input). A model taken out of a
        ``Compressed`` (``c.model``) keeps its constraints."""
        if isinstance(model, Compressed):
            return copy.deepcopy(model)
        pending = getattr(model, PENDING, None) or {}
        model, pending = copy.deepcopy((model, pending))
        return cls(model, pending, list(model.meta.get("pipeline", [])))

    def add(self, name: str, constraint: Constraint) -> None:
        """Put ``constraint`` on tensor ``name``: the tensor's constraints decide what it
        becomes (``absorb``) and which of them it replaces (``replaces``)."""
        self.constraints[name] = merged(self.constraints.get(name, []), constraint, name)

    def tensors(self) -> dict[str, Tensor]:
        """The field's learned parameters by name (live: writing to them changes the field).
        Buffers are left out: the only one, the field's box, is geometry that no pass may
        round (``quant(4, min_elements=1)`` would otherwise move a cropped box's corners)."""
        return dict(self.model.field.named_parameters())

    @torch.no_grad()
    def project(self) -> None:
        """Re-impose every constraint on the field's tensors (in place)."""
        tensors = self.tensors()
        for name, cons in self.constraints.items():
            x = tensors[name]
            x.copy_(constrained(x, cons))

    def record(self, step: str, args: dict[str, Any], report: dict[str, Any]) -> None:
        self.history.append({"step": step, "args": args, "report": report})
        self.model.meta["pipeline"] = list(self.history)

    def save_options(self, base: SaveOptions | None = None) -> SaveOptions:
        """Encoder options whose per-tensor specs follow the constraints (each folds its own
        ``storage`` into the tensor's spec: grid symbols, codebook + indices, factors);
        everything else as ``base`` says (lossless by default)."""
        base = base or SaveOptions()
        specs = dict(base.specs)
        for name, cons in self.constraints.items():
            specs[name] = storage_spec(cons, TensorSpec(coders=base.coders))
        return SaveOptions(mode=base.mode, bits=base.bits, per_channel=base.per_channel,
                           min_lossy_elements=base.min_lossy_elements, coders=base.coders,
                           specs=specs)

    def save(self, path: str | Path, options: SaveOptions | None = None, **kwargs: Any
             ) -> SaveReport:
        """Write the model as one .nrz file with the constraints' own storage; ``options`` /
        keyword arguments (``SaveOptions``) set how unconstrained tensors are written."""
        setattr(self.model, PENDING, self.constraints)  # the model may have been replaced
        return save_nrz(self.model, path, self.save_options(options or SaveOptions(**kwargs)))
