"""Rate-distortion curves and their Bjøntegaard comparison.

``bd_rate(anchor, test)`` and ``bd_psnr(anchor, test)`` compare two curves of (bytes, PSNR)
points the standard way (Bjøntegaard, VCEG-M33, 2001; piecewise cubic interpolation as in
VCEG-AL22 and the JVET common test conditions): each curve is interpolated by a monotone
piecewise cubic Hermite (PCHIP, Fritsch & Carlson 1980) of PSNR over log10(rate) (BD-PSNR) or
of log10(rate) over PSNR (BD-rate), the two are integrated over the interval both cover, and
the mean gap is reported: in dB, or as the percentage of rate the test curve saves (negative:
it needs fewer bytes for the same quality).

Command line: ``python benchmarks/rd.py ANCHOR.json TEST.json`` prints both figures for two
point files (each a JSON list of ``{"bytes": ..., "psnr": ...}``), and ``python
benchmarks/rd.py --sweep RUN --data SCENE --lambdas 0.001 0.01 0.1 -o points.json`` runs the
``entropy_model`` pass at each lambda (after ``--before``, e.g. ``prune(method=importance,
keep_mass=0.99)``, run once and shared by every lambda; then ``--then``, by default ``quant(8,
include=decoder)``) and writes such a file (size of the .nrz on disk, PSNR on the test views,
compress seconds); with ``--name`` also the record ``benchmarks/records/rd_<name>.json``
(``report.py`` renders its table) with the model's own PSNR on the same views.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots of a monotone cubic Hermite interpolant
    (the three-point end formula, clipped to keep the shape, as SciPy's PchipInterpolator)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = x.size
    d = np.zeros(n)
    if n == 2:
        return np.full(2, delta[0])
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    for end, (h0, h1, d0, d1) in ((0, (h[0], h[1], delta[0], delta[1])),
                                  (n - 1, (h[-1], h[-2], delta[-1], delta[-2]))):
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            s = 0.0
        elif np.sign(d0) != np.sign(d1) and abs(s) > abs(3 * d0):
            s = 3 * d0
        d[end] = s
    return d


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """The integral over [lo, hi] (inside [x0, x_last]) of the PCHIP interpolant of (x, y),
    x strictly increasing: on each piece, the Hermite cubic integrated exactly."""
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(x.size - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        # Hermite basis on t in [0, 1]: p(t) = y0 h00 + h d0 h10 + y1 h01 + h d1 h11.
        # Antiderivatives of the basis in t, evaluated at the bounds (scaled by h).
        def prim(t: float, k: int = k, h: float = h) -> float:
            h00 = t - t**3 + t**4 / 2
            h10 = t**2 / 2 - 2 * t**3 / 3 + t**4 / 4
            h01 = t**3 - t**4 / 2
            h11 = -t**3 / 3 + t**4 / 4
            return h * (y[k] * h00 + h * d[k] * h10 + y[k + 1] * h01 + h * d[k + 1] * h11)

        total += prim((b - x[k]) / h) - prim((a - x[k]) / h)
    return total


def curve(points: list[tuple[float, float]], x_is_rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a curve sorted by x: x = log10(rate), y = PSNR (``x_is_rate``) or the
    reverse; refuses curves PCHIP cannot interpolate (repeated x, fewer than 2 points)."""
    if len(points) < 2:
        raise ValueError("a rate-distortion curve needs at least 2 points")
    rate = np.log10(np.array([p[0] for p in points], dtype=np.float64))
    psnr = np.array([p[1] for p in points], dtype=np.float64)
    x, y = (rate, psnr) if x_is_rate else (psnr, rate)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("repeated " + ("rates" if x_is_rate else "PSNRs") + " in a curve")
    return x, y


def mean_gap(anchor: list[tuple[float, float]], test: list[tuple[float, float]],
             x_is_rate: bool) -> float:
    xa, ya = curve(anchor, x_is_rate)
    xt, yt = curve(test, x_is_rate)
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if hi <= lo:
        raise ValueError("the two curves do not overlap")
    return (pchip_integral(xt, yt, lo, hi) - pchip_integral(xa, ya, lo, hi)) / (hi - lo)


def bd_psnr(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """Mean PSNR gain (dB) of ``test`` over ``anchor`` at equal rate; points are (rate, PSNR)."""
    return mean_gap(anchor, test, x_is_rate=True)


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """Mean rate change (%) of ``test`` against ``anchor`` at equal PSNR (negative: smaller)."""
    return (10 ** mean_gap(anchor, test, x_is_rate=False) - 1) * 100


def read_points(path: str | Path) -> list[tuple[float, float]]:
    rows = json.loads(Path(path).read_text())
    return [(float(r["bytes"]), float(r["psnr"])) for r in rows]


def sweep(run: str, data: str, lambdas: list[float], steps: int, out: str, every: int,
          then: str = "", before: str = "") -> list[dict]:
    """The ``entropy_model`` pass at each lambda, after the pipeline ``before`` (run once, its
    time added to every point) and followed by ``then`` (e.g. ``quant(8, include=decoder)``):
    file bytes, test PSNR, compress seconds."""
    import nerfzip

    model = nerfzip.load_model(run)
    scene = nerfzip.load_scene(data)
    t0 = time.perf_counter()
    if before:
        model = nerfzip.run_pipeline(model, nerfzip.parse_pipeline(before), scene, quiet=False)
    before_seconds = time.perf_counter() - t0
    rows = []
    for lam in lambdas:
        t0 = time.perf_counter() - before_seconds
        c, report = nerfzip.entropy_model(model, lam, steps=steps, scene=scene, quiet=False)
        if then:
            c = nerfzip.run_pipeline(c, nerfzip.parse_pipeline(then), scene)
        path = Path(out).with_suffix(f".lambda{lam:g}.nrz")
        size = c.save(path).bytes
        seconds = time.perf_counter() - t0
        res = nerfzip.evaluate(nerfzip.load(path), scene, "test", every=every, quiet=True)
        rows.append({"lambda": lam, "before": before, "then": then, "steps": steps,
                     "bytes": size, "psnr": res["mean"]["psnr"],
                     "ssim": res["mean"]["ssim"], "compress_seconds": seconds,
                     "grid_bytes": report["grid_bytes"],
                     "latent_stream_bytes": report["stream_bytes"],
                     "latent_estimate_bytes": report["estimate_bytes"]})
        print(json.dumps(rows[-1]), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1))
    return rows


def write_record(name: str, run: str, data: str, every: int, rows: list[dict],
                 model_psnr: float | None, argv: list[str]) -> Path:
    """``benchmarks/records/rd_<name>.json``: the points, the model's own PSNR on the same
    test views (evaluated here unless given), the command and the machine."""
    import nerfzip
    from common import RECORDS

    from nerfzip.utils.io import write_json
    from nerfzip.utils.machine import machine_info

    if model_psnr is None:
        res = nerfzip.evaluate(nerfzip.load_model(run), nerfzip.load_scene(data), "test",
                               every=every, quiet=True)
        model_psnr = res["mean"]["psnr"]
    path = RECORDS / f"rd_{name}.json"
    write_json(path, {"benchmark": "rd", "name": name, "scene": Path(data).name,
                      "model": run, "model_psnr": model_psnr, "every": every, "points": rows,
                      "command": "python benchmarks/rd.py " + " ".join(
                          a if a and " " not in a and "(" not in a else repr(a) for a in argv),
                      "machine": machine_info()})
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="ANCHOR.json TEST.json: BD-rate and BD-PSNR")
    ap.add_argument("--sweep", metavar="RUN", help="run entropy_model at each --lambdas")
    ap.add_argument("--data", help="the scene (with --sweep)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--before", default="",
                    help="pipeline run once before entropy_model (e.g. a prune)")
    ap.add_argument("--then", default="quant(8, include=decoder)",
                    help="pipeline run after entropy_model ('' for none)")
    ap.add_argument("--every", type=int, default=8, help="test views: every n-th")
    ap.add_argument("-o", "--out", default="rd_points.json")
    ap.add_argument("--name", help="with --sweep: also write benchmarks/records/rd_NAME.json")
    ap.add_argument("--model-psnr", type=float,
                    help="the model's PSNR on the same views (default: evaluate it)")
    args = ap.parse_args(argv)
    if args.sweep:
        rows = sweep(args.sweep, args.data, args.lambdas, args.steps, args.out, args.every,
                     args.then, args.before)
        if args.name:
            argv = sys.argv[1:] if argv is None else argv
            print(write_record(args.name, args.sweep, args.data, args.every, rows,
                               args.model_psnr, argv))
        return
    if len(args.files) != 2:
        ap.error("give ANCHOR.json and TEST.json (or --sweep)")
    anchor, test = (read_points(f) for f in args.files)
    print(f"BD-rate {bd_rate(anchor, test):+.2f} %   BD-PSNR {bd_psnr(anchor, test):+.3f} dB")


if __name__ == "__main__":
    sys.exit(main())

