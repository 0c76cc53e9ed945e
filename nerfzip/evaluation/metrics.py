"""Image quality metrics: PSNR and SSIM under the usual NeRF protocol.

Both figures are computed per view on 8-bit images (prediction and ground truth composited on the
background, values read as ``v / 255``), then averaged over views by the caller
(``docs/benchmarks.md``). Everything runs in float64 PyTorch on the CPU; scikit-image serves only
as the reference in the tests.

* PSNR: ``10 * log10(1 / mse)`` with values in [0, 1] (NeRF, Mildenhall et al. 2020).
* SSIM: Wang et al. 2004, with the window and constants of the NeRF / mip-NeRF / TensoRF
  ``compute_ssim``: 11x11 Gaussian window, sigma 1.5, data range 1, K1 = 0.01, K2 = 0.03,
  'valid' filtering, mean of the SSIM map per channel, then the mean over channels. Equal to
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``.

LPIPS is out of scope: it needs pretrained network weights (AlexNet / VGG) that are not available
offline, so nerfzip does not report it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SSIM_WINDOW = 11
"""Side of the SSIM Gaussian window, in pixels."""
SSIM_SIGMA = 1.5
"""Standard deviation of the SSIM Gaussian window, in pixels."""
SSIM_K1 = 0.01
"""SSIM luminance constant: C1 = (K1 * data_range)^2."""
SSIM_K2 = 0.03
"""SSIM contrast constant: C2 = (K2 * data_range)^2."""


def to_uint8(img: Tensor) -> Tensor:
    """Float image in [0, 1] -> uint8: ``round(clamp(x, 0, 1) * 255)``.

    ``img``: [..., 3] (any shape) float; a uint8 input is returned unchanged.
    Returns a uint8 tensor of the same shape.
    """
    img = torch.as_tensor(img)
    if img.dtype == torch.uint8:
        return img
    return torch.round(img.detach().double().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _as_float64(img: Tensor | np.ndarray) -> Tensor:
    """An image as float64 in [0, 1]: uint8 values divided by 255, floats kept as they are."""
    t = torch.as_tensor(img).detach().cpu()
    if t.dtype == torch.uint8:
        return t.double() / 255.0
    if not t.is_floating_point():
        raise TypeError(f"images must be float in [0, 1] or uint8, got {t.dtype}")
    return t.double()


def _pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``pred`` and ``target`` as float64 [H, W, C] images of the same shape."""
    p, t = _as_float64(pred), _as_float64(target)
    if p.shape != t.shape:
        raise ValueError(f"image shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.dim() == 2:
        p, t = p[..., None], t[..., None]
    if p.dim() != 3:
        raise ValueError(f"images must be [H, W, C] or [H, W], got {tuple(p.shape)}")
    return p, t


def psnr(pred: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB: ``10 * log10(1 / mse)``, values in [0, 1] (NeRF).

    ``pred``, ``target``: [H, W, 3], float in [0, 1] or uint8 (read as ``v / 255``); computed in
    float64. Returns ``inf`` for identical images.
    """
    p, t = _pair(pred, target)
    mse = float(torch.mean((p - t) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """[size] float64 Gaussian ``exp(-x^2 / (2 sigma^2))`` on ``x = -(size//2) .. size//2``,
    normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filtering: [N, 1, H, W] -> [N, 1, H - k + 1, W - k + 1]."""
    k = g.numel()
    x = torch.nn.functional.conv2d(x, g.view(1, 1, k, 1))
    return torch.nn.functional.conv2d(x, g.view(1, 1, 1, k))


def ssim(pred: Tensor, target: Tensor) -> float:
    """Structural similarity (Wang et al. 2004) with the NeRF ``compute_ssim`` convention.

    ``pred``, ``target``: [H, W, 3] (or [H, W]), float in [0, 1] or uint8 (read as ``v / 255``),
    H and W at least 11. Per channel, with Gaussian-weighted local statistics (11x11 window,
    sigma 1.5, 'valid' filtering, no padding)::

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    with C1 = (0.01 * 1)^2, C2 = (0.03 * 1)^2; the map is averaged per channel, then over channels.
    Computed in float64; equals scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)``.
    """
    p, t = _pair(pred, target)
    h, w, _ = p.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    g = _gaussian_window()
    x = p.permute(2, 0, 1).unsqueeze(1)  # [C, 1, H, W]
    y = t.permute(2, 0, 1).unsqueeze(1)
    # One batched pass over the five statistics: [5C, 1, H, W] -> valid-filtered.
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]), g).chunk(5)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    per_channel = (num / den).mean(dim=(1, 2, 3))  # [C]
    return float(per_channel.mean())


def image_metrics(pred_u8: Tensor, gt_u8: Tensor) -> dict[str, float]:
    """PSNR and SSIM of one view under the benchmark protocol.

    ``pred_u8``, ``gt_u8``: [H, W, 3] uint8 images, both composited on the background.
    Returns ``{"psnr": dB, "ssim": value in [-1, 1]}``.
    """
    return {"psnr": psnr(pred_u8, gt_u8), "ssim": ssim(pred_u8, gt_u8)}


__all__ = ["image_metrics", "psnr", "ssim", "to_uint8"]
