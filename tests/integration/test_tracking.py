"""Tracked runs: fit and evaluate from the command line log to a real MLflow SQLite store, `training runs` reads it."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, require, run_cli

pytestmark = pytest.mark.slow

# A small network fit: the autoencoder (it has a Keras history), two short epochs.
SMALL_FIT = "fit:\n  max_patches_per_epoch: 256\n  representative_patches: 50\n"


def _mlflow():
    from training.tracking import import_mlflow

    mlflow = import_mlflow()
    require(mlflow is not None, "mlflow-skinny is not installed (pip install 'acmon[track]')")
    return mlflow


def _runs(store: Path) -> dict:
    """{command: run} of a local store, read with MLflow's own client."""
    from training.tracking import local_target, open_store

    client, experiment_id = open_store(_mlflow(), local_target(store), create=False)
    return client, {r.data.tags["acmon.command"]: r for r in client.search_runs([experiment_id])}


def _small_fit(data: Path, out: Path, tmp: Path, *tracking: str, env: dict | None = None):
    config = tmp / "small.yaml"
    config.write_text(SMALL_FIT)
    return run_cli(
        "training",
        "fit",
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        str(config),
        "--model",
        "autoencoder",
        "--epochs",
        "2",
        *tracking,
        env={"XDG_CACHE_HOME": str(tmp / "cache"), **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def tracked(demo_data, tmp_path_factory):
    """One store holding a small fit of the demo pump and the evaluation of that model."""
    _mlflow()
    tmp = tmp_path_factory.mktemp("tracked")
    store, model = tmp / "store", tmp / "model"
    out = _small_fit(demo_data / "pump", model, tmp, "--tracking-uri", str(store))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tracked as run " in out.stderr, out.stderr[-2000:]
    out = run_cli(
        "training",
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(demo_data / "pump"),
        "--out",
        str(tmp / "eval"),
        "--tracking-uri",
        str(store),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return store, model


def test_fit_run_holds_params_fingerprint_epochs_and_the_model(tracked, demo_data, tmp_path):
    from training.fingerprint import fingerprint

    store, model = tracked
    client, runs = _runs(store)
    run = runs["fit"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["cli.epochs"] == "2" and params["cli.model"] == "autoencoder"
    assert params["fit.max_patches_per_epoch"] == "256" and params["features.n_mels"] == "64"
    digest = fingerprint(demo_data / "pump", progress=False).digest
    assert params["data_fingerprint"] == run.data.tags["acmon.data_fingerprint"] == digest
    n_files = len(list((demo_data / "pump").rglob("*.wav")))
    assert params["data_files"] == str(n_files)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
    assert run.data.metrics["best_val_loss"] == min(
        m.value for m in client.get_metric_history(run.info.run_id, "val_loss")
    )
    assert run.data.metrics["threshold"] > 0
    got = Path(client.download_artifacts(run.info.run_id, "model/model.tflite", str(tmp_path)))
    assert got.read_bytes() == (model / "model.tflite").read_bytes()
    listing = Path(client.download_artifacts(run.info.run_id, "data/data_files.tsv", str(tmp_path))).read_text()
    assert listing.splitlines()[0] == "path\tsize_bytes\tsha256" and len(listing.splitlines()) == 1 + n_files
    assert "train/normal_id_00_00000000.wav\t" in listing


def test_evaluate_run_holds_the_roc_png_and_the_model_it_measured(tracked, tmp_path):
    store, _ = tracked
    client, runs = _runs(store)
    run = runs["evaluate"]
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["auc"] <= 1 and "pauc" in run.data.metrics
    assert run.data.params["model.sha256"] == runs["fit"].data.params["model.sha256"]
    png = Path(client.download_artifacts(run.info.run_id, "evaluation/roc.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/report.json", "evaluation/scores.csv"} <= names


def _runs_command(capsys, store: Path, *args: str) -> tuple[int, str, str]:
    """`python -m training runs` in this process (MLflow is imported once, not per command): (code, stdout, stderr)."""
    from training.__main__ import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        code = main(["runs", "--tracking-uri", str(store), *args])
    finally:  # main() sets up logging to this test's captured stderr; later tests must not write there
        root.handlers[:] = handlers
        root.setLevel(level)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_lists_shows_and_compares(tracked, capsys):
    store, _ = tracked
    _, runs = _runs(store)
    fit_id, eval_id = runs["fit"].info.run_id, runs["evaluate"].info.run_id
    out = run_cli("training", "runs", "--tracking-uri", str(store))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("2 run(s) in ")
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {fit_id[:8], eval_id[:8]}
    fingerprint = runs["fit"].data.params["data_fingerprint"][:12]
    assert " fit " in rows[fit_id[:8]] and "val_loss " in rows[fit_id[:8]] and fingerprint in rows[fit_id[:8]]
    assert " evaluate " in rows[eval_id[:8]] and "auc " in rows[eval_id[:8]]

    code, out, err = _runs_command(capsys, store, "--compare", fit_id[:8], eval_id[:6])
    assert code == 0, err
    assert out.splitlines()[0].split() == [fit_id[:8], eval_id[:8]]
    assert "* cli.model" in out and "  data_fingerprint" not in out  # equal params are hidden
    code, out, err = _runs_command(capsys, store, "--compare", fit_id, eval_id, "--all")
    assert code == 0 and "  data_fingerprint" in out, err

    code, out, err = _runs_command(capsys, store, "--show", fit_id[:8])
    assert code == 0, err
    assert f"run {fit_id} (fit pump), fit, finished" in out
    assert "(2 steps, min " in out and "model/model.tflite (" in out

    for args, message in (
        (["--show", "zzzz"], "error: run 'zzzz': no such run in "),
        (["--compare", fit_id], "error: runs --compare: give two or more run ids"),
    ):
        code, _, err = _runs_command(capsys, store, *args)
        assert code == 1 and err.startswith(message) and err.count("\n") == 1, err


def test_fingerprint_follows_the_content_not_the_place(demo_data, tmp_path):
    from training.fingerprint import fingerprint

    data = tmp_path / "a"
    shutil.copytree(demo_data / "pump" / "test", data)
    first = fingerprint(data, progress=False)
    assert len(first.files) == 8 and all(len(h) == 64 for _, _, h in first.files)
    moved = tmp_path / "b"
    shutil.copytree(data, moved)
    assert fingerprint(moved, progress=False).digest == first.digest  # the same data elsewhere
    wav = sorted(moved.glob("*.wav"))[3]
    raw = bytearray(wav.read_bytes())
    raw[-1] ^= 1  # one bit of one sample
    wav.write_bytes(bytes(raw))
    changed = fingerprint(moved, progress=False)
    assert changed.digest != first.digest
    assert [row for row in changed.files if row not in first.files] == [(wav.name, len(raw), changed.files[3][2])]
    (moved / ".hidden").write_text("not data")
    assert fingerprint(moved, progress=False).digest == changed.digest
    wav.rename(moved / "renamed.wav")
    assert fingerprint(moved, progress=False).digest != changed.digest


def test_unreachable_tracking_server_keeps_the_fit_and_logs_it_locally(demo_data, tmp_path):
    """A fit of an hour must not be lost because the tracking server is down: one warning, the run in the local store."""
    _mlflow()
    state = tmp_path / "state"
    port = free_port()  # bound and closed again: nothing listens there
    out = _small_fit(
        demo_data / "pump",
        tmp_path / "model",
        tmp_path,
        "--tracking-uri",
        f"http://127.0.0.1:{port}",
        env={"XDG_STATE_HOME": str(state)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "model" / "model.tflite").is_file()
    assert "Traceback" not in out.stderr
    warnings = [line for line in out.stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(warnings) == 1, warnings
    assert (
        "cannot be used" in warnings[0]
        and f"logging this run to the local store {state / 'acmon' / 'mlflow'}" in warnings[0]
    )
    client, runs = _runs(state / "acmon" / "mlflow")
    assert (
        runs["fit"].info.status == "FINISHED" and len(client.get_metric_history(runs["fit"].info.run_id, "loss")) == 2
    )
    assert runs["fit"].data.tags["acmon.fallback_from"] == f"http://127.0.0.1:{port}"


def test_a_store_failing_midway_is_written_whole_to_the_local_store(tmp_path, caplog):
    from training.tracking import TrackedRun, local_target, open_store

    mlflow = _mlflow()
    run = TrackedRun(mlflow, local_target(tmp_path / "server"), local_target(tmp_path / "local"))
    run.start("fit x", {"acmon.command": "fit"})
    run.log_params({"fit": {"epochs": 3}})
    run.log_metrics({"loss": 1.0}, step=1)
    with open(tmp_path / "server" / "mlflow.db", "r+b") as f:  # the store breaks under the running fit
        f.write(b"garbage!" * 4096)
    run.log_metrics({"loss": 0.5}, step=2)
    run.log_text("a\tb\n", "data_files.tsv", "data")
    run.finish("FINISHED")
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1 and "file is not a database" in failed[0] and "[SQL:" not in failed[0], failed
    client, experiment_id = open_store(mlflow, local_target(tmp_path / "local"), create=False)
    (kept,) = client.search_runs([experiment_id])
    assert kept.data.params == {"fit.epochs": "3"} and kept.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(kept.info.run_id, "loss")] == [1.0, 0.5]
    assert kept.data.tags["acmon.fallback_from"] == str(tmp_path / "server")
    assert [a.path for a in client.list_artifacts(kept.info.run_id, "data")] == ["data/data_files.tsv"]


def test_corrupt_store_is_one_line(trained_model, demo_data, tmp_path):
    _mlflow()
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"this is not a database" * 100)
    out = run_cli("training", "runs", "--tracking-uri", str(store))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"error: tracking store {store}: cannot be used (") and "not a database" in out.stderr
    out = run_cli(
        "training", "evaluate", "--model", str(trained_model), "--data", str(demo_data / "pump"),
        "--out", str(tmp_path / "eval"), "--tracking-uri", str(store),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [line for line in out.stderr.splitlines() if str(store) in line]
    assert len(warnings) == 1 and warnings[0].endswith("; this run is not tracked"), warnings
    assert "Traceback" not in out.stderr


def test_without_mlflow_commands_say_so_in_one_line(trained_model, demo_data, tmp_path):
    """As on a machine without acmon[track]: an import of mlflow fails."""
    prelude = (
        "import sys; sys.modules['mlflow'] = None; from training.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    evaluate = [
        "evaluate", "--model", str(trained_model), "--data", str(demo_data / "pump"), "--out", str(tmp_path / "eval"),
    ]  # fmt: skip
    out = _python(prelude, *evaluate)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if "track" in line]
    assert lines == [
        "INFO training.tracking: runs are not tracked: MLflow is not installed "
        "(pip install 'acmon[track]'; --no-track hides this line)"
    ], lines
    out = _python(prelude, "runs")
    assert out.returncode == 1 and out.stderr == (
        "error: listing tracked runs needs MLflow, which is not installed: pip install 'acmon[track]'\n"
    )


def test_no_track_touches_no_store(demo_data, tmp_path):
    import argparse

    from training.tracking import tracked_run

    store = tmp_path / "store"
    args = argparse.Namespace(no_track=True, tracking_uri=str(store), data=str(demo_data / "pump"))
    with tracked_run(args, "fit", args.data) as run:
        run.log_metrics({"loss": 1.0}, step=1)
    assert not run.enabled and not store.exists()


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
