"""What a search shows: the Pareto front as a table, a PNG and a JSON file, and the chosen
trial's file (``--export-best``: copied, or made again from the trial's stored settings)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nerfzip.search.study import MB
from nerfzip.utils.io import atomic_path, write_json


def trial_row(t: Any) -> dict[str, Any]:
    m = t.user_attrs.get("metrics", {})
    return {"trial": t.number, "state": t.state.name, "worker": t.user_attrs.get("worker"),
            "params": dict(t.params), "pipeline": t.user_attrs.get("pipeline"),
            "constraints": t.user_attrs.get("constraints"),
            **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}), **m}


def front_table(front: list[Any], objectives: list[str]) -> str:
    """One line per front trial, smallest file first."""
    lines = [f"{'trial':>5} {'MB':>8} {'PSNR':>7} {'SSIM':>7} {'frame s':>8} {'decode s':>8}"
             "  family / pipeline"]
    for t in front:
        m = t.user_attrs["metrics"]
        family = t.params.get("family", "")
        lines.append(f"{t.number:>5} {m['bytes'] / MB:>8.4f} {m['psnr']:>7.2f} "
                     f"{m['ssim']:>7.4f} {m['frame_seconds']:>8.3f} {m['decode_seconds']:>8.3f}"
                     f"  {(family + ': ') if family else ''}{t.user_attrs.get('pipeline', '')}")
    return "\n".join(lines)


def write_front(out: Path, trials: list[Any], front: list[Any], objectives: list[str],
                settings: dict[str, Any], references: list[dict[str, Any]] | None = None
                ) -> None:
    """``front.json`` (every trial and the front) and ``front.png``."""
    write_json(out / "front.json", {
        "objectives": objectives, "settings": settings,
        "front": [t.number for t in front], "trials": [trial_row(t) for t in trials],
        "references": references or []})
    plot_front(out / "front.png", trials, front, settings, references or [])


def plot_front(path: Path, trials: list[Any], front: list[Any], settings: dict[str, Any],
               references: list[dict[str, Any]]) -> None:
    """PSNR against MB for every measured trial, the front joined, colour: seconds per view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (the minor-tick formatter)

    done = [t for t in trials if "metrics" in t.user_attrs]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if done:
        mb = [t.user_attrs["metrics"]["bytes"] / MB for t in done]
        psnr = [t.user_attrs["metrics"]["psnr"] for t in done]
        sec = [t.user_attrs["metrics"]["frame_seconds"] for t in done]
        sc = ax.scatter(mb, psnr, c=sec, cmap="viridis", s=18, alpha=0.7, label="trials")
        fig.colorbar(sc, ax=ax, label="seconds per view")
    if front:
        fx = [t.user_attrs["metrics"]["bytes"] / MB for t in front]
        fy = [t.user_attrs["metrics"]["psnr"] for t in front]
        ax.plot(fx, fy, "o", color="crimson", ms=6, mfc="none", label="Pareto front")
        sx, sy = staircase(fx, fy)
        ax.step(sx, sy, where="post", color="crimson", lw=1.2, label="bytes x PSNR front")
    for r in references:
        ax.plot([r["bytes"] / MB], [r["psnr"]], "s", color="black", ms=5)
        ax.annotate(r["name"], (r["bytes"] / MB, r["psnr"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    if settings.get("budget_mb") is not None:
        ax.axvline(settings["budget_mb"], color="grey", ls="--", lw=1, label="budget")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("file size (MB, 2^20 bytes)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"search {settings.get('study', '')}: {len(done)} trials, "
                 f"{len(front)} on the front", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def staircase(mb: list[float], psnr: list[float]) -> tuple[list[float], list[float]]:
    """The points no other beats on both size and PSNR, smallest first (the 2-D front)."""
    xs, ys, best = [], [], float("-inf")
    for x, y in sorted(zip(mb, psnr)):
        if y > best:
            xs.append(x)
            ys.append(y)
            best = y
    return xs, ys


def export_trial(trial: Any, out: Path, dest: Path, remake: Any) -> str:
    """Copy the trial's .nrz to ``dest`` (through a temporary name), or, when this machine
    does not hold it, make it again with ``remake(trial, path)``; says which."""
    from nerfzip.search.trial import trial_file

    src = trial_file(out, trial.number)
    with atomic_path(dest) as tmp:
        if src.is_file():
            shutil.copyfile(src, tmp)
            how = f"copied from {src}"
        else:
            remake(trial, tmp)
            how = "made again from the trial's stored settings"
    return how
