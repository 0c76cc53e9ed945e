"""The ``bake`` pass: any field sampled into a sparse voxel octree (``baking/octree.py``) that
renders by exact leaf traversal (a numba kernel on the CPU); later passes compress its leaves
(``quant``, ``vq``) and ``finetune`` trains them through the octree renderer."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from nerfzip.baking.octree import BakeConfig, bake
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.rendering.model import RadianceModel

Config = BakeConfig


@register_pass("bake", Config, api="bake")
def bake_pass(model: RadianceModel | Compressed, cfg: BakeConfig, ctx: PassContext
              ) -> tuple[Compressed, dict[str, Any]]:
    """Any field baked into a sparse voxel octree of density and view-dependent colour.

    The octree's tensors are new: the source's constraints do not carry over (bake first,
    then compress). Without a scene, no leaf is pruned for visibility."""
    source = model.model if isinstance(model, Compressed) else model
    history = list(model.history if isinstance(model, Compressed)
                   else source.meta.get("pipeline", []))
    t0 = time.perf_counter()
    baked, report = bake(source, cfg, ctx.scene, ctx.quiet)
    report["source_family"] = source.field.family
    report["seconds"] = time.perf_counter() - t0
    c = Compressed(baked, {}, history)
    c.record("bake", asdict(cfg), report)
    return c, report
