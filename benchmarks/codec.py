"""Benchmark: the .nrz codec on a real trained model.

For each precision (lossless, half, 8/6/4-bit per channel, 8-bit per tensor): file bytes, ratio
to the model's safetensors file, encode time and throughput, decode time (median of 3), and the
PSNR of a few test views against the ground truth and against the uncompressed field (same run).
For every entropy-coded symbol array of at least 10^5 symbols: coded bits against the
empirical entropy of its symbols. Writes ``benchmarks/records/codec_<name>.json``.

    python benchmarks/codec.py --model benchmarks/out/train_lego_tensorf-vm_crop/model.safetensors
    python benchmarks/codec.py --imported lego
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RECORDS

from nerfzip.codec import nrz
from nerfzip.codec import symbols as sym
from nerfzip.codec.tensors import Node, decode, encode_tensor
from nerfzip.data.load import load_scene
from nerfzip.evaluation.metrics import image_metrics, to_uint8
from nerfzip.training.checkpoint import load_model, save_model
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMPORTED = {"lego": ("nerf_synthetic/lego", "lego-lowres"),
            "fern": ("nerf_llff_data/fern", "fern-lowres")}
PRECISIONS = {
    "lossless": nrz.SaveOptions(mode="lossless"),
    "half": nrz.SaveOptions(mode="half"),
    "q8/channel": nrz.SaveOptions(mode="quant", bits=8),
    "q8/tensor": nrz.SaveOptions(mode="quant", bits=8, per_channel=False),
    "q6/channel": nrz.SaveOptions(mode="quant", bits=6),
    "q4/channel": nrz.SaveOptions(mode="quant", bits=4),
    "q2/channel": nrz.SaveOptions(mode="quant", bits=2),
}


def symbol_nodes(node: Node) -> list[Node]:
    out = [node] if node.codec == "symbols" else []
    for child in node.children:
        out += symbol_nodes(child)
    return out


def entropy_rows(model, options: nrz.SaveOptions) -> list[dict]:
    """Coded size against empirical entropy for large symbol arrays (ANS-coded or not)."""
    rows = []
    for name, x in nrz.model_sections(model).items():
        key = name[len("field."):]
        spec = options.spec_for(key, x) if name.startswith("field.") else \
            nrz.TensorSpec(coders=options.coders)
        for node in symbol_nodes(encode_tensor(x, spec)):
            n = int(np.prod(node.shape))
            if n < 100_000:
                continue
            values = decode(node).numpy().reshape(-1)
            entropy = sym.empirical_entropy_bits(values)
            coded = 8 * sum(len(b) for b in node.blobs)
            # The ANS coder's own figure, also where another coder won (LZMA exploits runs
            # that a memoryless model cannot, so it can beat the empirical entropy).
            _, ans_blobs = sym.encode_symbols(values, ("ans",))
            ans_model, ans_stream = (8 * len(b) for b in ans_blobs)
            rows.append({"section": name, "symbols": n, "coder": node.params["coder"],
                         "entropy_bits": entropy, "coded_bits": coded,
                         "ratio_to_entropy": coded / entropy if entropy else None,
                         "bits_per_symbol": coded / n,
                         "ans_stream_ratio": ans_stream / entropy if entropy else None,
                         "ans_total_ratio": (ans_stream + ans_model) / entropy
                         if entropy else None})
    return rows


def view_psnrs(model, scene, views: list[int], reference: list | None = None):
    imgs, psnr, vs_ref = [], [], []
    for k, i in enumerate(views):
        pred = to_uint8(model.render_view(scene, "test", i))
        imgs.append(pred)
        psnr.append(image_metrics(pred, scene.split("test").images[i])["psnr"])
        if reference is not None:
            vs_ref.append(image_metrics(pred, reference[k])["psnr"])
    return imgs, psnr, vs_ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a nerfzip run folder or model file")
    src.add_argument("--imported", choices=sorted(IMPORTED), help="a nerf-pytorch model")
    ap.add_argument("--name", default=None)
    ap.add_argument("--views", type=int, nargs="*", default=[0, 50, 100, 150],
                    help="test views rendered for quality")
    args = ap.parse_args()

    if args.imported:
        from nerfzip.importers.nerf_pytorch import import_nerf_pytorch

        data, folder = IMPORTED[args.imported]
        ckpt = next((SHARED / "models" / "nerf-pytorch" / folder).glob("*.ckpt"))
        scene = load_scene(SHARED / "data" / data)
        model = import_nerf_pytorch(ckpt, scene)
        name = args.name or f"imported_{args.imported}"
    else:
        model = load_model(args.model)
        scene = load_scene(model.space.source, downscale=model.space.downscale)
        name = args.name or Path(args.model).parent.name
    views = [v for v in args.views if v < len(scene.split("test"))]
    tmp = Path(tempfile.mkdtemp())
    save_model(model, tmp / "model.safetensors")
    st_bytes = (tmp / "model.safetensors").stat().st_size
    params = model.field.num_parameters()
    print(f"{name}: {params:,} parameters, safetensors {st_bytes:,} bytes", file=sys.stderr)
    ref_imgs, ref_psnr, _ = view_psnrs(model, scene, views)

    rows = []
    for label, options in PRECISIONS.items():
        report = nrz.save(model, tmp / "m.nrz", options)
        decode_s = []
        for _ in range(3):
            t0 = time.perf_counter()
            back = nrz.load(tmp / "m.nrz")
            decode_s.append(time.perf_counter() - t0)
        _, psnr, vs_ref = view_psnrs(back, scene, views, ref_imgs)
        row = {"precision": label, "bytes": report.bytes,
               "ratio_to_safetensors": st_bytes / report.bytes,
               "bits_per_param": 8 * report.bytes / params,
               "encode_seconds": report.encode_seconds,
               "encode_mb_per_s": 4 * params / 1e6 / report.encode_seconds,
               "decode_seconds": statistics.median(decode_s),
               "psnr": statistics.mean(psnr), "psnr_float32": statistics.mean(ref_psnr),
               "psnr_vs_float32_render": statistics.mean(vs_ref) if vs_ref else None,
               "entropy": entropy_rows(model, options) if label in ("q8/channel", "q4/channel")
               else []}
        rows.append(row)
        print(f"  {label:<11} {report.bytes / 1e6:8.3f} MB  x{row['ratio_to_safetensors']:6.2f}"
              f"  enc {report.encode_seconds:6.2f} s  dec {row['decode_seconds']:.3f} s  "
              f"PSNR {row['psnr']:.2f} (float32 {row['psnr_float32']:.2f})", file=sys.stderr)
    write_json(RECORDS / f"codec_{name}.json", {
        "benchmark": "codec", "name": name, "scene": scene.name, "family": model.field.family,
        "parameters": params, "safetensors_bytes": st_bytes, "views": views,
        "command": "python " + " ".join(sys.argv), "rows": rows, "machine": machine_info(),
        "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
