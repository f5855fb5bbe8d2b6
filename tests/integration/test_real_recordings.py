"""The real DCASE 2023 recordings (../shared/data/dcase2023_samples) through stats, fit, evaluate and score."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import REPO, require, run_cli

pytestmark = pytest.mark.slow

SAMPLES = REPO.parent / "shared" / "data" / "dcase2023_samples"


@pytest.fixture(scope="module")
def samples():
    require(SAMPLES.is_dir(), f"{SAMPLES} not found (the CI checkout has shared/ beside the project)")
    return SAMPLES


def test_stats_reads_every_real_recording(samples, tmp_path):
    out = run_cli("training", "stats", str(samples), "--out", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "stats.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 28 and all(not r["error"] for r in rows)
    manifest = {r["file"]: r for r in csv.DictReader(open(samples / "manifest.csv"))}
    for row in rows:
        name = row["path"].rsplit("/", 1)[-1]
        assert float(row["rms_dbfs"]) == pytest.approx(float(manifest[name]["rms_dbfs"]), abs=0.1)


def test_fit_evaluate_score_on_real_recordings(samples, tmp_path):
    model = tmp_path / "gearbox"
    out = run_cli(
        "training",
        "fit",
        "--data",
        str(samples),
        "--machine-type",
        "gearbox",
        "--out",
        str(model),
        "--epochs",
        "3",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    out = run_cli(
        "training", "evaluate", "--model", str(model), "--data", str(samples), "--out", str(tmp_path / "eval")
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["machine_types"]) == {"gearbox"}
    gearbox = sorted(samples.glob("gearbox_*.wav"))
    out = run_cli("device", "score", "--model", str(model), *map(str, gearbox))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4 and all(r["windows"] >= 9 and r["score"] is not None for r in rows)
