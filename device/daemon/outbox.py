"""What the daemon says: event messages (a JSON line on stdout and MQTT), state, telemetry and health over
MQTT, and the open-alarm record that lets the next process end an alarm this one leaves open.

The Runner decides *when* (a transition, a block, a command); the Outbox decides *what* goes out and keeps
the numbering (seq) and the open-alarm record in step with it. It never raises for a failed state write:
it reports it through `on_storage(what, error)` (the Runner's storage fault) and goes on.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..decisions.detector import Event, Transition
from ..mqtt.payloads import event_payload, state_payload
from ..state import OpenAlarmFile

logger = logging.getLogger(__name__)

# (what, error or None): a failed (or again working) state write, for the storage fault.
StorageReport = Callable[[str, "str | None"], None]
# Event messages kept in memory for the commissioning page (device/daemon/web.py).
RECENT_EVENTS = 50


class Outbox:
    """Every message of one device, numbered, with its open-alarm record.

    Args:
        device_id, site: the device's identity in every payload.
        events_out: where event JSON lines go (stdout for the CLI); None for none.
        publisher: the MQTT publisher, or None without MQTT.
        open_alarm: the open-alarm record, or None when nobody waits for an alarm's end.
        on_storage: told of every open-alarm write's outcome (what, error or None).
    """

    def __init__(
        self,
        device_id: str,
        site: str,
        events_out: TextIO | None,
        publisher: Any,
        open_alarm: OpenAlarmFile | None,
        on_storage: StorageReport,
    ) -> None:
        self.device_id, self.site = device_id, site
        self.events_out = events_out
        self.publisher = publisher
        self.open_alarm = open_alarm
        self.on_storage = on_storage
        self.seq = 0
        self.asset: dict[str, Any] | None = None  # the site metadata every event carries (payloads.asset_payload)
        self._alarm_start_time: str | None = None
        self._published_state: tuple | None = None
        # The last event messages, newest last, for the commissioning page (read from its thread: copy first).
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)

    def event(
        self, transition: Transition, source: str, threshold: float, model_name: str, model_version: str
    ) -> dict[str, Any]:
        """One event message out (numbered), its open-alarm record updated; returns the payload."""
        ev = transition.event
        payload = event_payload(
            transition,
            seq=self.seq,
            device_id=self.device_id,
            site=self.site,
            threshold=threshold,
            model_name=model_name,
            model_version=model_version,
            source=source,
            evidence=ev.evidence,
            asset=self.asset,
        )
        if ev.evidence_withheld is not None:
            payload["evidence_withheld"] = ev.evidence_withheld
        self.seq += 1
        log = logger.warning if transition.state == "start" else logger.info
        what = ev.explanation.summary() if ev.explanation is not None and transition.state != "end" else ""
        log(
            "event %s %s at %.2f s in %s (score %s, threshold %.4g)%s",
            transition.state,
            ev.event_id[:8],
            transition.time_seconds,
            source,
            "-" if transition.score is None else f"{transition.score:.4g}",
            threshold,
            f": {what}" if what else "",
        )
        self._record_alarm(transition, payload)
        self._send(payload)
        return payload

    def end_alarm_left_open(self, evidence_directory: Path | None) -> dict[str, Any] | None:
        """End the alarm a previous process left open (it died during the alarm): an end with reason 'restart'.

        Its stream position, duration and scores are those of the alarm's last message; its seq
        follows that message's, so (event_id, seq) stays unique for subscribers that deduplicate.

        Args:
            evidence_directory: where this device's evidence clips are (None: evidence off); the end
                names the alarm's clip only if it was written whole.

        Returns:
            The end event sent, or None when no alarm was left open.
        """
        if self.open_alarm is None:
            return None
        record = self.open_alarm.load()
        if record is None:
            return None
        start, last = record["start_stream_seconds"], max(record["last_stream_seconds"], record["start_stream_seconds"])
        event = Event(
            record["event_id"],
            start,
            0,
            record["peak_score"],
            score_sum=record["mean_score"],
            n_windows=1,
            end_seconds=last,
            end_window=0,
            last_seconds=last,
            rule=record.get("rule", "model"),
        )
        evidence = record["evidence"]
        if evidence is not None and (evidence_directory is None or not (evidence_directory / evidence).is_file()):
            evidence = None  # the process died before the clip's post-roll was written
        payload = event_payload(
            Transition("end", event, 0, last, None),
            seq=record["seq"] + 1,
            device_id=self.device_id,
            site=self.site,
            threshold=record["threshold"],
            model_name=record["model"]["name"],
            model_version=record["model"]["version"],
            source=record["source"],
            evidence=evidence,
            asset=self.asset,
        )
        payload["reason"] = "restart"
        logger.warning(
            "event end %s: the alarm (started %s in %s) was open when the previous process stopped; ended "
            "now with reason 'restart'",
            record["event_id"][:8],
            record["start_time"],
            record["source"],
        )
        self._send(payload)
        try:
            self.open_alarm.clear()
        except OSError as exc:
            self.on_storage("open alarm", f"cannot remove {self.open_alarm.path} ({exc.strerror or exc})")
        return payload

    def publish(self, method: str, payload: dict[str, Any]) -> None:
        """publisher.<method>(payload) when MQTT is on (publish_state, publish_telemetry, publish_health)."""
        if self.publisher is not None:
            getattr(self.publisher, method)(payload)

    def state(
        self,
        state: str,
        event_id: str | None,
        faults: list[str],
        last_score: float | None,
        threshold: float,
        force: bool = False,
    ) -> None:
        """The retained state message, sent when any of its parts changed (or force)."""
        key = (state, event_id, tuple(sorted(faults)), threshold)
        if key == self._published_state and not force:
            return
        self._published_state = key
        self.publish(
            "publish_state",
            state_payload(self.device_id, self.site, state, last_score, threshold, event_id, list(key[2])),
        )

    def _send(self, payload: dict[str, Any]) -> None:
        """One event message out: a JSON line on events_out and, with MQTT, the publisher's spool."""
        self.recent_events.append(payload)
        if self.events_out is not None:
            self.events_out.write(json.dumps(payload) + "\n")
            self.events_out.flush()
        if self.publisher is not None:
            self.publisher.publish_event(payload)

    def _record_alarm(self, transition: Transition, payload: dict[str, Any]) -> None:
        """Keep the open-alarm record in step with the event just emitted (start, update: write; end: remove)."""
        if self.open_alarm is None:
            return
        try:
            if transition.state == "end":
                self.open_alarm.clear()
                self._alarm_start_time = None
            else:
                if transition.state == "start" or self._alarm_start_time is None:
                    self._alarm_start_time = payload["time"]
                self.open_alarm.save(
                    {
                        "event_id": transition.event.event_id,
                        "seq": payload["seq"],
                        "start_time": self._alarm_start_time,
                        "start_stream_seconds": payload["start_stream_seconds"],
                        "last_stream_seconds": payload["stream_seconds"],
                        "peak_score": payload["peak_score"],
                        "mean_score": payload["mean_score"],
                        "threshold": payload["threshold"],
                        "model": payload["model"],
                        "source": payload["source"],
                        "evidence": payload["evidence"],
                        "rule": payload["rule"],
                    }
                )
        except OSError as exc:
            self.on_storage(
                "open alarm",
                f"cannot record the open alarm in {self.open_alarm.path} "
                f"({exc.strerror or exc}): a restart could not end it",
            )
        else:
            self.on_storage("open alarm", None)
