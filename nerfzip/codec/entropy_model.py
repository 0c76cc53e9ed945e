"""A learned entropy model for quantized latents: Ballé et al.'s factorized prior, in PyTorch,
with the CompressAI life cycle (``forward`` while training, ``update`` to freeze the discrete
tables the coder needs, ``compress`` / ``decompress`` with a real range coder).

The density of channel c is learned non-parametrically (Ballé, Minnen, Singh, Hwang, Johnston,
"Variational image compression with a scale hyperprior", ICLR 2018, appendix 6.1): its
cumulative is ``sigmoid(f_c(y))`` with ``f_c`` a small monotone network (matrices through a
softplus, so every weight is positive; ``tanh`` gates whose factors are squashed to (-1, 1)).
The probability of an integer symbol q is the mass of the density over [q - 1/2, q + 1/2],
mixed with a learned point mass pi_c at exactly 0 (spike and slab: exact zeros, from pruning or
never-trained hash entries, are common in grids and no smooth density holds them):

    p_c(q) = (1 - pi_c) (sigmoid(f_c(q + 1/2)) - sigmoid(f_c(q - 1/2))) + pi_c [q = 0]

While training, latents get additive uniform noise in [-1/2, 1/2) (the continuous relaxation
of rounding) and ``bits`` is a differentiable estimate of the coded size. ``update`` freezes the
model into integer frequency tables (``FrozenPrior``): per channel a support ``[lo, lo + L)``
holding all but ``TAIL_MASS`` of the density, each symbol's frequency out of ``2^PRECISION``
(at least 1), and an escape symbol for values outside the support, which are then stored
verbatim. The coder (``constriction.stream.queue.RangeEncoder`` with one
``Categorical`` model per channel built from the integer table) is driven by these tables
alone, so encoder and decoder see bit-identical models on any machine: a file stores the
tables, never floats to recompute them from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfzip.codec.binary import FormatError

PRECISION = 16
"""Bits of the frozen frequency tables: every channel's frequencies sum to 2^PRECISION (a
file may store them requantized to fewer bits, ``FrozenPrior.at_precision``)."""
PRECISIONS = range(8, 17)
"""Table precisions a file may use."""
TAIL_MASS = 1e-4
"""Density mass left outside a channel's support (values there are escaped)."""
MAX_SUPPORT = 1 << 13
"""Longest support of one channel's table (symbols); wider densities escape their tails."""
MAX_SYMBOL = 1 << 30
"""Largest magnitude of a stored integer latent."""
LIKELIHOOD_BOUND = 1e-9
"""Floor of a symbol's modelled probability (keeps the rate finite and its gradient sane)."""


def channels_first(x: Tensor, axis: int) -> Tensor:
    """``x`` as [C, N] with its channels (along ``axis``) first."""
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def channels_back(v: Tensor, shape: tuple[int, ...], axis: int) -> Tensor:
    """Inverse of ``channels_first`` for a tensor of ``shape``."""
    moved = [shape[axis]] + [s for i, s in enumerate(shape) if i != axis]
    return v.reshape(moved).movedim(0, axis)


def dequantize_latent(q: Tensor, step: Tensor, axis: int) -> Tensor:
    """Values of integer latents ``q`` with per-channel ``step`` [C] along ``axis``: ``q *
    step`` in float32, the one formula the constraint and the decoder share."""
    shape = [1] * q.dim()
    shape[axis] = -1
    return q.to(torch.float32) * step.to(torch.float32).view(shape)


def minimise(loss: Callable[[], Tensor], params: Iterable[Tensor], steps: int,
             lr: float) -> float:
    """Adam on ``loss()`` (a fresh batch each call) for ``steps`` steps; the last value. The
    entropy models fit their densities to fixed latents with it."""
    opt = torch.optim.Adam(params, lr=lr)
    last = float("nan")
    for _ in range(steps):
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        last = float(value.detach())
    return last


class FactorizedPrior(nn.Module):
    """Per-channel learned densities of integer latents [C, N] (see the module docstring).

    ``filters``: widths of the hidden layers of each channel's cumulative network (Ballé's
    (3, 3, 3)); ``init_scale``: the initial density's spread, in quantization steps (one for
    all channels, or one per channel: a fit starting near the data's spread converges in
    far fewer steps)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3),
                 init_scale: float | Tensor = 10.0):
        super().__init__()
        self.channels = channels
        widths = (1, *filters, 1)
        scales = torch.as_tensor(init_scale, dtype=torch.float64).expand(channels)
        scale = scales.clamp_min(1.0) ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = torch.log(torch.expm1(1.0 / scale / widths[i + 1])).float()
            self.matrices.append(nn.Parameter(init.view(-1, 1, 1).expand(
                channels, widths[i + 1], widths[i]).clone()))
            gen = torch.Generator().manual_seed(i)
            self.biases.append(nn.Parameter(torch.rand((channels, widths[i + 1], 1),
                                                       generator=gen) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.spike = nn.Parameter(torch.full((channels, 1), -6.0))
        """Logit of each channel's point mass at exactly 0 (a spike-and-slab prior: pruned
        or never-trained entries are exact zeros, which no smooth density holds)."""
        self.frozen: FrozenPrior | None = None

    # --- the functional core: parameters passed in, so fine-tuning can train copies -------
    def params(self) -> list[Tensor]:
        """Every parameter in a fixed order (what ``cumulative_logits`` takes)."""
        return [*self.matrices, *self.biases, *self.factors, self.spike]

    def cumulative_logits(self, y: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """``f_c(y)`` for y [C, N]: the logit of the cumulative density at y."""
        p = self.params() if params is None else params
        n = len(self.matrices)
        mats, biases, factors = p[:n], p[n:2 * n], p[2 * n:3 * n - 1]
        h = y.unsqueeze(1)  # [C, 1, N]
        for i in range(n):
            h = torch.matmul(F.softplus(mats[i]), h) + biases[i]
            if i < n - 1:
                h = h + torch.tanh(factors[i]) * torch.tanh(h)
        return h.squeeze(1)

    def smooth_likelihood(self, y: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """Mass of the smooth density over [y - 1/2, y + 1/2] for y [C, N]. The difference of
        sigmoids is taken on the side where they are small (CompressAI's sign trick), so far
        tails keep their precision."""
        lower = self.cumulative_logits(y - 0.5, params)
        upper = self.cumulative_logits(y + 0.5, params)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """Probability of [y - 1/2, y + 1/2] for y [C, N] (floored at LIKELIHOOD_BOUND):
        ``(1 - pi) * smooth + pi * spike``, the spike's share of the bin ``max(0, 1 - |y|)``
        (its mass at 0 spread by the same uniform noise as the latents: exactly [y == 0] at
        integers)."""
        p = self.params() if params is None else params
        pi = torch.sigmoid(p[-1])
        spike = (1 - y.abs()).clamp_min(0)
        lik = (1 - pi) * self.smooth_likelihood(y, p) + pi * spike
        return lik.clamp_min(LIKELIHOOD_BOUND)

    def bits(self, y: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """Estimated coded size of y [C, N] in bits (differentiable)."""
        return -torch.log2(self.likelihood(y, params)).sum()

    def forward(self, y: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """(quantized latents, likelihoods) of y [C, N]: additive uniform noise while training,
        rounding otherwise (CompressAI's ``EntropyBottleneck.forward``)."""
        if self.training:
            noise = torch.rand(y.shape, generator=generator, device=y.device) - 0.5
            y_hat = y + noise
        else:
            y_hat = torch.round(y)
        return y_hat, self.likelihood(y_hat)

    def fit(self, y: Tensor, steps: int = 300, lr: float = 1e-2, sample: int = 16384,
            seed: int = 0) -> float:
        """Fit the densities to integer latents y [C, N] alone: maximum likelihood of the
        symbols' probabilities themselves (no noise: the latents are already integers, and
        noise would blur a peaked density twice), Adam on at most ``sample`` values per
        channel a step; returns the last bits per value."""
        gen = torch.Generator(device=y.device).manual_seed(seed)
        y = torch.round(y.detach())

        def bits() -> Tensor:
            if y.shape[1] <= sample:
                return -torch.log2(self.likelihood(y)).mean()
            idx = torch.randint(0, y.shape[1], (sample,), generator=gen, device=y.device)
            return -torch.log2(self.likelihood(y[:, idx])).mean()

        bpv = minimise(bits, self.parameters(), steps, lr)
        self.eval()
        return bpv

    # --- the coder's side ------------------------------------------------------------------
    @torch.no_grad()
    def update(self) -> FrozenPrior:
        """Freeze the densities into integer frequency tables (``self.frozen``)."""
        self.frozen = freeze(self)
        return self.frozen

    def compress(self, y: Tensor) -> tuple[bytes, list[int]]:
        """Range-coded bytes of ``round(y)`` for y [C, N] and the escaped values."""
        if self.frozen is None:
            raise RuntimeError("update() the entropy model before compress()")
        return self.frozen.compress(torch.round(y.detach()).to(torch.int64))

    def decompress(self, data: bytes, escapes: list[int], n: int) -> Tensor:
        """The integer latents [C, n] that ``compress`` coded (as float32)."""
        if self.frozen is None:
            raise RuntimeError("update() the entropy model before decompress()")
        return self.frozen.decompress(data, escapes, n).to(torch.float32)


@torch.no_grad()
def support(prior: FactorizedPrior) -> tuple[Tensor, Tensor]:
    """Per channel, the integer range [lo, hi] outside which at most TAIL_MASS of the density
    lies (bisection on the monotone cumulative, float64), at most MAX_SUPPORT long."""
    c = prior.channels
    params = [p.detach().double().cpu() for p in prior.params()]  # tables: on the CPU

    def quantile(target: float) -> Tensor:
        a = torch.full((c, 1), -float(MAX_SYMBOL), dtype=torch.float64)
        b = torch.full((c, 1), float(MAX_SYMBOL), dtype=torch.float64)
        logit = math.log(target / (1 - target))
        for _ in range(80):
            mid = (a + b) / 2
            below = prior.cumulative_logits(mid, params) < logit
            a, b = torch.where(below, mid, a), torch.where(below, b, mid)
        return ((a + b) / 2)[:, 0]

    lo = torch.floor(quantile(TAIL_MASS / 2)).long()
    hi = torch.ceil(quantile(1 - TAIL_MASS / 2)).long()
    spiked = torch.sigmoid(params[-1][:, 0]) > TAIL_MASS  # the support holds 0 as well
    lo = torch.where(spiked, torch.minimum(lo, torch.zeros_like(lo)), lo)
    hi = torch.where(spiked, torch.maximum(hi, torch.zeros_like(hi)), hi)
    median = torch.round(quantile(0.5)).long()
    long = hi - lo + 1 > MAX_SUPPORT
    lo = torch.where(long, median - MAX_SUPPORT // 2, lo)
    hi = torch.where(long, lo + MAX_SUPPORT - 1, hi)
    return lo, hi


def quantized_frequencies(p: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies summing to 2^precision, each 1 plus its share of the rest (largest
    remainders rounded up), so every symbol stays codable."""
    total = 1 << precision
    p = np.maximum(np.asarray(p, dtype=np.float64), 0.0)
    p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
    share = p * (total - p.size)
    freq = 1 + np.floor(share).astype(np.int64)
    deficit = total - int(freq.sum())  # in [0, size): floors only lose
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    freq[order[:deficit]] += 1
    return freq


@torch.no_grad()
def freeze(prior: FactorizedPrior) -> FrozenPrior:
    """The integer tables of ``prior`` (``FactorizedPrior.update``)."""
    lo, hi = support(prior)
    params = [p.detach().double().cpu() for p in prior.params()]  # tables: on the CPU
    lengths, freqs = [], []
    for c in range(prior.channels):
        k = torch.arange(int(lo[c]), int(hi[c]) + 1, dtype=torch.float64)
        one = [t[c:c + 1] for t in params]
        lower = prior.cumulative_logits(k[None] - 0.5, one)[0]
        upper = prior.cumulative_logits(k[None] + 0.5, one)[0]
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).numpy()
        pi = float(torch.sigmoid(one[-1]).reshape(()))
        pmf = (1 - pi) * pmf
        if int(lo[c]) <= 0 <= int(hi[c]):
            pmf[-int(lo[c])] += pi  # (else the spike's mass goes to the escape)
        tail = max(0.0, 1.0 - float(pmf.sum()))
        freqs.append(quantized_frequencies(np.append(pmf, tail)))
        lengths.append(pmf.size)
    return FrozenPrior(lo.numpy().astype(np.int64), np.array(lengths, dtype=np.int64),
                       np.concatenate(freqs))


@dataclass
class FrozenPrior:
    """The discrete tables a coder needs: per channel c the first symbol ``lo[c]``, the support
    length ``lengths[c]`` and ``lengths[c] + 1`` frequencies (the last one the escape's), all
    channels' frequencies concatenated in ``freqs``, each channel's summing to 2^PRECISION."""

    lo: np.ndarray
    lengths: np.ndarray
    freqs: np.ndarray
    precision: int = PRECISION

    def __post_init__(self) -> None:
        self.check()

    def at_precision(self, precision: int) -> FrozenPrior:
        """The same tables requantized to sum to 2^precision (smaller to store, a little less
        exact to code with)."""
        if precision == self.precision:
            return self
        if int(self.lengths.max()) + 1 > 1 << precision:
            raise ValueError(f"a {int(self.lengths.max())}-symbol table cannot be stored at "
                             f"{precision} bits")
        tables = [quantized_frequencies(self.table(c).astype(np.float64), precision)
                  for c in range(self.channels)]
        return FrozenPrior(self.lo, self.lengths, np.concatenate(tables), precision)

    @property
    def channels(self) -> int:
        return int(self.lo.size)

    def check(self) -> None:
        """Every table well formed (FormatError otherwise: this is what a decoder reads)."""
        c = self.lo.size
        if self.lo.shape != (c,) or self.lengths.shape != (c,) or c == 0:
            raise FormatError("entropy model: offsets and lengths need one entry per channel")
        if int(np.abs(self.lo).max()) > MAX_SYMBOL or int(self.lengths.min()) < 1 or \
                int(self.lengths.max()) > MAX_SUPPORT:
            raise FormatError("entropy model: a channel's support is out of range")
        if self.freqs.shape != (int(self.lengths.sum()) + c,):
            raise FormatError(f"entropy model: {self.freqs.size} frequencies where the "
                              f"supports need {int(self.lengths.sum()) + c}")
        if self.precision not in PRECISIONS:
            raise FormatError(f"entropy model: table precision {self.precision!r} (8-16 bits)")
        if int(self.freqs.min()) < 1:
            raise FormatError("entropy model: a frequency below 1")
        sums = np.add.reduceat(self.freqs, self.starts())
        if not np.all(sums == 1 << self.precision):
            raise FormatError(f"entropy model: a channel's frequencies do not sum to "
                              f"2^{self.precision}")

    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    def table(self, c: int) -> np.ndarray:
        s = int(self.starts()[c])
        return self.freqs[s:s + int(self.lengths[c]) + 1]

    def model(self, c: int):  # -> constriction.stream.model.Categorical
        return constriction.stream.model.Categorical(self.table(c).astype(np.float64),
                                                     perfect=False)

    def bits(self, q: Tensor) -> float:
        """Exact ideal code length of integer latents q [C, N] under the tables (escapes
        counted as their symbol plus 32 bits)."""
        total = 0.0
        for c in range(self.channels):
            idx, esc = self.symbols(q[c].numpy(), c)
            p = self.table(c)[idx] / float(1 << self.precision)
            total += float(-np.log2(p).sum()) + 32 * int(esc.size)
        return total

    def symbols(self, values: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Table indices of channel c's integer values (the escape index where out of its
        support) and the escaped values."""
        idx = values.astype(np.int64) - int(self.lo[c])
        out = (idx < 0) | (idx >= int(self.lengths[c]))
        idx[out] = int(self.lengths[c])
        return idx.astype(np.int32), values[out].astype(np.int64)

    def compress(self, q: Tensor) -> tuple[bytes, list[int]]:
        """Range-coded bytes of integer latents q [C, N] (channel after channel), and the
        escaped values in coding order."""
        if q.dim() != 2 or q.shape[0] != self.channels:
            raise ValueError(f"latents of shape {list(q.shape)} for a {self.channels}-channel "
                             "entropy model")
        values = q.detach().cpu().to(torch.int64).numpy()
        if values.size and int(np.abs(values).max()) > MAX_SYMBOL:
            raise ValueError(f"a latent beyond +-{MAX_SYMBOL} quantization steps")
        encoder = constriction.stream.queue.RangeEncoder()
        escapes: list[int] = []
        for c in range(self.channels):
            idx, esc = self.symbols(values[c], c)
            encoder.encode(idx, self.model(c))
            escapes.extend(int(v) for v in esc)
        return encoder.get_compressed().astype("<u4").tobytes(), escapes

    def decompress(self, data: bytes | memoryview, escapes: list[int], n: int) -> Tensor:
        """Integer latents [C, n] (int64) from ``compress``'s bytes and escapes."""
        if len(data) % 4:
            raise FormatError("range-coded stream is not a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        out = np.empty((self.channels, n), dtype=np.int64)
        used = 0
        for c in range(self.channels):
            idx = decoder.decode(self.model(c), n).astype(np.int64) if n else \
                np.zeros(0, np.int64)
            out[c] = idx + int(self.lo[c])
            esc = np.flatnonzero(idx == int(self.lengths[c]))
            if used + esc.size > len(escapes):
                raise FormatError("range-coded stream escapes more values than are stored")
            out[c, esc] = np.asarray(escapes[used:used + esc.size], dtype=np.int64)
            used += esc.size
        if not decoder.maybe_exhausted():
            raise FormatError("range-coded stream does not end with its last symbol "
                              "(truncated or corrupted)")
        if used != len(escapes):
            raise FormatError(f"{len(escapes) - used} escaped values left after the stream")
        return torch.from_numpy(out)
