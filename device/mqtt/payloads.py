"""MQTT/JSON payloads the device emits (JSON Schemas in device/schemas/), and a safe reader for JSON it receives."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from ..decisions.detector import Transition

EVENT_SCHEMA = "acmon.event/1"
STATE_SCHEMA = "acmon.state/1"
TELEMETRY_SCHEMA = "acmon.telemetry/1"
HEALTH_SCHEMA = "acmon.health/1"


# The characters that open or close a nesting level or a string, or escape inside one.
_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def json_nesting_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in JSON text, without parsing it.

    One pass over the structural characters, no recursion: safe on input that would
    drive json.loads past the interpreter's recursion limit (about 1000 levels, less
    on a thread's smaller stack). Brackets inside strings do not count. Malformed
    text gives some number (json.loads then rejects the text anyway).

    Args:
        text: JSON text.
        limit: stop scanning once the depth exceeds this.

    Returns:
        The deepest nesting (1 for a flat object), or a value > limit as soon as one is seen.
    """
    depth = deepest = 0
    in_string = False
    skip_to = 0  # the character after a backslash is escaped, whatever it is
    for match in _JSON_STRUCTURE.finditer(text):
        i = match.start()
        if i < skip_to:
            continue
        char = text[i]
        if in_string:
            if char == "\\":
                skip_to = i + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def loads_untrusted_json(data: bytes, max_depth: int) -> Any:
    """json.loads for bytes from outside (MQTT commands, spool files): UTF-8, nesting bounded.

    Args:
        data: the raw bytes; the caller bounds their size.
        max_depth: deepest nesting of arrays and objects allowed (1 = flat).

    Raises:
        ValueError: a one-line reason (not UTF-8, nested too deeply, or not JSON).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    if json_nesting_depth(text, max_depth) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
        raise ValueError(str(exc).split("\n")[0][:200] or type(exc).__name__) from None


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds and a Z suffix."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(
    transition: Transition,
    seq: int,
    device_id: str,
    site: str,
    threshold: float,
    model_name: str,
    model_version: str,
    source: str,
    time_utc: str | None = None,
    evidence: str | None = None,
    asset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one event message (start, update or end of an alarm).

    Args:
        transition: what the Detector reported.
        seq: the device's message sequence number (monotonic; for ordering and deduplication).
        source: the stream the audio came from (a WAV path or 'microphone:<name>').
        time_utc: wall-clock time of the message; now unless given.
        evidence: file name of the event's evidence clip (WAV; a PNG of the same
            stem beside it), or None when evidence is off.
        asset: the site metadata (asset_payload()), added as `asset` when given.

    The event's explanation (device/analysis/explain.py, set by the pipeline at each start and
    update) adds `bands` (when the model records normal band levels) and `fault` (supervised
    models); an end repeats its event's last ones.
    """
    ev = transition.event
    explained = ev.explanation.payload_fields() if ev.explanation is not None else {}
    payload = {
        "schema": EVENT_SCHEMA,
        "event_id": ev.event_id,
        "state": transition.state,
        "seq": seq,
        "device_id": device_id,
        "site": site,
        "time": time_utc or utc_now_iso(),
        "stream_seconds": round(transition.time_seconds, 3),
        "start_stream_seconds": round(ev.start_seconds, 3),
        "duration_seconds": round(ev.duration_seconds, 3),
        "score": None if transition.score is None else round(transition.score, 6),
        "peak_score": round(ev.peak_score, 6),
        "mean_score": round(ev.mean_score, 6),
        "threshold": round(threshold, 6),
        "model": {"name": model_name, "version": model_version},
        "source": source,
        "evidence": evidence,
        "rule": ev.rule,
        **explained,
    }
    if ev.band_hz is not None:
        payload["band_hz"] = ev.band_hz
    if transition.reason is not None:
        payload["reason"] = transition.reason
    if asset:
        payload["asset"] = asset
    return payload


def asset_payload(asset_id: str | None, location: str | None, line_voltage_kv: float | None) -> dict[str, Any] | None:
    """The site metadata of device.asset_id, location and line_voltage_kv as events and telemetry carry it
    (`asset`); None when none is set (the key is then left out)."""
    if asset_id is None and location is None and line_voltage_kv is None:
        return None
    return {"asset_id": asset_id, "location": location, "line_voltage_kv": line_voltage_kv}


def iso_utc(epoch_seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds and a Z suffix."""
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_payload(
    device_id: str,
    site: str,
    state: str,
    score: float | None,
    threshold: float,
    event_id: str | None,
    faults: list[str],
    time_utc: str | None = None,
) -> dict[str, Any]:
    """The retained current state: 'ok', 'anomaly' (an event is open), 'fault' or 'muted'.

    Args:
        score: the latest decision score, None before the first scored window.
        faults: names of the active faults (see device.audio.health).
    """
    return {
        "schema": STATE_SCHEMA,
        "device_id": device_id,
        "site": site,
        "time": time_utc or utc_now_iso(),
        "state": state,
        "score": None if score is None else round(score, 6),
        "threshold": round(threshold, 6),
        "event_id": event_id,
        "faults": sorted(faults),
    }


def telemetry_payload(
    device_id: str,
    site: str,
    uptime_seconds: float,
    period: dict[str, Any],
    threshold: float,
    cpu_temperature_c: float | None,
    time_utc: str | None = None,
    bands: dict[str, Any] | None = None,
    powerline: dict[str, Any] | None = None,
    asset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One periodic telemetry message (QoS 0); the publisher adds its own `spool` statistics.

    Args:
        period: HealthMonitor.take_telemetry() (level_dbfs, clipping_ratio, dc_offset,
            score_mean, score_max, windows, scored_windows, realtime_factor = analysis
            time / audio time, dropped_blocks, damaged_samples).
        cpu_temperature_c: degrees Celsius, None where the board does not expose it.
        bands: the period's 1/3-octave band levels (device.analysis.levels.LevelPeriod.take()), None when
            levels are off or no frame completed.
        powerline: the period's power-line figures (device.analysis.powerline.PowerlineMeter.take()), added as
            `powerline` when given (powerline.enabled and audio came in the period).
        asset: the site metadata (asset_payload()), added as `asset` when given.
    """
    keys = (
        "level_dbfs",
        "clipping_ratio",
        "dc_offset",
        "score_mean",
        "score_max",
        "windows",
        "scored_windows",
        "realtime_factor",
        "dropped_blocks",
        "damaged_samples",
    )
    payload = {
        "schema": TELEMETRY_SCHEMA,
        "device_id": device_id,
        "site": site,
        "time": time_utc or utc_now_iso(),
        "uptime_seconds": round(uptime_seconds, 1),
        **{k: period.get(k) for k in keys},
        "cpu_temperature_c": None if cpu_temperature_c is None else round(cpu_temperature_c, 1),
        "threshold": round(threshold, 6),
        "bands": bands,
    }
    if powerline is not None:
        payload["powerline"] = powerline
    if asset:
        payload["asset"] = asset
    return payload


def health_payload(device_id: str, site: str, faults: list[Any], time_utc: str | None = None) -> dict[str, Any]:
    """The retained health message: active faults with their start time; ok when there are none.

    Args:
        faults: objects with `fault`, `since` (seconds since the epoch) and `detail` (device.audio.health.Fault).
    """
    return {
        "schema": HEALTH_SCHEMA,
        "device_id": device_id,
        "site": site,
        "time": time_utc or utc_now_iso(),
        "faults": [{"fault": f.fault, "since": iso_utc(f.since), "detail": f.detail} for f in faults],
        "ok": not faults,
    }
