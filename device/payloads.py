"""MQTT/JSON payloads the device emits; their JSON Schemas live in device/schemas/."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .detector import Transition

EVENT_SCHEMA = "acmon.event/1"


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
) -> dict[str, Any]:
    """The JSON body of one event message (start or end of an alarm).

    Args:
        transition: what the Detector reported.
        seq: the device's message sequence number (monotonic; for ordering and deduplication).
        source: the stream the audio came from (a WAV path or 'microphone:<name>').
        time_utc: wall-clock time of the message; now unless given.
    """
    ev = transition.event
    return {
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
    }
