"""The ``nerfzip`` command: data, train, eval, render, encode, compress, info, import, search,
demo, export-web, view.

Errors in the user's input (``NerfzipError``) print one line and exit with status 2; ``--debug``
shows the traceback. Ctrl-C during training writes a checkpoint and exits with status 130; during
a search, the study keeps every finished trial (``--resume`` runs the cut one again).

``--out / -o`` means the same everywhere: the path of what the command makes, created if
missing. Commands that make one file take a file (encode, compress: the .nrz file); commands
that make several take a folder (train, import: the run folder that eval, render and compress
read as RUN; eval, render, demo: the folder of results). A path of the other kind (a folder as
a file, a file as a folder) is refused in one line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from nerfzip.cli.args import add_dataclass_options, overrides
from nerfzip.compression.pipeline.presets import PRESETS
from nerfzip.errors import NerfzipError
from nerfzip.training.config import TrainConfig
from nerfzip.viewer import cli as viewer_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nerfzip", description="Train, compress, decode, render and "
                                "measure neural radiance fields, CPU included.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="load a scene folder and print a summary")
    d.add_argument("path", help="scene folder (Blender, LLFF, nerfstudio) or 'procedural'")
    d.add_argument("--downscale", type=int, default=None, help="divide the image resolution")

    t = sub.add_parser("train", help="train a radiance field")
    t.add_argument("--data", required=True, help="scene folder or 'procedural'")
    t.add_argument("--out", "-o", required=True, help="run folder to write")
    t.add_argument("--downscale", type=int, default=None, help="divide the image resolution")
    t.add_argument("--resume", action="store_true", help="continue the run's checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_options(t, TrainConfig)

    e = sub.add_parser("eval", help="render the test views of a run and score them")
    e.add_argument("run", help="run folder or model file")
    e.add_argument("--data", default=None, help="scene folder (default: the run's own)")
    e.add_argument("--split", default="test")
    e.add_argument("--every", type=int, default=1, help="evaluate every N-th view")
    e.add_argument("--limit", type=int, default=None, help="at most this many views")
    e.add_argument("--out", "-o", default=None, help="folder of results (default: RUN/eval)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--int8", default="off", choices=["off", "on", "auto"],
                   help="dynamic int8 linear layers on the CPU: on, off, or auto (only where a "
                        "timing shows it is faster)")
    e.add_argument("--step-scale", type=float, default=1.0, help=STEP_SCALE_HELP)
    e.add_argument("--bytes", type=int, default=None, metavar="N",
                   help="a .nrz file: evaluate the model of its first N bytes (the layers of "
                        "a progressive file complete within them)")
    e.add_argument("--layers", type=int, default=None, metavar="K",
                   help="a .nrz file: evaluate the model of its first K layers (1: the base)")
    e.add_argument("--quiet", action="store_true")

    r = sub.add_parser("render", help="render a camera path to frames and a video")
    r.add_argument("run", help="run folder or model file")
    r.add_argument("--path", default="orbit", choices=["orbit", "spiral", "test"])
    r.add_argument("--data", default=None, help="scene folder (default: the run's own)")
    r.add_argument("--frames", type=int, default=60)
    r.add_argument("--fps", type=int, default=24)
    r.add_argument("--format", default="mp4", choices=["mp4", "gif"])
    r.add_argument("--out", "-o", default=None,
                   help="folder of frames and video (default: RUN/render)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--int8", default="off", choices=["off", "on", "auto"],
                   help="dynamic int8 linear layers on the CPU: on, off, or auto (only where a "
                        "timing shows it is faster)")
    r.add_argument("--step-scale", type=float, default=1.0, help=STEP_SCALE_HELP)
    r.add_argument("--quiet", action="store_true")

    c = sub.add_parser("encode", help="write a run's model as one .nrz file, as it is")
    c.add_argument("run", help="run folder, model file or .nrz file")
    c.add_argument("--out", "-o", required=True, help=".nrz file to write")
    c.add_argument("--precision", default="lossless",
                   help="lossless (bit-exact) or half (float16); to quantize, use compress "
                        "(--preset quant8 or --pipeline \"quant(BITS)\")")

    z = sub.add_parser("compress", help="run a compression pipeline and write a .nrz file")
    z.add_argument("run", nargs="?", help="run folder, model file or .nrz file")
    z.add_argument("--out", "-o", default=None, help=".nrz file to write")
    z.add_argument("--pipeline", default=None,
                   help='passes, e.g. "prune(0.6) finetune(1000) vq(4096) quant(8)"')
    z.add_argument("--preset", default=None,
                   help=f"a named pipeline: {', '.join(PRESETS)}")
    z.add_argument("--list-passes", action="store_true",
                   help="list every pass with its arguments, defaults and help, and exit")
    z.add_argument("--config", default=None, help="a YAML file with a 'pipeline:' list")
    z.add_argument("--data", default=None, help="scene folder (default: the run's own)")
    z.add_argument("--device", default="cpu")
    z.add_argument("--quiet", action="store_true")

    n = sub.add_parser("info", help="print a .nrz file's header and sections")
    n.add_argument("file", help=".nrz file")
    n.add_argument("--json", action="store_true", help="machine-readable output")

    i = sub.add_parser("import", help="import a radiance field trained by another tool")
    i.add_argument("tool", choices=["nerf-pytorch"])
    i.add_argument("checkpoint", help="the tool's checkpoint file")
    i.add_argument("--data", required=True, help="the scene it was trained on")
    i.add_argument("--out", "-o", required=True, help="run folder to write")
    i.add_argument("--downscale", type=int, default=None)

    add_search_parser(sub)

    m = sub.add_parser("demo", help="train, evaluate and report on the built-in scene")
    m.add_argument("--out", "-o", default="runs/demo", help="folder for the demo run")
    m.add_argument("--iters", type=int, default=None, help="training steps")
    m.add_argument("--quiet", action="store_true")
    viewer_cli.add_parsers(sub)
    return p


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("search", help="search field and compression settings under a budget "
                       "(multi-objective, Pareto front)")
    s.add_argument("--data", default=None, help="scene folder or 'procedural' (with --from: "
                   "default the run's own)")
    s.add_argument("--from", dest="from_run", default=None, metavar="RUN",
                   help="a trained run or model file: search compression settings only")
    s.add_argument("--objectives", default=None,
                   help="comma-separated: psnr, ssim, bytes, frame_seconds, decode_seconds "
                        "(default psnr,bytes,frame_seconds, or the resumed study's)")
    s.add_argument("--budget-mb", type=float, default=None,
                   help="largest file a trial may write, MB (2^20 bytes)")
    s.add_argument("--max-frame-seconds", type=float, default=None,
                   help="slowest median seconds per test view a trial may take")
    s.add_argument("--trials", type=int, default=20,
                   help="trials the study holds when the search stops (shared by all workers)")
    s.add_argument("--resume", action="store_true",
                   help="continue the study (or join it from another process / machine)")
    s.add_argument("--storage", default=None, metavar="URL",
                   help="study database: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
                        "(default: sqlite in OUT/study.db)")
    s.add_argument("--study", default="nerfzip-search", help="study name in the storage")
    s.add_argument("--space", default=None, metavar="YAML",
                   help="search space file (default: nerfzip/search/default_space.yaml, or "
                        "the resumed study's)")
    s.add_argument("--out", "-o", default="runs/search",
                   help="folder of the study, trial files and front (default runs/search)")
    s.add_argument("--export-best", default=None, metavar="FILE",
                   help="write the front's highest-PSNR trial as this .nrz file")
    s.add_argument("--sampler", default="tpe", help="tpe or nsga2")
    s.add_argument("--pruner", default="halving", help="halving, hyperband or none")
    s.add_argument("--views", type=int, default=None,
                   help="test views each trial is scored on (default 4)")
    s.add_argument("--seed", type=int, default=None, help="sampler seed")
    s.add_argument("--threads", type=int, default=1, help="CPU threads this worker uses")
    s.add_argument("--quiet", action="store_true", help="no line per finished trial")


def precision(text: str) -> str:
    """``encode --precision``: lossless or half; quantization is a compression pass."""
    if text == "quant":
        raise NerfzipError("--precision quant: quantization is a compression pass now: nerfzip "
                           "compress RUN -o FILE.nrz --preset quant8 (or --pipeline "
                           "\"quant(BITS)\")")
    if text not in ("lossless", "half"):
        raise NerfzipError(f"--precision {text}: expected lossless or half")
    return text


def out_file(path: str, suffix: str = ".nrz") -> Path:
    """``--out`` of a command that writes one file: not a folder, named ``*suffix``."""
    out = Path(path)
    if out.is_dir() or out.suffix != suffix:
        raise NerfzipError(f"--out {path}: expected a {suffix} file to write (this command "
                           "writes one file)")
    return out


def out_folder(path: str | Path) -> Path:
    """``--out`` of a command that writes several files: a folder (made if missing)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NerfzipError(f"--out {path}: is a file; this command writes a folder")
    return out


def cmd_data(args: argparse.Namespace) -> None:
    from nerfzip.data.load import load_scene

    print(load_scene(args.path, downscale=args.downscale).summary())


def cmd_train(args: argparse.Namespace) -> None:
    from nerfzip.data.load import load_scene
    from nerfzip.training.config import defaults_for
    from nerfzip.training.trainer import resume_config, train

    out = out_folder(args.out)
    if args.resume:
        cfg, space = resume_config(out)
        cfg = replace(cfg, **{k: v for k, v in overrides(args, TrainConfig).items()
                              if k in ("iters", "device", "checkpoint_every")})
        downscale = args.downscale if args.downscale is not None else space.get("downscale")
    else:
        if (out / "checkpoint.safetensors").exists():
            raise NerfzipError(f"{out}: already holds a run; pass --resume to continue it or "
                               "choose another --out")
        downscale = args.downscale
        cfg = None
    scene = load_scene(args.data, downscale=downscale)
    if cfg is None:
        base = defaults_for(scene.format, args.field or TrainConfig.field)
        cfg = replace(base, **overrides(args, TrainConfig))
    model = train(scene, cfg, out, resume=args.resume, downscale=downscale, quiet=args.quiet)
    print(f"trained {model.field.family} for {cfg.iters} steps -> {out / 'model.safetensors'}")


STEP_SCALE_HELP = ("grid-marching step at inference, relative to the step the model was "
                   "trained with (2 takes half the samples: faster, slightly less exact)")


def load_run_and_scene(run: str, data: str | None, device: str, int8: str = "off",
                       step_scale: float = 1.0, nbytes: int | None = None,
                       layers: int | None = None):
    from nerfzip.data.load import load_scene
    from nerfzip.rendering.int8 import with_int8
    from nerfzip.training.checkpoint import load_model

    if nbytes is not None or layers is not None:
        model = load_prefix_model(run, nbytes, layers).to(device)
    else:
        model = load_model(run).to(device)
    if step_scale != 1.0:
        model.set_step_scale(step_scale)
    model, report = with_int8(model, int8)
    if int8 != "off":
        timing = (f" (field queries: float {report['float_seconds']:.3f} s, int8 "
                  f"{report['int8_seconds']:.3f} s)" if "int8_seconds" in report else "")
        error = (f" (colour RMS error {report['colour_rms']:.4f})" if "colour_rms" in report
                 else "")
        print(f"int8 inference: {'on' if report['int8'] else 'off'}{error}{timing}"
              + (f"; {report['reason']}" if "reason" in report else ""))
    source = data or model.space.source or model.space.format
    if not source:
        raise NerfzipError(f"{run}: the model does not say which scene it shows; pass --data")
    scene = load_scene(source, downscale=model.space.downscale)
    return model, scene


def load_prefix_model(run: str, nbytes: int | None, layers: int | None):
    """The model of a prefix of a .nrz file (``--bytes`` / ``--layers``), its
    ``meta["prefix"]`` saying which layers and bytes it was built from."""
    from nerfzip.codec.nrz import is_nrz
    from nerfzip.codec.progressive import load_prefix

    if nbytes is not None and layers is not None:
        raise NerfzipError("--bytes and --layers: give one of them")
    if not is_nrz(run):
        raise NerfzipError(f"{run}: --bytes / --layers read a prefix of a .nrz file")
    model, used = load_prefix(run, nbytes, layers)
    model.meta["prefix"] = {"layers": len(used), "bytes": used[-1].bytes,
                            "file_bytes": Path(run).stat().st_size,
                            "seconds": sum(u.seconds for u in used)}
    return model


def prefix_note(model) -> str:
    p = model.meta.get("prefix")
    return "" if p is None else (f"first {p['layers']} layer{'s' if p['layers'] > 1 else ''} "
                                 f"({p['bytes']:,} of {p['file_bytes']:,} bytes, "
                                 f"{100 * p['bytes'] / p['file_bytes']:.1f} %), decoded in "
                                 f"{p['seconds']:.3f} s; ")


def default_out(run: str, what: str) -> Path:
    """RUN/what for a run folder, FILE_what beside a model file."""
    path = Path(run)
    return path / what if path.is_dir() else path.parent / f"{path.stem}_{what}"


def file_note(model) -> str:
    d = model.meta.get("decode")
    return "" if d is None else (f"file {d['file_bytes'] / 1e6:.3f} MB, decoded in "
                                 f"{d['seconds']:.2f} s; ")


def cmd_eval(args: argparse.Namespace) -> None:
    from nerfzip.evaluation.evaluate import evaluate

    model, scene = load_run_and_scene(args.run, args.data, args.device, args.int8,
                                      args.step_scale, args.bytes, args.layers)
    out = out_folder(args.out) if args.out else default_out(args.run, "eval")
    res = evaluate(model, scene, args.split, args.every, args.limit, out, quiet=args.quiet)
    m = res["mean"]
    print(f"{scene.name} {args.split} ({res['views_evaluated']} views): "
          f"{prefix_note(model) or file_note(model)}"
          f"PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
          f"{m['seconds_per_view_median']:.2f} s/view  -> {out / 'results.json'}")


def cmd_render(args: argparse.Namespace) -> None:
    from nerfzip.evaluation.evaluate import render_path

    model, scene = load_run_and_scene(args.run, args.data, args.device, args.int8,
                                      args.step_scale)
    out = out_folder(args.out) if args.out else default_out(args.run, "render")
    if model.meta.get("decode"):
        print(file_note(model).rstrip("; "))
    cams = scene.split("train" if args.path != "test" else "test").cameras
    video = render_path(model, cams, out, args.path, args.frames, args.fps, args.format,
                        quiet=args.quiet)
    print(f"wrote {video} and {args.frames} frames in {out / 'frames'}")


def cmd_encode(args: argparse.Namespace) -> None:
    from nerfzip.codec.nrz import SaveOptions, save
    from nerfzip.training.checkpoint import load_model

    mode, out = precision(args.precision), out_file(args.out)
    model = load_model(args.run)
    report = save(model, out, SaveOptions(mode=mode))
    dense = 4 * model.field.num_parameters()
    print(f"wrote {args.out}: {report.bytes:,} bytes ({dense / report.bytes:.1f}x smaller than "
          f"float32 parameters), encoded in {report.encode_seconds:.2f} s")


def cmd_compress(args: argparse.Namespace) -> None:
    from nerfzip.compression.pipeline import resolve, run_pipeline
    from nerfzip.compression.registry import list_text

    if args.list_passes:
        print(list_text())
        return
    if not args.run or not args.out:
        raise NerfzipError("compress needs a RUN and --out FILE.nrz (or --list-passes)")
    out = out_file(args.out)
    steps = resolve(args.pipeline, args.preset, args.config)  # bad specs fail before loading
    model, scene = load_run_and_scene(args.run, args.data, args.device)
    dense = 4 * model.field.num_parameters()

    def show(step, report) -> None:
        if not args.quiet:
            brief = {k: v for k, v in report.items() if not isinstance(v, dict)}
            print(f"{step}: {brief}", file=sys.stderr)

    compressed = run_pipeline(model, steps, scene, quiet=args.quiet, on_step=show)
    report = compressed.save(out)
    print(f"wrote {args.out}: {report.bytes:,} bytes ({dense / report.bytes:.1f}x smaller than "
          f"float32 parameters) after {' '.join(map(str, steps))}")


def cmd_info(args: argparse.Namespace) -> None:
    import json

    from nerfzip.codec.nrz import info

    data = info(args.file)
    if args.json:
        print(json.dumps(data, indent=2))
        return
    h = data["header"]
    print(f"{data['path']}: .nrz format {data['version']}, {data['bytes']:,} bytes, written by "
          f"{h.get('writer', '?')}")
    fld = h["field"]
    print(f"field: {fld['family']}  aabb {fld['aabb']}")
    print(f"scene: {h['space'].get('name', '')} ({h['space'].get('format', '')}), background "
          f"{h['space'].get('background')}, sampler {h['render'].get('sampler')}")
    steps = h.get("pipeline") or []
    print("pipeline: " + (" ".join(str(s.get("step", s)) if isinstance(s, dict) else str(s)
                                   for s in steps) or "(none: the trained field as it was)"))
    layers = data["layers"]
    if len(layers) > 1:
        print(f"progressive: {len(layers)} layers; the first K decode from the bytes up to "
              "their end (nerfzip eval FILE --layers K / --bytes N)")
        print(f"{'layers':>8} {'sections':>9} {'bytes':>12} {'share':>7} {'energy: density':>16}"
              f" {'appearance':>11}")
        for r in layers:
            energy = "".join(f" {r[k]:>{w}.3f}" if k in r else f" {'-':>{w}}"
                             for k, w in (("energy", 16), ("appearance_energy", 11)))
            name = f"{r['layer'] + 1}" + (" (base)" if r["layer"] == 0 else "")
            print(f"{name:>8} {r['sections']:>9} {r['bytes']:>12,} "
                  f"{100 * r['share']:>6.1f}%{energy}")
    rows = data["sections"]
    width = max(len(r["name"]) for r in rows) if rows else 4
    print(f"{'section':<{width}}  {'shape':<18} {'bytes':>10} {'bits/param':>10} {'share':>6}  "
          "codec")
    for r in rows:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        print(f"{r['name']:<{width}}  {shape:<18} {r['bytes']:>10,} {r['bits_per_param']:>10.2f} "
              f"{100 * r['share']:>5.1f}%  {r['codec']}")


def cmd_import(args: argparse.Namespace) -> None:
    from nerfzip.data.load import load_scene
    from nerfzip.importers.nerf_pytorch import import_nerf_pytorch
    from nerfzip.training.checkpoint import save_model

    out = out_folder(args.out)
    scene = load_scene(args.data, downscale=args.downscale)
    model = import_nerf_pytorch(args.checkpoint, scene, args.downscale)
    save_model(model, out / "model.safetensors")
    print(f"imported {args.checkpoint} ({model.field.num_parameters():,} parameters) -> "
          f"{out / 'model.safetensors'}")


def cmd_search(args: argparse.Namespace) -> int:
    from nerfzip.search.command import args_from_namespace, search
    from nerfzip.search.storage import shown

    try:
        return search(args_from_namespace(args))
    except KeyboardInterrupt:
        where = shown(args.storage) if args.storage else str(Path(args.out) / "study.db")
        print(f"nerfzip: search interrupted; the study is kept in {where}: continue it with "
              "--resume", file=sys.stderr)
        return 130


def cmd_demo(args: argparse.Namespace) -> None:
    from nerfzip.demo import run_demo

    run_demo(out_folder(args.out), iters=args.iters, quiet=args.quiet)


COMMANDS = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval, "render": cmd_render,
            "encode": cmd_encode, "compress": cmd_compress, "info": cmd_info,
            "import": cmd_import, "search": cmd_search, "demo": cmd_demo,
            **viewer_cli.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
    except NerfzipError as e:
        if args.debug:
            raise
        print(f"nerfzip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nerfzip: interrupted (a training run saved its checkpoint; continue it with "
              "--resume)", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
