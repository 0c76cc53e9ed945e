"""The viewer's commands, ``export-web`` and ``view``, added to the ``nerfzip`` parser."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("export-web", help="write a static web page that renders a baked octree "
                       "in the browser (WebGL2)")
    w.add_argument("file", help=".nrz file of a baked octree (SH appearance)")
    w.add_argument("--out", "-o", required=True,
                   help="folder to write: index.html, its script and the scene data (an "
                        "earlier export there is replaced)")
    w.add_argument("--sh-degree", type=int, default=None,
                   help="keep SH bands up to this degree (default: all the file has; lower "
                        "is smaller and loses view dependence)")
    w.add_argument("--density-bits", type=int, default=16, choices=[8, 16],
                   help="density on the wire: 16 (float16) or 8 (8-bit codes of its logarithm, "
                        "smaller)")
    w.add_argument("--camera", default=None,
                   help="first camera: width,height,fx,fy,cx,cy and c2w's 12 numbers by rows "
                        "(default: the scene's first test view)")

    v = sub.add_parser("view", help="look at a .nrz file or run in an interactive viewer in "
                       "the browser (viser)")
    v.add_argument("file", help=".nrz file, model file or run folder (any field family)")
    v.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface)")
    v.add_argument("--resolution", type=int, default=400,
                   help="longest side of a still frame in pixels (default 400)")
    v.add_argument("--moving-scale", type=float, default=0.25,
                   help="resolution while the camera moves, as a fraction (default 0.25)")


def cmd_view(args: argparse.Namespace) -> None:
    from nerfzip.errors import NerfzipError
    from nerfzip.viewer.live import ViewerConfig, serve

    try:
        import viser  # noqa: F401
    except ImportError:
        raise NerfzipError("view needs the viser package: pip install viser") from None
    cfg = ViewerConfig(port=args.port, host=args.host, resolution=args.resolution,
                       moving_scale=args.moving_scale)

    def ready(viewer) -> None:
        print(f"nerfzip viewer of {args.file} at {viewer.url} (Ctrl-C stops it)", flush=True)

    try:
        serve(args.file, cfg, ready)
    except KeyboardInterrupt:
        pass


def cmd_export_web(args: argparse.Namespace) -> None:
    from nerfzip.viewer.camera import View
    from nerfzip.viewer.export import export_web

    view = View.from_fragment(args.camera) if args.camera else None
    report = export_web(args.file, args.out, args.sh_degree, view, args.density_bits)
    print(report.line())
    print(f"serve it with any static host, e.g.: python -m http.server -d {report.folder} "
          "8000, then open http://localhost:8000/")


COMMANDS = {"export-web": cmd_export_web, "view": cmd_view}
