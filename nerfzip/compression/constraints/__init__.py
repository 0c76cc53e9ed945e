"""Constraints that compression passes put on a field's tensors, one module per type; each
owns its projection, fine-tuning parametrisation, merge rule and storage spec (``base``)."""

from nerfzip.compression.constraints.base import Constraint, constrained, straight_through
from nerfzip.compression.constraints.codebook import Codebook
from nerfzip.compression.constraints.factorized import Factorized
from nerfzip.compression.constraints.half import Half
from nerfzip.compression.constraints.ladder import Ladder
from nerfzip.compression.constraints.mask import Mask
from nerfzip.compression.constraints.quant_grid import QuantGrid

__all__ = ["Codebook", "Constraint", "Factorized", "Half", "Ladder", "Mask", "QuantGrid",
           "constrained", "straight_through"]
