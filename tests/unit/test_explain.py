"""What an alarm says changed: band ranges against normal band levels, the fault class, their payload and metadata."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from device.analysis.explain import (
    MAX_BANDS,
    MIN_RISE_DB,
    STEADY,
    TRANSIENT,
    BandLevels,
    EventExplainer,
    band_edges_hz,
    band_summary,
    fit_band_levels,
    rises,
)
from device.analysis.features import FeatureParams, mel_band_centres_hz
from device.analysis.metadata import ModelMetadata
from device.decisions.detector import Event, Transition
from device.errors import ModelError
from device.mqtt.payloads import event_payload
from tests.mqtt_support import SCHEMAS, validate

PARAMS = FeatureParams()
N = PARAMS.n_mels


def _normal(spread: float = 1.0) -> BandLevels:
    zeros = np.zeros(N)
    return BandLevels(zeros, np.full(N, spread), zeros + 5.0, np.full(N, spread), 100)


def test_band_ranges_are_contiguous_cover_the_front_end_and_hold_their_centres():
    low, high = band_edges_hz(PARAMS)
    assert low[0] == PARAMS.fmin_hz and high[-1] == PARAMS.fmax_hz
    np.testing.assert_array_equal(low[1:], high[:-1])
    centres = mel_band_centres_hz(PARAMS)
    assert np.all((low < centres) & (centres < high))


def test_band_summary_is_relative_to_the_window_level():
    rng = np.random.default_rng(0)
    logmel = rng.normal(-40.0, 3.0, size=PARAMS.patch_shape).astype(np.float32)
    mean_db, peak_db = band_summary(logmel)
    louder_mean, louder_peak = band_summary(logmel + 20.0)  # microphone gain: nothing changed
    np.testing.assert_allclose(mean_db, louder_mean, atol=1e-4)
    np.testing.assert_allclose(peak_db, louder_peak, atol=1e-4)
    assert abs(mean_db.mean()) < 1e-4 and np.all(peak_db >= mean_db)


def test_a_steady_rise_is_named_with_its_frequency_range():
    mean_db, peak_db = np.zeros(N), np.full(N, 5.0)
    mean_db[20:24] = 8.0  # four neighbouring bands 8 dB above normal, 8 spreads
    peak_db[20:24] = 13.0
    (band,) = rises(PARAMS, _normal(), mean_db, peak_db)
    low, high = band_edges_hz(PARAMS)
    assert (band.low_hz, band.high_hz) == (low[20], high[23])
    assert band.kind == STEADY and band.db_above_normal == pytest.approx(8.0) and band.z == pytest.approx(8.0)
    assert (band.first_band, band.last_band) == (20, 23)
    payload = band.to_payload()
    assert payload == {"low_hz": round(low[20]), "high_hz": round(high[23]), "db_above_normal": 8.0, "z": 8.0,
                       "kind": "steady"}  # fmt: skip


def test_peaks_alone_make_a_transient_and_kinds_are_not_merged():
    mean_db, peak_db = np.zeros(N), np.full(N, 5.0)
    mean_db[10:12] = 6.0  # steady
    peak_db[10:12] = 11.0
    peak_db[12:15] = 15.0  # next to it, peaks only: a separate transient range
    found = rises(PARAMS, _normal(), mean_db, peak_db)
    assert [(b.kind, b.first_band, b.last_band) for b in found] == [(TRANSIENT, 12, 14), (STEADY, 10, 11)]
    assert found[0].db_above_normal == pytest.approx(10.0)  # strongest (z 10) first


def test_small_or_ordinary_changes_are_not_named():
    mean_db, peak_db = np.zeros(N), np.full(N, 5.0)
    mean_db[30] = MIN_RISE_DB - 0.1  # many spreads, but under the audible minimum
    mean_db[40] = 2.5  # 2.5 spreads
    assert rises(PARAMS, _normal(spread=0.2), mean_db, peak_db[:]) == ()
    assert rises(PARAMS, _normal(spread=1.0), mean_db, peak_db) == ()


def test_at_most_max_bands_strongest_first():
    mean_db, peak_db = np.zeros(N), np.full(N, 5.0)
    for k, band in enumerate((5, 15, 25, 35, 45)):
        mean_db[band] = 4.0 + k
    found = rises(PARAMS, _normal(), mean_db, peak_db)
    assert len(found) == MAX_BANDS == SCHEMAS["event"]["properties"]["bands"]["maxItems"]
    assert [b.first_band for b in found] == [45, 35, 25]


def test_fit_band_levels_and_refusals():
    rng = np.random.default_rng(1)
    means, peaks = rng.normal(0, 2, (50, N)), rng.normal(6, 1, (50, N))
    levels = fit_band_levels(means, peaks)
    np.testing.assert_allclose(levels.spread_db, means.std(axis=0))
    assert levels.windows == 50
    with pytest.raises(ValueError):
        fit_band_levels(means[:1], peaks[:1])
    with pytest.raises(ValueError):
        fit_band_levels(means, peaks[:, :10])


def test_explainer_averages_the_windows_since_the_last_message_and_names_a_fault():
    labels = ("normal", "bearing", "cavitation")
    explainer = EventExplainer(PARAMS, _normal(), labels)
    assert explainer.take() is None  # nothing added: the caller keeps the last explanation
    quiet = np.zeros(PARAMS.patch_shape, np.float32)
    loud = quiet.copy()
    loud[:, 30:33] = 12.0
    explainer.add(loud, np.array([0.7, 0.2, 0.1]))
    explainer.add(quiet, np.array([0.6, 0.3, 0.1]))
    explanation = explainer.take()
    assert explanation is not None and explanation.windows == 2
    (band,) = explanation.bands or ()
    assert (band.first_band, band.last_band) == (30, 32)
    # Relative to the window mean: a 12 dB rise in 3 of 64 bands leaves 12 * 61 / 64 above it, halved by the quiet window.
    assert band.db_above_normal == pytest.approx(12 * 61 / 64 / 2, abs=0.01)
    assert explanation.fault is not None and explanation.fault.label == "bearing"  # never 'normal'
    assert explanation.fault.probability == pytest.approx(0.25)
    assert "bearing 0.25" in explanation.summary() and "+5.7 dB steady" in explanation.summary()
    assert explainer.take() is None  # taken: the next update starts afresh


def test_explainer_averages_band_summary_exactly():
    """What take() compares is the average of band_summary over the windows, as training measured it."""
    rng = np.random.default_rng(3)
    windows = [rng.normal(-50.0, 6.0, size=PARAMS.patch_shape).astype(np.float32) for _ in range(7)]
    explainer = EventExplainer(PARAMS, _normal(), ())
    assert explainer.band_averages() is None
    for w in windows:
        explainer.add(w, None)
    averages = explainer.band_averages()
    assert averages is not None
    summaries = [band_summary(w) for w in windows]
    np.testing.assert_allclose(averages[0], np.mean([m for m, _ in summaries], axis=0), atol=1e-4)
    np.testing.assert_allclose(averages[1], np.mean([p for _, p in summaries], axis=0), atol=1e-4)


def test_explainer_refuses_levels_for_another_front_end():
    with pytest.raises(ValueError):
        EventExplainer(FeatureParams(n_mels=40), _normal(), ())


def _event_with(explanation) -> dict:
    event = Event("9f0c2a5e4b7d4f0e8a1b2c3d4e5f6a7b", 3.6, 5, 13.5, score_sum=13.5, n_windows=1, last_seconds=3.6)
    event.explanation = explanation
    return event_payload(Transition("start", event, 5, 3.6, 13.5), 0, "pump-7", "plant-a", 10.0, "pump", "1", "x.wav")


def test_event_payload_carries_bands_and_fault_and_validates():
    explainer = EventExplainer(PARAMS, _normal(), ("normal", "bearing_fault"))
    loud = np.zeros(PARAMS.patch_shape, np.float32)
    loud[:, 40:44] = 10.0
    explainer.add(loud, np.array([0.1, 0.9]))
    payload = _event_with(explainer.take())
    validate("event", payload)
    assert payload["bands"][0]["kind"] == "steady" and payload["bands"][0]["low_hz"] < payload["bands"][0]["high_hz"]
    assert payload["fault"] == {"label": "bearing_fault", "probability": 0.9}


def test_event_payload_of_a_model_without_band_levels_has_no_bands_key():
    no_levels = EventExplainer(PARAMS, None, ("normal", "a", "b"))
    no_levels.add(np.zeros(PARAMS.patch_shape, np.float32), np.array([0.2, 0.3, 0.5]))
    payload = _event_with(no_levels.take())
    assert "bands" not in payload and payload["fault"]["label"] == "b"
    validate("event", payload)
    plain = _event_with(None)
    assert "bands" not in plain and "fault" not in plain
    validate("event", plain)
    nothing_rose = EventExplainer(PARAMS, _normal(), ())
    nothing_rose.add(np.zeros(PARAMS.patch_shape, np.float32), None)
    payload = _event_with(nothing_rose.take())
    assert payload["bands"] == [] and "fault" not in payload
    validate("event", payload)


# --- the metadata record ----------------------------------------------------------------------------------


def _document(**band_levels) -> dict:
    levels = {"mean_db": [0.0] * N, "spread_db": [1.0] * N, "peak_mean_db": [5.0] * N, "peak_spread_db": [1.0] * N,
              "windows": 100, **band_levels}  # fmt: skip
    return {
        "schema_version": 1,
        "name": "pump",
        "version": "1",
        "feature_params": PARAMS.to_dict(),
        "score_kind": "gaussian_distance",
        "threshold": 2.0,
        "band_levels": levels,
    }


def test_metadata_band_levels_round_trip_and_are_optional():
    meta = ModelMetadata.from_document(_document(), "m.tflite")
    assert meta.band_levels is not None and len(meta.band_levels.spread_db) == N
    document = meta.document()
    json.dumps(document, allow_nan=False)  # finite by construction
    assert ModelMetadata.from_document(document, "m.tflite") == meta
    older = _document()
    older.pop("band_levels")
    assert ModelMetadata.from_document(older, "m.tflite").band_levels is None


@pytest.mark.parametrize(
    "change, needle",
    [
        pytest.param({"spread_db": [math.nan] + [1.0] * (N - 1)}, "band_levels.spread_db", id="nan-spread"),
        pytest.param({"mean_db": [1.0] * (N - 1) + [math.inf]}, f"band {N - 1}", id="inf-level"),
        pytest.param({"peak_mean_db": [-math.inf] * N}, "band_levels.peak_mean_db", id="minus-inf"),
        pytest.param({"peak_spread_db": [-1.0] * N}, "0 to 100 dB", id="negative-spread"),
        pytest.param({"mean_db": [1e300] * N}, "finite number within", id="absurd-level"),
        pytest.param({"mean_db": [True] * N}, "band 0", id="bools"),
        pytest.param({"mean_db": ["1.0"] * N}, "band 0", id="strings"),
        pytest.param({"mean_db": 3.0}, "list of numbers", id="not-a-list"),
        pytest.param({"spread_db": [1.0] * (N - 1)}, "63 values but the front end has 64", id="short"),
        pytest.param({"windows": 0}, "band_levels.windows", id="no-windows"),
        pytest.param({"mean_db": [10**400] * N}, "band 0", id="huge-integer"),
    ],
)
def test_hostile_band_levels_are_refused_in_one_line(change, needle):
    with pytest.raises(ModelError) as info:
        ModelMetadata.from_document(_document(**change), "m.tflite")
    message = str(info.value)
    assert "\n" not in message and "m.tflite" in message and needle in message, message
