"""``nerfzip view``: any .nrz file (or run) in an interactive browser viewer built on viser.

Each connected browser gets a render thread: while its camera moves, frames are rendered at
``moving_scale`` of the full resolution (JPEG); once the camera has been still for
``still_after`` seconds the view is refined at full resolution (PNG, pixel for pixel the Python
renderer's picture). Slow families refine progressively: the full frame is rendered in chunks
of rays and abandoned as soon as the camera moves again. The octree family renders through its
numba kernel, and its level of detail (a coarser octree: ``coarsen``) can be chosen; fields
marched on a grid take a step scale instead.

viser's cameras follow OpenCV's convention (+z forward, +y down); nerfzip's look down -z with
+y up: ``c2w_nerfzip = c2w_opencv @ diag(1, -1, -1, 1)``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nerfzip.errors import NerfzipError
from nerfzip.fields.octree import Octree
from nerfzip.utils.schema import check, limits
from nerfzip.viewer.camera import View, look_at, to_uint8
from nerfzip.viewer.export import initial_view, scene_cameras

FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
"""OpenCV camera axes <-> nerfzip's (both ways)."""


@dataclass
class ViewerConfig:
    """Settings of ``nerfzip view``."""

    port: int = field(default=8080, metadata=limits(1, 65535))
    """Port the viewer listens on."""
    host: str = "127.0.0.1"
    """Address it listens on (0.0.0.0: every interface)."""
    resolution: int = field(default=400, metadata=limits(16, 4096))
    """Longest side, in pixels, of a still frame (at most the browser's canvas)."""
    moving_scale: float = field(default=0.25, metadata=limits(0.05, 1.0))
    """Resolution while the camera moves, as a fraction of the still frame's."""
    still_after: float = field(default=0.15, metadata=limits(0.0, 10.0))
    """Seconds without camera motion before the frame is refined."""
    chunk: int = field(default=16384, metadata=limits(256))
    """Rays per piece of a progressive refinement (the camera is checked between pieces)."""

    def __post_init__(self) -> None:
        check(self, "view")


# --- cameras -----------------------------------------------------------------------------------
def quat_to_matrix(wxyz: np.ndarray) -> torch.Tensor:
    w, x, y, z = (float(v) for v in wxyz / np.linalg.norm(wxyz))
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ], dtype=torch.float64)


def matrix_to_quat(r: torch.Tensor) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix [3, 3] (Shepperd's method)."""
    m = r.double().numpy()
    t = np.trace(m)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


def view_of_camera(position: np.ndarray, wxyz: np.ndarray, fov: float, width: int,
                   height: int) -> View:
    """The nerfzip view of a viser camera (vertical ``fov`` in radians) at ``width`` x
    ``height`` pixels."""
    rot = quat_to_matrix(np.asarray(wxyz)) @ FLIP
    c2w = torch.cat((rot, torch.tensor(position, dtype=torch.float64).view(3, 1)), 1)
    f = 0.5 * height / math.tan(fov / 2)
    return View(c2w, f, f, width / 2, height / 2, width, height)


def frame_size(image_w: int, image_h: int, longest: int, scale: float) -> tuple[int, int]:
    """The render size for a canvas of ``image_w`` x ``image_h``: its aspect, the longest side
    at most ``longest`` (and at most the canvas), times ``scale``."""
    image_w, image_h = max(1, image_w), max(1, image_h)
    fit = min(1.0, longest / max(image_w, image_h)) * scale
    return max(1, round(image_w * fit)), max(1, round(image_h * fit))


# --- level of detail ---------------------------------------------------------------------------
@torch.no_grad()
def coarsen(tree: Octree, depth: int) -> Octree:
    """The octree with its leaves merged into the cells of a ``depth``-level lattice: a merged
    leaf's density is the mean over its volume (empty children count as 0: what a ray through
    the whole cell sees on average) and its SH the density-weighted mean of its children's."""
    if depth >= tree.config.depth:
        return tree
    shift = tree.config.depth - depth
    cells = tree.structure().leaf_cells() >> shift
    parents, inverse = torch.unique(cells, dim=0, return_inverse=True)
    sigma = torch.relu(tree.sigma.detach())
    total = torch.zeros(parents.shape[0], dtype=sigma.dtype).index_add_(0, inverse, sigma)
    config = dataclasses.replace(tree.config, depth=depth)
    out, order = Octree.from_leaves(tree.aabb.cpu(), parents, config)
    out.sigma.copy_((total / 8 ** shift)[order])
    weight = sigma.clamp(min=1e-6)
    norm = torch.zeros_like(total).index_add_(0, inverse, weight)
    if tree.config.appearance == "sh":
        sh = torch.zeros(tree.sh.shape[0], parents.shape[0], dtype=sigma.dtype)
        sh.index_add_(1, inverse, tree.sh.detach() * weight)
        out.sh.copy_((sh / norm)[:, order])
    else:
        feats = torch.zeros(tree.features.shape[0], parents.shape[0], dtype=sigma.dtype)
        feats.index_add_(1, inverse, tree.features.detach() * weight)
        out.features.copy_((feats / norm)[:, order])
        out.decoder.load_state_dict(tree.decoder.state_dict())
    return out


# --- the panel ---------------------------------------------------------------------------------
def results_beside(path: Path) -> dict[str, Any] | None:
    """``results.json`` of an evaluation beside the file (or in a run's ``eval/``), if any."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "results.json", folder / "eval" / "results.json",
                      folder / f"{path.stem}_eval" / "results.json"):
        try:
            data = json.loads(candidate.read_text())
            if isinstance(data, dict) and isinstance(data.get("mean"), dict):
                return data
        except (OSError, ValueError):
            continue
    return None


def figures(model, path: Path) -> str:
    """The panel's markdown: file, bytes, sections, pipeline, PSNR when known."""
    from nerfzip.codec.nrz import info, is_nrz

    f = model.field
    lines = [f"**{path.name}**"]
    if path.is_file():
        lines.append(f"{path.stat().st_size:,} bytes ({path.stat().st_size / 2**20:.3f} MB)")
    desc = f"field: {f.family}"
    if f.family == "octree":
        desc += f", depth {f.config.depth}, {f.config.leaves:,} leaves"
    lines.append(desc)
    if path.is_file() and is_nrz(path):
        rows = info(path)["sections"]
        top = sorted(rows, key=lambda r: -r["bytes"])[:3]
        lines.append(f"{len(rows)} sections; largest: " + ", ".join(
            f"{r['name']} {100 * r['share']:.0f}% ({r['codec']})" for r in top))
    steps = model.meta.get("pipeline") or []
    lines.append("pipeline: " + (" ".join(str(s.get("step", s)) if isinstance(s, dict)
                                          else str(s) for s in steps) or "none"))
    res = results_beside(path)
    if res is not None:
        m = res["mean"]
        lines.append(f"PSNR {m.get('psnr', float('nan')):.2f} dB, SSIM "
                     f"{m.get('ssim', float('nan')):.4f} (results.json, "
                     f"{res.get('views_evaluated', '?')} views)")
    return "  \n".join(lines)


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image).numpy()).save(buf, format="PNG")
    return buf.getvalue()


# --- the server --------------------------------------------------------------------------------
def check_port(host: str, port: int) -> None:
    """One-line error unless ``host:port`` can be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise NerfzipError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}; "
                               "is another viewer running? choose another port)") from None


class LiveViewer:
    """The viewer of one model: the viser server, its panel and a render thread per client."""

    def __init__(self, model, path: Path, cfg: ViewerConfig):
        import viser

        self.model, self.path, self.cfg = model, path, cfg
        self.base_field = model.field
        self.lock = threading.Lock()  # one render at a time (the kernel uses every core)
        self.version = 0  # bumped when a setting changes the picture
        train_cams, test_cams = scene_cameras(model)
        first, orbit = initial_view(model, train_cams, test_cams)
        self.first, self.orbit = first, orbit
        check_port(cfg.host, cfg.port)
        self.server = viser.ViserServer(host=cfg.host, port=cfg.port, verbose=False)
        if self.server.get_port() != cfg.port:
            self.server.stop()
            raise NerfzipError(f"--port {cfg.port}: the port is taken; choose another port")
        self.server.scene.set_up_direction(tuple(orbit.up.tolist()))
        cam = self.server.initial_camera
        cam.position = tuple(first.c2w[:, 3].tolist())
        cam.look_at = tuple(orbit.target.tolist())
        cam.up = tuple(orbit.up.tolist())
        cam.fov = 2 * math.atan(0.5 * first.height / first.fy)
        self.build_panel()
        if train_cams is not None:
            self.add_frustums(train_cams)
        self.server.on_client_connect(self.connected)
        self.alive = True

    @property
    def url(self) -> str:
        host = "localhost" if self.cfg.host in ("0.0.0.0", "127.0.0.1") else self.cfg.host
        return f"http://{host}:{self.server.get_port()}"

    # panel
    def build_panel(self) -> None:
        gui = self.server.gui
        gui.add_markdown(figures(self.model, self.path))
        self.status = gui.add_markdown("waiting for a browser")
        self.res = gui.add_slider("still resolution", 64, 2048, 16, self.cfg.resolution)
        self.moving = gui.add_slider("moving scale", 0.05, 1.0, 0.05, self.cfg.moving_scale)
        f = self.model.field
        if f.family == "octree":
            self.lod = gui.add_slider("octree depth (level of detail)", 1, f.config.depth, 1,
                                      f.config.depth)
            self.lod.on_update(lambda _: self.set_lod(int(self.lod.value)))
        elif self.model.render.sampler == "occupancy":
            self.step = gui.add_slider("step scale", 0.5, 8.0, 0.5, 1.0)
            self.step.on_update(lambda _: self.set_step(float(self.step.value)))
        self.camera_text = gui.add_text("camera", "")
        save = gui.add_button("Save PNG")
        save.on_click(lambda event: self.save_png(event.client))
        for handle in (self.res, self.moving):
            handle.on_update(lambda _: self.bump())

    def bump(self) -> None:
        self.version += 1

    def set_lod(self, depth: int) -> None:
        with self.lock:
            self.model.field = coarsen(self.base_field, depth)
        self.bump()

    def set_step(self, scale: float) -> None:
        with self.lock:
            now = self.model.meta.get("step_scale", 1.0)
            self.model.set_step_scale(scale / now)
        self.bump()

    def add_frustums(self, cams) -> None:
        extent = float((self.orbit.target - cams.c2w[:, :, 3].double()).norm(dim=-1).mean())
        shown = self.server.gui.add_checkbox("training cameras", True)
        handles = []
        shown.on_update(lambda _: [setattr(h, "visible", shown.value) for h in handles])
        for i in range(len(cams)):
            v = View.of(cams, i)
            handle = self.server.scene.add_camera_frustum(
                f"/training_cameras/{i}", fov=2 * math.atan(0.5 * v.height / v.fy),
                aspect=v.width / v.height, scale=0.05 * extent, color=(60, 90, 200),
                wxyz=matrix_to_quat(v.c2w[:, :3] @ FLIP), position=tuple(v.c2w[:, 3].tolist()))
            handle.on_click(lambda event, v=v: self.go_to(event.client, v))
            handles.append(handle)

    def go_to(self, client, view: View) -> None:
        """Move a browser's camera to a training camera (clicking its frustum)."""
        with client.atomic():
            client.camera.wxyz = matrix_to_quat(view.c2w[:, :3] @ FLIP)
            client.camera.position = tuple(view.c2w[:, 3].tolist())

    # rendering
    def render(self, view: View, is_current=None) -> torch.Tensor | None:
        """The picture of ``view``; rendered in chunks of rays when ``is_current`` is given,
        ``None`` as soon as it says the camera moved on."""
        from nerfzip.data.cameras import image_rays

        o, d = image_rays(view.to_cameras(), 0, self.model.space.pixel_offset)
        with self.lock, torch.no_grad():
            rays = self.model.space.make_rays(o, d)
            if is_current is None or self.model.field.family == "octree":
                rgb = self.model.render_rays(rays)
            else:
                parts = []
                for i in range(0, len(rays), self.cfg.chunk):
                    if not is_current():
                        return None
                    parts.append(self.model.render_rays(rays.index(
                        slice(i, i + self.cfg.chunk))))
                rgb = torch.cat(parts)
        return rgb.view(view.height, view.width, 3)

    def current_view(self, client, scale: float) -> View:
        cam = client.camera
        w, h = frame_size(cam.image_width, cam.image_height, int(self.res.value), scale)
        return view_of_camera(cam.position, cam.wxyz, cam.fov, w, h)

    def save_png(self, client) -> None:
        view = self.current_view(client, 1.0)
        image = self.render(view)
        client.send_file_download("nerfzip_view.png", png_bytes(image), save_immediately=True)

    def connected(self, client) -> None:
        threading.Thread(target=self.client_loop, args=(client,), daemon=True).start()

    def client_loop(self, client) -> None:
        """Render what ``client`` sees: a moving frame at once when the camera moves, the
        still frame once it has stopped."""
        last, still_key, moved_at, frames = None, None, time.monotonic(), 0
        clients = self.server.get_clients
        while self.alive and client.client_id in clients():
            cam = client.camera
            key = (tuple(cam.position), tuple(cam.wxyz), cam.fov, cam.image_width,
                   cam.image_height, self.version)
            if key != last:
                if last is not None or self.cfg.still_after > 0:
                    self.show(client, float(self.moving.value), key, "moving", frames)
                    frames += 1
                last, moved_at = key, time.monotonic()
            elif still_key != key and time.monotonic() - moved_at >= self.cfg.still_after:
                if self.show(client, 1.0, key, "still", frames):
                    still_key = key
                    frames += 1
            else:
                time.sleep(0.01)

    def show(self, client, scale: float, key, kind: str, frames: int) -> bool:
        view = self.current_view(client, scale)
        start = time.monotonic()
        cam = client.camera
        current = lambda: (tuple(cam.position), tuple(cam.wxyz)) == key[:2]  # noqa: E731
        image = self.render(view, current if kind == "still" else None)
        if image is None:
            return False
        seconds = time.monotonic() - start
        rgb = to_uint8(image).numpy()
        if kind == "still":
            client.scene.set_background_image(rgb, format="png")
            self.camera_text.value = view.to_fragment()
        else:
            client.scene.set_background_image(rgb, format="jpeg", jpeg_quality=85)
        self.status.content = (f"frame {frames + 1}: {view.width}x{view.height} in "
                               f"{1000 * seconds:.0f} ms ({kind})")
        return True

    def stop(self) -> None:
        self.alive = False
        self.server.stop()


def open_model(path: str | Path):
    """The model of a .nrz file, model file or run folder; one-line errors."""
    from nerfzip.codec.nrz import is_nrz
    from nerfzip.training.checkpoint import load_model

    path = Path(path)
    if not path.exists():
        raise NerfzipError(f"{path}: no such file or run folder")
    if path.is_file() and path.suffix != ".safetensors" and not is_nrz(path):
        raise NerfzipError(f"{path}: not a .nrz file (it does not start with the .nrz magic)")
    return load_model(path)


def serve(path: str | Path, cfg: ViewerConfig, ready=None) -> None:
    """Run the viewer until interrupted (``ready(viewer)`` is called once it listens)."""
    check_port(cfg.host, cfg.port)
    model = open_model(path)
    viewer = LiveViewer(model, Path(path), cfg)
    if ready is not None:
        ready(viewer)
    try:
        while True:
            time.sleep(1.0)
    finally:
        viewer.stop()


__all__ = ["LiveViewer", "ViewerConfig", "coarsen", "look_at", "serve", "view_of_camera"]
