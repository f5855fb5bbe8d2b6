"""Alarms that say what changed, with a real int8 model trained in the test run on the demo pump.

The demo's fault clips put their energy where training/synth.py says (the bearing's ringing at the pump's
bearing resonance, cavitation's crackle above 1.5 kHz); events must name a band there, normal clips next
to nothing, and a model made before acmon recorded normal band levels must still run, naming no bands.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from device.analysis.explain import BandRise, band_edges_hz
from device.analysis.inference import AnomalyModel
from device.analysis.model_file import MODEL_FILENAME, embedded_metadata, load_metadata
from device.audio.audio_io import read_wav
from device.decisions.detector import DetectorSettings
from device.errors import ModelError
from device.evidence.marks import BRACKET_LEFT, STEADY_COLOUR, TRANSIENT_COLOUR, band_rows
from device.pipeline import Pipeline
from tests.helpers import run_cli, write_config
from tests.mqtt_support import validate, validate_messages
from tests.unit.test_evidence import _decode_png
from training.synth import CAVITATION_HIGHPASS_HZ, machine_profile

pytestmark = pytest.mark.slow


def _fault_clip(demo_data: Path, fault: str) -> Path:
    """The demo's test clip of a fault, by the manifest (training/synth.py writes what each clip holds)."""
    with open(demo_data / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["fault"] == fault and r["split"] == "test"]
    return demo_data / rows[0]["path"]


def _normal_clips(demo_data: Path) -> list[Path]:
    return sorted((demo_data / "pump" / "test").glob("normal_*.wav"))


def _overlaps(band: dict, low_hz: float, high_hz: float) -> bool:
    return band["low_hz"] < high_hz and band["high_hz"] > low_hz


def _replay(model: Path, wavs: list[Path], folder: Path) -> list[dict]:
    """`python -m device replay --evidence` in process: the Runner, its Outbox and EvidenceRecorder; the events out."""
    from device.audio.sources import open_source
    from device.daemon.runner import Runner
    from device.settings.config import config_from_dict

    cfg = config_from_dict({"mqtt": {"enabled": False}, "evidence": {"directory": str(folder)}})
    out = io.StringIO()
    runner = Runner(cfg, model_path=str(model), use_mqtt=False, events_out=out, evidence=True)
    with runner:
        for wav in wavs:
            runner.run_stream(str(wav), open_source(cfg.audio, runner.model.params.sample_rate_hz, wav).blocks())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    for event in events:
        validate("event", event)
    return events


def test_fit_records_the_normal_band_levels(trained_model):
    out = run_cli("firmware_tools", "inspect", str(trained_model))
    assert out.returncode == 0 and "explains    the bands that rose (normal band levels from" in out.stdout, out
    _, _, meta = load_metadata(trained_model)
    levels = meta.band_levels
    assert levels is not None and levels.windows >= 100
    n = meta.feature_params.n_mels
    assert len(levels.mean_db) == len(levels.spread_db) == len(levels.peak_mean_db) == n
    assert all(s > 0 for s in levels.spread_db) and all(p > m for p, m in zip(levels.peak_mean_db, levels.mean_db))


def test_a_bearing_fault_names_the_bearing_resonance_and_the_png_marks_it(trained_model, demo_data, tmp_path):
    resonance_hz = machine_profile("pump", 0).bearing_resonance_hz  # the demo pump is id 0
    events = _replay(trained_model, [_fault_clip(demo_data, "bearing")], tmp_path)
    start = next(e for e in events if e["state"] == "start")
    assert start["bands"], start
    strongest = start["bands"][0]
    assert _overlaps(strongest, 0.9 * resonance_hz, 1.1 * resonance_hz), (resonance_hz, start["bands"])
    assert strongest["db_above_normal"] >= 3.0 and strongest["z"] >= 3.0
    assert "fault" not in start  # trained on normal sound only: no class to name
    end = next(e for e in events if e["state"] == "end")
    assert end["bands"] == start["bands"]  # an end repeats its event's last explanation

    # The evidence spectrogram brackets the strongest range on its frequency axis.
    image = _decode_png((tmp_path / start["evidence"]).with_suffix(".png").read_bytes())
    params = AnomalyModel(trained_model).params
    low, high = band_edges_hz(params)
    first = int(np.searchsorted(low, strongest["low_hz"] - 0.5))
    last = int(np.searchsorted(high, strongest["high_hz"] - 0.5))
    rise = BandRise(low[first], high[last], 0.0, 0.0, strongest["kind"], first, last)
    top, bottom = band_rows(rise, params.n_mels, image.shape[0] // params.n_mels)
    colour = STEADY_COLOUR if strongest["kind"] == "steady" else TRANSIENT_COLOUR
    bracket = {int(r) for r in np.flatnonzero(np.all(image[:, BRACKET_LEFT + 1] == colour, axis=1))}
    if strongest["kind"] == "steady":
        assert set(range(top, bottom + 1)) <= bracket, (top, bottom, sorted(bracket))
    else:
        assert bracket & set(range(top, bottom + 1)), (top, bottom, sorted(bracket))


def test_cavitation_names_a_band_above_its_high_pass(trained_model, demo_data, tmp_path):
    events = _replay(trained_model, [_fault_clip(demo_data, "cavitation")], tmp_path)
    start = next(e for e in events if e["state"] == "start")
    assert start["bands"] and _overlaps(start["bands"][0], CAVITATION_HIGHPASS_HZ, 8000.0), start["bands"]


def test_normal_windows_name_few_bands(trained_model, demo_data):
    """Every window of the normal test clips explained (threshold near 0, an update per window): few bands."""
    model = AnomalyModel(trained_model)
    settings = DetectorSettings(threshold=1e-9, patience_windows=1, update_seconds=0.1, cooldown_seconds=0.0)
    counts = []
    for wav in _normal_clips(demo_data):
        samples, _ = read_wav(wav)
        pipeline = Pipeline(model, settings)
        for result in pipeline.process(samples):
            for t in result.transitions:
                if t.state in ("start", "update"):
                    assert t.event.explanation is not None and t.event.explanation.windows == 1
                    counts.append(len(t.event.explanation.bands or ()))
    assert len(counts) >= 30
    assert np.mean([c > 0 for c in counts]) <= 0.25 and max(counts) <= 2, counts


def _without_band_levels(trained_model: Path, folder: Path) -> Path:
    """The trained model as acmon made it before it recorded normal band levels (no band_levels key)."""
    from training.export import embed_metadata

    _, data, meta = load_metadata(trained_model)
    buffers = {k: v for k, v in embedded_metadata(data, "m").items() if k != "acmon"}
    document = meta.document()
    document.pop("band_levels")
    folder.mkdir()
    (folder / MODEL_FILENAME).write_bytes(embed_metadata(data, document, buffers))
    return folder


def test_a_model_without_band_levels_still_runs_and_names_no_bands(trained_model, demo_data, tmp_path):
    old = _without_band_levels(trained_model, tmp_path / "old")
    assert load_metadata(old)[2].band_levels is None and AnomalyModel(old).new_explainer() is None
    inspected = run_cli("firmware_tools", "inspect", str(old))
    assert "explains    nothing: no normal band levels" in inspected.stdout, inspected
    events = _replay(old, [_fault_clip(demo_data, "bearing")], tmp_path / "evidence")
    assert events and all("bands" not in e and "fault" not in e for e in events)
    new_events = _replay(trained_model, [_fault_clip(demo_data, "bearing")], tmp_path / "evidence-new")
    assert [e["score"] for e in events] == [e["score"] for e in new_events]  # the scores are untouched
    old_png = _decode_png((tmp_path / "evidence" / events[0]["evidence"]).with_suffix(".png").read_bytes())
    new_png = _decode_png((tmp_path / "evidence-new" / new_events[0]["evidence"]).with_suffix(".png").read_bytes())
    assert old_png.shape[1] < new_png.shape[1]  # no margin: nothing to mark


@pytest.mark.parametrize(
    "values, needle",
    [
        pytest.param({"spread_db": math.nan}, "band_levels.spread_db", id="nan"),
        pytest.param({"mean_db": math.inf}, "band_levels.mean_db", id="inf"),
        pytest.param({"peak_mean_db": -math.inf}, "band_levels.peak_mean_db", id="minus-inf"),
    ],
)
def test_non_finite_band_levels_are_refused_at_load_in_one_line(trained_model, tmp_path, values, needle):
    from training.export import embed_metadata

    _, data, meta = load_metadata(trained_model)
    buffers = {k: v for k, v in embedded_metadata(data, "m").items() if k != "acmon"}
    document = meta.document()
    ((key, value),) = values.items()
    document["band_levels"][key] = [value] + document["band_levels"][key][1:]  # json writes NaN and Infinity
    bad = tmp_path / MODEL_FILENAME
    bad.write_bytes(embed_metadata(data, document, buffers))
    with pytest.raises(ModelError) as info:
        AnomalyModel(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and needle in message and "band 0" in message, message
    out = run_cli("device", "score", "--model", str(bad), str(tmp_path))
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and needle in out.stderr, out.stderr


@pytest.mark.broker
def test_events_over_mqtt_carry_the_bands_and_home_assistant_reads_them(
    broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    """Through a real mosquitto: the published events name the bands, every message fits its schema, and the
    anomaly sensor's discovery config points its attributes at them (rendered as Home Assistant does)."""
    import jinja2

    ha_prefix = f"{unique_prefix}-ha"
    mqtt = {
        "host": "127.0.0.1",
        "port": broker.port,
        "topic_prefix": unique_prefix,
        "spool_dir": str(tmp_path / "s"),
        "discovery_prefix": ha_prefix,
    }
    cfg = write_config(tmp_path, trained_model, mqtt, device={"site": "plant-a"}, evidence={"enabled": False})
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    ha = subscribe(broker.host, broker.port, f"{ha_prefix}/#")
    out = run_cli("device", "replay", "--config", str(cfg), str(_fault_clip(demo_data, "bearing")))
    assert out.returncode == 0, out.stderr
    assert sub.wait_for(lambda s: len(s.json_on("events")) >= 2, 20), sub.messages
    events = sub.json_on("events")
    assert [e["state"] for e in events] == ["start", "end"] and all(e["bands"] for e in events), events
    assert events[0]["device_id"] == "pump-7" and events[0]["site"] == "plant-a"
    assert validate_messages(sub.messages) >= 2
    assert ha.wait_for(lambda s: any(t.endswith("/anomaly/config") for t, _, _ in s.messages), 20)
    anomaly = next(json.loads(p) for t, p, _ in ha.messages if t.endswith("/anomaly/config"))
    assert anomaly["json_attributes_topic"] == f"{unique_prefix}/plant-a/pump-7/events"
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(anomaly["json_attributes_template"])
    attributes = json.loads(template.render(value_json=events[0]))
    band = events[0]["bands"][0]
    assert attributes["bands"] == events[0]["bands"] and attributes["cause"].startswith(
        f"{band['low_hz']}-{band['high_hz']} Hz +{band['db_above_normal']} dB {band['kind']}"
    )
