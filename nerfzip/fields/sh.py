"""Real spherical harmonics of unit directions, bands 0-3 (16 coefficients).

The basis of Sloan, "Stupid Spherical Harmonics (SH) Tricks" (GDC 2008), appendix A2, with the
Condon-Shortley phase, as instant-ngp's ``SphericalHarmonics`` encoding (degree 4) and
Plenoxels write it. Each ``Y_l^m`` is a polynomial in the direction's x, y, z with constant
``sqrt((2l + 1) / 4 pi * (l - |m|)! / (l + |m|)!)`` times the Legendre factor, e.g.
``Y_0^0 = 1 / (2 sqrt(pi))`` and ``Y_1^{-1} = -sqrt(3 / 4 pi) y``; the set is orthonormal on the
unit sphere: ``int Y_i Y_j dOmega = delta_ij``.
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
"""1 / (2 sqrt(pi))."""
SH_C1 = 0.4886025119029199
"""sqrt(3 / (4 pi))."""
SH_C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
"""sqrt(15 / pi) / 2, sqrt(5 / pi) / 4, sqrt(15 / pi) / 4."""
SH_C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154,
         1.445305721320277)
"""sqrt(35 / 2 pi) / 4, sqrt(105 / pi) / 2, sqrt(21 / 2 pi) / 4, sqrt(7 / pi) / 4,
sqrt(105 / pi) / 4."""

SH_DIM = 16
"""Coefficients of bands 0-3."""


def spherical_harmonics(d: Tensor) -> Tensor:
    """The 16 real SH basis functions at unit directions ``d`` [N, 3] -> [N, 16], ordered by
    band l = 0..3 and within a band by m = -l..l."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    c2, c3 = SH_C2, SH_C3
    return torch.stack([
        torch.full_like(x, SH_C0),
        -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        c2[0] * x * y, -c2[0] * y * z, c2[1] * (3.0 * zz - 1.0), -c2[0] * x * z,
        c2[2] * (xx - yy),
        -c3[0] * y * (3.0 * xx - yy), c3[1] * x * y * z, -c3[2] * y * (5.0 * zz - 1.0),
        c3[3] * z * (5.0 * zz - 3.0), -c3[2] * x * (5.0 * zz - 1.0), c3[4] * z * (xx - yy),
        -c3[0] * x * (xx - 3.0 * yy),
    ], dim=-1)
