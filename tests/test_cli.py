"""The command line: bad input gives one line on stderr and a non-zero exit, never a
traceback; the data summary and a tiny train / eval round trip work."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nerfzip.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_folder(tmp_path):
    assert_one_line_error(run("data", str(tmp_path / "nope")), "nope", "no such scene folder")


def test_wrong_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(run("data", str(tmp_path)), "not a scene folder")


def test_malformed_json(tmp_path):
    (tmp_path / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    assert_one_line_error(run("data", str(tmp_path)), "transforms_train.json", "malformed JSON")


def test_missing_image(tmp_path):
    meta = {"camera_angle_x": 0.7, "frames": [
        {"file_path": "./train/r_0", "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0],
                                                          [0, 0, 1, 4], [0, 0, 0, 1]]}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    assert_one_line_error(run("data", str(tmp_path)), "r_0.png", "not found")


def test_eval_of_a_missing_run(tmp_path):
    assert_one_line_error(run("eval", str(tmp_path / "run")), "run")


def test_eval_of_a_corrupt_model(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert_one_line_error(run("eval", str(tmp_path / "model.safetensors")), "model.safetensors")


def test_import_of_a_non_checkpoint(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(run("import", "nerf-pytorch", str(bad), "--data", "procedural",
                              "-o", str(tmp_path / "o")), "x.ckpt")


def test_out_means_the_same_kind_of_path_everywhere(tmp_path):
    """Checked before any work: a folder where a file goes, a file where a folder goes."""
    (tmp_path / "f.nrz").write_bytes(b"")
    assert_one_line_error(run("compress", "nowhere", "-o", str(tmp_path), "--pipeline",
                              "quant(8)"), "expected a .nrz file")
    assert_one_line_error(run("compress", "nowhere", "-o", str(tmp_path / "x.zip"),
                              "--pipeline", "quant(8)"), "expected a .nrz file")
    assert_one_line_error(run("import", "nerf-pytorch", "x.ckpt", "--data", "procedural",
                              "-o", str(tmp_path / "f.nrz")), "is a file")
    assert_one_line_error(run("train", "--data", "procedural", "-o", str(tmp_path / "f.nrz")),
                          "is a file")


def test_encode_refers_quantization_to_compress(tmp_path):
    assert_one_line_error(run("encode", "nowhere", "-o", str(tmp_path / "q.nrz"),
                              "--precision", "quant"), "compress", "--preset quant8")


def test_data_summary_of_procedural():
    proc = run("data", "procedural")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "test" in proc.stdout and "procedural" in proc.stdout


@pytest.mark.slow
def test_train_then_eval_round_trip(tmp_path):
    out = tmp_path / "run"
    # 60 steps of 1024 rays: enough to beat the best constant image clearly (about 14 dB
    # against 11 on the procedural scene), few enough for CI. The occupancy grid starts at
    # step 20 (the scene's default, 100, is past the run): without it every render marches
    # through empty space and the evaluations take minutes.
    proc = run("train", "--data", "procedural", "--out", str(out), "--iters", "60",
               "--batch-size", "1024", "--occupancy-warmup", "20", "--occupancy-every", "20",
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").is_file()
    again = run("train", "--data", "procedural", "--out", str(out), "--iters", "30")
    assert_one_line_error(again, "--resume")
    proc = run("eval", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "eval" / "results.json").read_text())
    assert res["views_evaluated"] == len(res["views"]) > 0
    # Each view beats its own mean colour as a flat image (the best constant, in MSE) by 1 dB.
    from nerfzip.data.load import load_scene
    from nerfzip.evaluation.metrics import psnr, to_uint8

    test_views = load_scene("procedural").split("test")
    for v in res["views"]:
        gt = test_views.images[v["index"]]
        flat = to_uint8((gt.double().mean((0, 1)) / 255).expand(gt.shape))
        assert v["psnr"] > psnr(flat, gt) + 1.0, (v["name"], v["psnr"], psnr(flat, gt))
    # The run as one .nrz file: lossless decodes to identical renders, so identical metrics.
    nrz_file = tmp_path / "run.nrz"
    proc = run("encode", str(out), "-o", str(nrz_file))
    assert proc.returncode == 0 and nrz_file.is_file(), proc.stderr
    proc = run("eval", str(nrz_file), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "decoded in" in proc.stdout
    from_file = json.loads((tmp_path / "run_eval" / "results.json").read_text())
    assert [v["psnr"] for v in from_file["views"]] == [v["psnr"] for v in res["views"]]
    assert from_file["model"]["file_bytes"] == nrz_file.stat().st_size
    proc = run("info", str(nrz_file), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["bytes"] == nrz_file.stat().st_size
    # Quantization has one code path, the quant pass: encode points to it.
    assert_one_line_error(run("encode", str(out), "-o", str(tmp_path / "q.nrz"),
                              "--precision", "quant"), "compress", "quant8")
    proc = run("compress", str(out), "-o", str(tmp_path / "q.nrz"), "--preset", "quant8",
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run("info", str(tmp_path / "q.nrz"), "--json").stdout)
    assert info["header"]["pipeline"][0]["step"] == "quant"
    # -o names a file for commands that write one, a folder for those that write several.
    assert_one_line_error(run("encode", str(out), "-o", str(tmp_path)), "expected a .nrz file")
    assert_one_line_error(run("eval", str(out), "-o", str(nrz_file)), "is a file")


@pytest.mark.slow
def test_demo_trains_compresses_and_decodes(tmp_path):
    from nerfzip.demo import DEMO_PIPELINE, run_demo

    # The demo's own pipeline with a shorter fine-tuning: the whole product in a CI budget.
    pipeline = DEMO_PIPELINE.replace("finetune(150, 1024)", "finetune(40, 1024)")
    assert pipeline != DEMO_PIPELINE
    out = run_demo(tmp_path, iters=200, quiet=True, pipeline=pipeline)
    files = {f["name"]: f for f in out["files"]}
    assert files["pipeline.nrz"]["bytes"] < files["8bit.nrz"]["bytes"] \
        < files["lossless.nrz"]["bytes"]
    assert files["lossless.nrz"]["psnr"] == out["test"]["mean"]["psnr"]  # identical renders
    assert files["pipeline.nrz"]["psnr"] > out["test"]["mean"]["psnr"] - 2.0
    # The baked octree: within 2 dB of the field it was baked from, and faster to render.
    assert files["octree.nrz"]["psnr"] > out["test"]["mean"]["psnr"] - 2.0
    assert files["octree.nrz"]["seconds_per_view"] < files["lossless.nrz"]["seconds_per_view"]
