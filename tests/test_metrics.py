"""Image metrics against scikit-image and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nerfzip.evaluation.metrics import image_metrics, psnr, ssim, to_uint8

skm = pytest.importorskip("skimage.metrics")


def structured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth [H, W, 3] float64 image in [0, 1]: gradients, sinusoids and a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    chans = []
    for c in range(3):
        f = rng.uniform(2, 8, size=2)
        chans.append(0.5 + 0.25 * np.sin(2 * np.pi * f[0] * xx + c) * np.cos(2 * np.pi * f[1] * yy)
                     + 0.2 * (xx - yy))
    img = np.stack(chans, -1)
    img[h // 4: h // 2, w // 4: w // 2] = 0.95
    return np.clip(img, 0.0, 1.0)


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(h, w, 3))


def noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=img.shape)
    return np.clip(img + noise, 0.0, 1.0)


def sk_ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(skm.structural_similarity(
        gt, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        channel_axis=-1))


PAIRS = [
    ("random", 32, 40), ("random", 64, 64), ("random", 45, 23),
    ("structured", 32, 40), ("structured", 64, 64), ("structured", 97, 51),
]


def make_pair(kind: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gt = random_image(h, w, 1) if kind == "random" else structured(h, w, 1)
    pred = random_image(h, w, 2) if kind == "random" else noisy(gt, 0.05, 3)
    return pred, gt


@pytest.mark.parametrize(("kind", "h", "w"), PAIRS)
def test_psnr_matches_skimage_float(kind: str, h: int, w: int) -> None:
    pred, gt = make_pair(kind, h, w)
    ref = skm.peak_signal_noise_ratio(gt, pred, data_range=1)
    assert psnr(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(ref, abs=1e-4)
    # float32 inputs give the same figure (computed in float64)
    got32 = psnr(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    assert got32 == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize(("kind", "h", "w"), PAIRS)
def test_psnr_matches_skimage_uint8(kind: str, h: int, w: int) -> None:
    pred, gt = make_pair(kind, h, w)
    p8, g8 = to_uint8(torch.from_numpy(pred)), to_uint8(torch.from_numpy(gt))
    ref = skm.peak_signal_noise_ratio(g8.numpy() / 255.0, p8.numpy() / 255.0, data_range=1)
    assert psnr(p8, g8) == pytest.approx(ref, abs=1e-4)
    # uint8 against its float reading: the same figure
    assert psnr(p8, g8.double() / 255.0) == pytest.approx(ref, abs=1e-4)


def test_psnr_analytic() -> None:
    gt = torch.full((16, 20, 3), 0.3, dtype=torch.float64)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
    assert psnr(gt - 0.01, gt) == pytest.approx(40.0, abs=1e-9)
    assert psnr(gt, gt) == math.inf
    u8 = to_uint8(gt)
    assert psnr(u8, u8) == math.inf


def test_to_uint8_rounds_and_clamps() -> None:
    x = torch.tensor([-0.5, 0.0, 0.4 / 255, 1.6 / 255, 0.25, 1.0, 2.0])
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert out.tolist() == [0, 0, 0, 2, 64, 255, 255]
    # round trip of every 8-bit value
    v = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(v.float() / 255.0), v)


@pytest.mark.parametrize(("kind", "h", "w"), PAIRS)
def test_ssim_matches_skimage(kind: str, h: int, w: int) -> None:
    pred, gt = make_pair(kind, h, w)
    got = ssim(torch.from_numpy(pred), torch.from_numpy(gt))
    assert got == pytest.approx(sk_ssim(pred, gt), abs=1e-4)


def test_ssim_matches_skimage_uint8() -> None:
    gt = structured(48, 56, 4)
    pred = noisy(gt, 0.1, 5)
    p8, g8 = to_uint8(torch.from_numpy(pred)), to_uint8(torch.from_numpy(gt))
    ref = sk_ssim(p8.numpy() / 255.0, g8.numpy() / 255.0)
    assert ssim(p8, g8) == pytest.approx(ref, abs=1e-4)


def test_ssim_identity_is_one() -> None:
    for img in (structured(40, 33, 6), random_image(24, 24, 7)):
        t = torch.from_numpy(img)
        assert ssim(t, t) == pytest.approx(1.0, abs=1e-12)
    u8 = to_uint8(torch.from_numpy(structured(40, 33, 6)))
    assert ssim(u8, u8) == pytest.approx(1.0, abs=1e-12)


def test_ssim_decreases_with_noise() -> None:
    gt = structured(64, 64, 8)
    scores = [ssim(torch.from_numpy(noisy(gt, s, 9)), torch.from_numpy(gt))
              for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))
    assert scores[0] > 0.9


def test_ssim_rejects_small_or_mismatched_images() -> None:
    with pytest.raises(ValueError):
        ssim(torch.zeros(10, 30, 3), torch.zeros(10, 30, 3))
    with pytest.raises(ValueError):
        ssim(torch.zeros(16, 16, 3), torch.zeros(16, 17, 3))


def test_image_metrics_uint8() -> None:
    gt = structured(32, 32, 10)
    pred = noisy(gt, 0.05, 11)
    p8, g8 = to_uint8(torch.from_numpy(pred)), to_uint8(torch.from_numpy(gt))
    m = image_metrics(p8, g8)
    assert set(m) == {"psnr", "ssim"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["psnr"] == pytest.approx(psnr(p8, g8))
    assert m["ssim"] == pytest.approx(ssim(p8, g8))
