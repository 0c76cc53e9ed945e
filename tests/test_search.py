"""``nerfzip search``: the YAML space is checked like user input, the front is the trials'
non-dominated feasible set, bad trials are pruned, a search survives interruption and resumes,
bad input is one line with exit status 2 and leaves the study as it was, and two workers on a
real PostgreSQL server share one study without running a trial twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nerfzip.cli.main import main
from nerfzip.errors import NerfzipError
from nerfzip.search.local_postgres import NoServer, local_postgres
from nerfzip.search.space import load_space, parse_space
from nerfzip.search.storage import open_storage
from nerfzip.search.study import (
    GATE,
    QualityView,
    counted,
    dominates,
    optimize,
    pareto_front,
    requeue_interrupted,
)

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
families:
  tensorf-vm:
    field:
      density_components: {low: 2, high: 4}
pipeline:
  - prune:
      method: magnitude
      remove: {low: 0.2, high: 0.9}
  - vq:
      optional: true
      codebook_size: {choices: [16, 64]}
      n_rays: 2048
      iters: 2
  - quant:
      bits: {low: 2, high: 8}
      min_elements: 256
"""
FAST = ["--views", "1", "--threads", "1"]


# --- the space ------------------------------------------------------------------------------
def test_default_space_reads_and_names_typed_settings():
    space = load_space()
    assert {"tensorf-vm", "tensorf-cp", "hash-grid"} <= set(space.families)
    names = [s.name for s in space.pipeline]
    assert names == ["prune", "vq", "quant", "finetune"]
    assert space.pipeline[2].params["bits"].kind == "int"
    assert space.pipeline[0].params["keep_mass"].kind == "float"
    assert space.families["hash-grid"].field["log2_table_size"].high == 15


@pytest.mark.parametrize("text, fragments", [
    ("pipeline:\n  - quant: {bitz: 4}\n", ["quant", "unknown parameter 'bitz'"]),
    ("pipeline:\n  - quant: {bits: {low: 8, high: 3}}\n", ["bits", "empty range"]),
    ("pipeline:\n  - vq: {codebook_size: {choices: []}}\n", ["codebook_size", "empty list"]),
    ("pipeline:\n  - quant: {bits: {low: 2, high: 40}}\n", ["bits"]),
    ("pipeline:\n  - squash: {}\n", ["unknown pass 'squash'"]),
    ("families:\n  voxel-soup: {}\npipeline:\n  - quant: {}\n", ["unknown field family"]),
    ("families:\n  tensorf-vm: {field: {colours: 3}}\npipeline:\n  - quant: {}\n",
     ["tensorf-vm", "unknown parameter 'colours'"]),
    ("training:\n  iterations: 5\npipeline:\n  - quant: {}\n", ["unknown parameter"]),
    ("pipeline:\n  - quant: {bits: {low: 2.5, high: 4}}\n", ["integer"]),
    ("pipeline: [\n", ["malformed YAML"]),
])
def test_bad_spaces_are_one_line_errors(text, fragments):
    with pytest.raises(NerfzipError) as e:
        parse_space(text, "space.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("space.yaml")
    for f in fragments:
        assert f in msg, msg


def test_candidates_stay_in_their_ranges_and_optional_steps_switch():
    space = parse_space(SPACE)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    seen_vq = set()
    for _ in range(12):
        c = space.candidate(study.ask(), None)
        assert c.train is None
        by = {s.name: s for s in c.steps}
        assert 0.2 <= by["prune"].kwargs["remove"] <= 0.9
        assert 2 <= by["quant"].kwargs["bits"] <= 8 and by["quant"].kwargs["min_elements"] == 256
        seen_vq.add("vq" in by)
    assert seen_vq == {True, False}


# --- the front and the pruner -----------------------------------------------------------------
def frozen(number, psnr, nbytes, constraints=(0.0,)):
    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=None,
        values=[psnr, nbytes], datetime_start=None, datetime_complete=None, params={},
        distributions={}, intermediate_values={}, trial_id=number, system_attrs={},
        user_attrs={"metrics": {"psnr": psnr, "bytes": nbytes},
                    "constraints": list(constraints)})


def test_pareto_front_is_the_feasible_non_dominated_set():
    trials = [frozen(0, 30.0, 1000), frozen(1, 29.0, 2000), frozen(2, 31.0, 3000),
              frozen(3, 32.0, 900, constraints=(0.0, 0.5)), frozen(4, 31.0, 3000),
              frozen(5, 25.0, 500)]
    front = [t.number for t in pareto_front(trials, ["psnr", "bytes"])]
    # 1 is dominated by 0; 3 is over budget; 2 and 4 tie (neither dominates the other)
    assert front == [5, 0, 2, 4]
    assert dominates([30.0, 1000], [29.0, 2000], [1, -1])
    assert not dominates([31.0, 3000], [31.0, 3000], [1, -1])


def test_successive_halving_prunes_a_trial_that_trails_on_psnr():
    study = optuna.create_study(directions=["maximize", "minimize"])
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    for psnr in (30.0, 29.0, 31.0, 30.5, 29.5):
        t = study.ask()
        study._storage.set_trial_intermediate_value(t._trial_id, 1, psnr)
        pruner.prune(QualityView(study), study._storage.get_trial(t._trial_id))  # joins rung
        study.tell(t, [psnr, 1.0])
    bad = study.ask()
    study._storage.set_trial_intermediate_value(bad._trial_id, 1, 12.0)
    assert pruner.prune(QualityView(study), study._storage.get_trial(bad._trial_id))
    good = study.ask()
    study._storage.set_trial_intermediate_value(good._trial_id, 1, 35.0)
    assert not pruner.prune(QualityView(study), study._storage.get_trial(good._trial_id))


def test_interrupted_trials_are_queued_again_once():
    study = optuna.create_study(directions=["maximize", "minimize"])
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    t.set_user_attr("interrupted", True)
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert counted(study) == 0
    assert requeue_interrupted(study) == 1 and requeue_interrupted(study) == 0
    again = study.ask()
    assert again.suggest_float("x", 0, 1) == t.params["x"]  # the same settings again
    assert again.user_attrs["retry_of"] == t.number


class CtrlCWhileSampling(optuna.samplers.RandomSampler):
    """Sends Ctrl-C from inside Optuna's own bookkeeping, before the objective runs."""

    def before_trial(self, study, trial):
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)
        super().before_trial(study, trial)


def test_ctrl_c_between_trials_still_marks_the_trial_it_cuts():
    study = optuna.create_study(directions=["maximize"], sampler=CtrlCWhileSampling(seed=0))
    ran = []

    def objective(trial):
        with GATE.open(trial):
            ran.append(trial.number)
            return trial.suggest_float("x", 0, 1)

    with pytest.raises(KeyboardInterrupt):
        optimize(study, objective, trials=5)
    states = [(t.state.name, t.user_attrs.get("interrupted")) for t in study.trials]
    assert ran == [0] and states == [("COMPLETE", None), ("FAIL", True)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert requeue_interrupted(study) == 1


# --- the command ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A TensoRF-VM trained for 30 steps on the procedural scene (a few seconds)."""
    out = tmp_path_factory.mktemp("search") / "run"
    assert main(["train", "--data", "procedural", "-o", str(out), "--iters", "30",
                 "--n-voxels-final", "32768", "--field-options", "density_components=4",
                 "appearance_components=8", "--quiet"]) == 0
    return out


def search(tmp, run, *extra, space=SPACE):
    (tmp / "space.yaml").write_text(space)
    return main(["search", "--from", str(run), "--space", str(tmp / "space.yaml"),
                 "-o", str(tmp / "search"), *FAST, *extra])


def one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nerfzip: error:"), err
    for f in fragments:
        assert f in err[0], err[0]


def trials_in(db: Path, study: str = "nerfzip-search") -> list:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def test_search_resume_front_export_and_refusals(tiny_run, tmp_path, capsys):
    best = tmp_path / "best.nrz"
    assert search(tmp_path, tiny_run, "--trials", "3", "--budget-mb", "1",
                  "--export-best", str(best), "--pruner", "none", "--seed", "1") == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and f"wrote {best}" in out
    db = tmp_path / "search" / "study.db"
    trials = trials_in(db)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:  # every trial's file kept, with the bytes it recorded
        f = tmp_path / "search" / "trials" / f"trial-{t.number:04d}.nrz"
        assert f.stat().st_size == t.user_attrs["metrics"]["bytes"]
    record = json.loads((tmp_path / "search" / "front.json").read_text())
    study = optuna.load_study(study_name="nerfzip-search", storage=f"sqlite:///{db}")
    assert sorted(record["front"]) == sorted(t.number for t in study.best_trials)
    chosen = max((t for t in trials if t.number in record["front"]),
                 key=lambda t: t.user_attrs["metrics"]["psnr"])
    assert best.read_bytes() == (tmp_path / "search" / "trials" /
                                 f"trial-{chosen.number:04d}.nrz").read_bytes()
    assert (tmp_path / "search" / "front.png").read_bytes()[:4] == b"\x89PNG"

    # the same study again without --resume: refused, nothing run
    assert search(tmp_path, tiny_run, "--trials", "5") == 2
    one_error_line(capsys, "already exists", "--resume")
    # --resume continues to the new total, with the study's own budget and space
    assert main(["search", "--from", str(tiny_run), "-o", str(tmp_path / "search"), *FAST,
                 "--trials", "4", "--resume", "--pruner", "none"]) == 0
    assert capsys.readouterr().err.count("trial 3:") == 1  # one line per trial run
    # a trial file this machine does not hold is made again, byte for byte, from its settings
    record = json.loads((tmp_path / "search" / "front.json").read_text())
    chosen = max((t for t in trials_in(db) if t.number in record["front"]),
                 key=lambda t: t.user_attrs["metrics"]["psnr"])
    kept = tmp_path / "search" / "trials" / f"trial-{chosen.number:04d}.nrz"
    original = kept.read_bytes()
    kept.unlink()
    assert main(["search", "--from", str(tiny_run), "-o", str(tmp_path / "search"),
                 "--trials", "4", "--resume", "--export-best", str(tmp_path / "again.nrz")]) == 0
    assert "made again" in capsys.readouterr().out
    assert (tmp_path / "again.nrz").read_bytes() == original
    assert len(trials_in(db)) == 4
    # a different budget on resume is refused
    assert search(tmp_path, tiny_run, "--trials", "5", "--resume", "--budget-mb", "2") == 2
    one_error_line(capsys, "budget_mb")
    # a YAML with an unknown parameter: one line, the study untouched
    before = db.read_bytes()
    bad = SPACE.replace("bits:", "bitz:")
    assert search(tmp_path, tiny_run, "--trials", "5", "--resume", space=bad) == 2
    one_error_line(capsys, "space.yaml", "unknown parameter 'bitz'")
    assert db.read_bytes() == before and len(trials_in(db)) == 4


def worker_env() -> dict[str, str]:
    """This interpreter's environment with the checkout first on the import path."""
    path = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def test_ctrl_c_keeps_the_study_and_resume_runs_the_cut_trial_again(tiny_run, tmp_path,
                                                                     capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "search"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nerfzip.cli.main", "search", "--from", str(tiny_run),
         "--space", str(tmp_path / "space.yaml"), "-o", str(out), "--trials", "50",
         "--views", "4", "--pruner", "none"], env=worker_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ctrl-C while the second trial runs
        time.sleep(0.2)
        if (out / "study.db").exists():
            try:
                states = {t.number: t.state.name for t in trials_in(out / "study.db")}
            except Exception:  # noqa: BLE001 - the study is still being created
                continue
            if states.get(1) == "RUNNING":
                proc.send_signal(signal.SIGINT)
                break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("continue it with --resume")
    assert "Traceback" not in err
    cut = {t.number: t for t in trials_in(out / "study.db")}
    assert cut[0].state.name == "COMPLETE" and cut[1].state.name == "FAIL"
    assert cut[1].user_attrs["interrupted"] and len(cut) == 2
    assert main(["search", "--from", str(tiny_run), "-o", str(out), "--trials", "2",
                 "--resume", "--pruner", "none"]) == 0  # the study's own views, space
    after = trials_in(out / "study.db")
    assert len(after) == 3 and after[2].user_attrs["retry_of"] == 1
    assert after[2].params == cut[1].params and after[2].state.name == "COMPLETE"


@pytest.mark.parametrize("budget, says", [(["--budget-mb", "0.0001"], "smallest file"),
                                          (["--max-frame-seconds", "1e-6"], "fastest frame")])
def test_a_budget_no_trial_meets_is_reported(tiny_run, tmp_path, capsys, budget, says):
    code = search(tmp_path, tiny_run, "--trials", "2", *budget,
                  "--export-best", str(tmp_path / "best.nrz"))
    assert code == 2
    err = capsys.readouterr().err
    assert "no trial met the budget" in err and says in err
    assert not (tmp_path / "best.nrz").exists()
    assert len(trials_in(tmp_path / "search" / "study.db")) == 2  # the trials stay recorded


def test_a_search_that_trains_varies_the_family_config(tmp_path):
    space = """
training: {iters: 24, n_voxels_final: 32768}
families:
  tensorf-vm:
    field:
      density_components: {low: 2, high: 3}
      appearance_components: {choices: [4, 6]}
pipeline:
  - quant: {bits: {low: 4, high: 8}, min_elements: 256}
"""
    (tmp_path / "space.yaml").write_text(space)
    assert main(["search", "--data", "procedural", "--space", str(tmp_path / "space.yaml"),
                 "-o", str(tmp_path / "s"), "--trials", "2", "--pruner", "none", *FAST]) == 0
    from nerfzip.codec.nrz import load

    for t in trials_in(tmp_path / "s" / "study.db"):
        assert t.state.name == "COMPLETE"
        assert sorted(t.intermediate_values) == [1, 2]  # PSNR at 1/3 and 2/3 of training
        field = load(tmp_path / "s" / "trials" / f"trial-{t.number:04d}.nrz").field
        assert field.config.density_components == t.params["tensorf-vm.field.density_components"]
        assert field.config.appearance_components == \
            t.params["tensorf-vm.field.appearance_components"]
        assert json.loads(t.user_attrs["train"])["iters"] == 24


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_run, tmp_path, capsys):
    space = "pipeline:\n  - low_rank: {energy: 0.9}\n  - quant: {bits: {low: 4, high: 8}}\n"
    assert search(tmp_path, tiny_run, "--trials", "2", space=space) == 2
    err = capsys.readouterr().err
    assert err.count("failed: pipeline step 1 (low_rank") == 2  # both ran, each said why
    assert "no trial finished (2 failed" in err.strip().splitlines()[-1]
    trials = trials_in(tmp_path / "search" / "study.db")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    record = json.loads((tmp_path / "search" / "front.json").read_text())
    assert record["front"] == [] and "low_rank" in record["trials"][0]["error"]


@pytest.mark.parametrize("url, fragment", [
    ("postgres ql:/%%", "malformed URL"),
    ("mysql://u@localhost/db", "unsupported database"),
    ("postgresql://nobody:secret@127.0.0.1:1/db", "cannot open the study database"),
    ("sqlite:///{tmp}/no/such/dir/study.db", "does not exist"),
    ("sqlite:///{tmp}/space.yaml", "cannot open the study database"),
])
def test_bad_storage_urls_are_one_line_errors(tiny_run, tmp_path, capsys, url, fragment):
    (tmp_path / "space.yaml").write_text(SPACE)
    before = (tmp_path / "space.yaml").read_bytes()
    assert main(["search", "--from", str(tiny_run), "--storage", url.format(tmp=tmp_path),
                 "-o", str(tmp_path / "s"), "--trials", "1"]) == 2
    one_error_line(capsys, fragment)
    assert "secret" not in capsys.readouterr().err
    assert (tmp_path / "space.yaml").read_bytes() == before


@pytest.mark.parametrize("args, fragment", [
    (["--objectives", "psnr,size"], "unknown: size"),
    (["--objectives", "psnr,psnr"], "named twice"),
    (["--trials", "0"], "--trials 0"),
    (["--budget-mb", "-1"], "--budget-mb -1"),
    (["--export-best", "best.png"], "expected a .nrz file"),
    (["--sampler", "grid"], "--sampler grid"),
    (["--pruner", "median"], "--pruner median"),
    (["--from", "no/such/run"], "no such run"),
    (["--space", "no/such/space.yaml"], "not found"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, fragment):
    assert main(["search", "--data", "procedural", "-o", str(tmp_path / "s"), *args]) == 2
    one_error_line(capsys, fragment)
    assert not (tmp_path / "s").exists()  # refused before anything is written


# --- two workers on PostgreSQL ----------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own on a free local port, in a temporary folder; stopped
    and removed afterwards (as root, the server runs as the ``postgres`` user)."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    try:
        with local_postgres() as url:
            yield url
    except NoServer as e:
        pytest.skip(f"{e} (.ci/run installs it)")


def test_two_workers_share_one_postgres_study(tiny_run, tmp_path, postgres_url):
    (tmp_path / "space.yaml").write_text(SPACE)
    env = worker_env()
    # the first worker creates the study; both then join it with --resume
    cmd = [sys.executable, "-m", "nerfzip.cli.main", "search", "--from", str(tiny_run),
           "--space", str(tmp_path / "space.yaml"), "--storage", postgres_url, "--resume",
           "--trials", "8", "--pruner", "none", *FAST]
    procs = [subprocess.Popen([*cmd, "-o", str(tmp_path / f"w{i}")], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    t0 = time.monotonic()
    outs = [p.communicate(timeout=170) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="nerfzip-search", storage=open_storage(postgres_url))
    trials = study.get_trials()
    assert 8 <= len(trials) <= 9, f"{len(trials)} trials in {time.monotonic() - t0:.0f} s"
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, "both workers ran trials of the shared study"
    # no trial ran twice: each trial's file exists in exactly the folder of its worker
    for t in trials:
        where = [i for i in range(2) if (tmp_path / f"w{i}" / "trials" /
                                         f"trial-{t.number:04d}.nrz").is_file()]
        assert len(where) == 1, (t.number, where)
        assert (tmp_path / f"w{where[0]}" / "trials" / f"trial-{t.number:04d}.nrz"
                ).stat().st_size == t.user_attrs["metrics"]["bytes"]
    per_worker = [len(list((tmp_path / f"w{i}" / "trials").glob("*.nrz"))) for i in range(2)]
    assert sum(per_worker) == len(trials)
    # the study's front is the front of what the trials recorded
    objectives = ["psnr", "bytes", "frame_seconds"]
    recorded = {t.number for t in pareto_front(trials, objectives)}
    assert {t.number for t in study.best_trials} == recorded
