"""`mic-check`: list the input devices, record a few seconds and say whether the level suits the daemon.

The level statistics and the faults are the daemon's own (device/audio/health.py: HealthMonitor over the
recorded blocks, so "clipping" and "DC offset" mean exactly what the daemon's health messages mean), and the
recording goes through the daemon's MicrophoneStream, so a device that works here opens the same way in `run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

from device.analysis.features import FeatureParams
from device.audio.audio_io import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from device.audio.health import (
    FAULT_CLIPPING,
    FAULT_DAMAGED_AUDIO,
    FAULT_DC_OFFSET,
    FAULT_MICROPHONE_DEAD,
    FAULT_MICROPHONE_FLATLINE,
    HealthMonitor,
    power_dbfs,
)
from device.audio.sources import MicrophoneStream
from device.errors import AcmonError, AudioError
from device.settings.schema import AcmonConfig

logger = logging.getLogger(__name__)

DEFAULT_SECONDS = 3.0
MIN_SECONDS = 0.5
# A minute is plenty to judge a level; the statistics are running sums, so memory does not grow with it.
MAX_SECONDS = 60.0
# Dropped from the start: a USB microphone's first blocks carry the click of powering up, and a PulseAudio
# monitor starts with a few blocks of zeros; either would skew a three-second level.
WARMUP_SECONDS = 0.25
# A level this close to the daemon's gate (detector.min_rms_dbfs) leaves no room: a quieter machine, or
# the same one further away, would not be scored at all.
QUIET_MARGIN_DB = 10.0
# Devices named in an error message: enough for a Pi, bounded for a machine with a hundred virtual ones.
MAX_LISTED_DEVICES = 20
MAX_QUOTED_CHARS = 80

VERDICT_OK = "OK"
VERDICT_SILENT = "silent"
VERDICT_TOO_QUIET = "too quiet"
VERDICT_CLIPPING = "clipping"
VERDICT_DC_OFFSET = "DC offset"
VERDICT_DAMAGED = "damaged audio"

# Exit status when the recording worked but the level is not right (errors exit 1, as every acmon command).
EXIT_LEVEL_PROBLEM = 3


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio input device: its index, name, input channels and default rate (hertz)."""

    index: int
    name: str
    channels: int
    default_rate_hz: float


@dataclass(frozen=True)
class LevelReport:
    """What a recording says about the microphone.

    Attributes:
        seconds: audio assessed (after the warm-up), in seconds.
        level_dbfs: RMS level in dBFS (full-scale sine: -3 dBFS); None for digital silence.
        peak: largest |sample|, full scale 1.0.
        peak_dbfs: the peak in dBFS; None for digital silence.
        clipping_ratio: share of samples at or beyond the daemon's clip level (0.999 full scale).
        dc_offset: mean sample value, full scale 1.0.
        faults: the daemon's health faults this recording raises (name: detail).
        verdict: one of the VERDICT_* words.
        advice: what it means and what to do, one line.
    """

    seconds: float
    level_dbfs: float | None
    peak: float
    peak_dbfs: float | None
    clipping_ratio: float
    dc_offset: float
    faults: dict[str, str]
    verdict: str
    advice: str


def assess_levels(
    blocks: Iterable[np.ndarray],
    rate_hz: int,
    seconds: float,
    min_rms_dbfs: float,
    clipping_fault_ratio: float,
    dc_offset_fault: float,
) -> LevelReport:
    """Judge mono blocks of a recording with the daemon's health checks.

    Args:
        blocks: mono float32 blocks, full scale 1.0, together `seconds` long (the warm-up already dropped).
        rate_hz: their sample rate, in hertz.
        seconds: their total duration, in seconds: digital silence over all of it is a dead microphone.
        min_rms_dbfs: the daemon's level gate (detector.min_rms_dbfs), in dBFS.
        clipping_fault_ratio, dc_offset_fault: the daemon's health thresholds (health.* in the config).

    Returns:
        The report; its verdict is the worst finding (damaged, silent, clipping, DC offset, too quiet), else OK.
    """
    # The whole recording is one telemetry period, and silence all through it is the dead-microphone fault.
    monitor = HealthMonitor(
        rate_hz,
        telemetry_seconds=seconds,
        silence_seconds=seconds,
        clipping_fault_ratio=clipping_fault_ratio,
        dc_offset_fault=dc_offset_fault,
    )
    peak = 0.0
    health_log = logging.getLogger("device.audio.health")
    level, health_log.level = health_log.level, logging.ERROR  # the verdict says it once; no fault log lines
    try:
        for block in blocks:
            monitor.add_block(block)
            finite = np.abs(block[np.isfinite(block)])
            if finite.size:
                peak = max(peak, float(finite.max()))
        stats = monitor.take_telemetry()
    finally:
        health_log.level = level
    faults = {name: fault.detail for name, fault in monitor.faults.items()}
    level_dbfs = stats["level_dbfs"]
    clipping = float(stats["clipping_ratio"] or 0.0)
    dc = float(stats["dc_offset"] or 0.0)
    peak_dbfs = power_dbfs(peak * peak)  # the level of a constant at the peak: 20 log10(peak)
    verdict, advice = _verdict(faults, level_dbfs, peak_dbfs, clipping, dc, min_rms_dbfs)
    return LevelReport(
        seconds=round(float(stats["audio_seconds"] or 0.0), 3),
        level_dbfs=level_dbfs,
        peak=round(peak, 6),
        peak_dbfs=None if peak_dbfs is None else round(peak_dbfs, 2),
        clipping_ratio=clipping,
        dc_offset=dc,
        faults=faults,
        verdict=verdict,
        advice=advice,
    )


def _verdict(
    faults: dict[str, str],
    level_dbfs: float | None,
    peak_dbfs: float | None,
    clipping: float,
    dc: float,
    min_rms_dbfs: float,
) -> tuple[str, str]:
    """The worst finding and what to do about it, in the order a person should fix them."""
    if FAULT_DAMAGED_AUDIO in faults:
        return VERDICT_DAMAGED, f"{faults[FAULT_DAMAGED_AUDIO]}; try another USB port or microphone"
    if level_dbfs is None or FAULT_MICROPHONE_DEAD in faults or FAULT_MICROPHONE_FLATLINE in faults:
        return VERDICT_SILENT, (
            "no sound at all (every sample 0, or one constant value): the microphone is unplugged, muted or not the "
            "device recorded; check `arecord -l`, unmute its capture in `alsamixer` (F6 picks the card, F4 the "
            "capture controls) or choose another --device"
        )
    if FAULT_CLIPPING in faults:
        return VERDICT_CLIPPING, (
            f"{100 * clipping:.2f} % of samples at full scale: lower the capture gain in `alsamixer` (F4) or move the "
            "microphone further from the machine; clipped sound hides the faults the model listens for"
        )
    if FAULT_DC_OFFSET in faults:
        return VERDICT_DC_OFFSET, f"mean sample value {dc:+.3f}: a faulty microphone or preamp; try another microphone"
    if level_dbfs < min_rms_dbfs + QUIET_MARGIN_DB:
        return VERDICT_TOO_QUIET, (
            f"{level_dbfs:.1f} dBFS is within {QUIET_MARGIN_DB:g} dB of the daemon's level gate "
            f"(detector.min_rms_dbfs {min_rms_dbfs:g} dBFS; quieter windows are not scored): raise the capture gain "
            "in `alsamixer` (F4) or move the microphone closer, and check with the machine running"
        )
    note = f"; {100 * clipping:.3f} % of samples clipped (below the fault level)" if clipping else ""
    return VERDICT_OK, (
        f"level {level_dbfs:.1f} dBFS, peak {peak_dbfs:.1f} dBFS{note}; if the machine was not running, "
        "check again while it runs at its loudest"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


def _sounddevice():
    """The sounddevice module, or one line on how to get PortAudio."""
    try:
        import sounddevice as sd  # noqa: PLC0415 -- the device extra; loads PortAudio, which only this command needs
    except (ImportError, OSError) as exc:
        raise AcmonError(f"sounddevice/PortAudio unavailable ({exc}); install: apt install libportaudio2") from None
    return sd


def input_devices(sd) -> list[InputDevice]:
    """Every PortAudio device with at least one input channel, in PortAudio's order."""
    return [
        InputDevice(int(d["index"]), str(d["name"]), int(d["max_input_channels"]), float(d["default_samplerate"]))
        for d in sd.query_devices()
        if int(d["max_input_channels"]) > 0
    ]


def resolve_input(sd, spec: int | str | None, inputs: list[InputDevice], what: str) -> InputDevice:
    """The input device a name substring, an index or None (the default input) means, as PortAudio resolves it.

    Args:
        what: where `spec` came from, to start the message ("--device 'USB'").

    Raises:
        AudioError: no input device at all, or none (or several) matching `spec`; the message lists the inputs.
    """
    if not inputs:
        raise AudioError(
            "no audio input device: PortAudio lists none; plug in the USB microphone and check that `arecord -l` "
            "shows it (a user outside the 'audio' group sees no devices)"
        )
    listing = ", ".join(f"{d.index} {d.name!r}" for d in inputs[:MAX_LISTED_DEVICES])
    if len(inputs) > MAX_LISTED_DEVICES:
        listing += f" and {len(inputs) - MAX_LISTED_DEVICES} more"
    try:
        info = sd.query_devices(spec, kind="input")
    except (ValueError, TypeError, sd.PortAudioError) as exc:
        reason = str(exc).replace("\n", " ")[:200]
        raise AudioError(f"{what}: {reason}; input devices: {listing}") from None
    index = int(info["index"])
    match = next((d for d in inputs if d.index == index), None)
    if match is None:
        raise AudioError(f"{what}: device {index} has no input channels; input devices: {listing}")
    return match


def record_blocks(
    device: InputDevice, rate_hz: int, seconds: float, channels: int = 1, channel: int | None = None
) -> Iterator[np.ndarray]:
    """Mono blocks from the device, through the daemon's MicrophoneStream: the warm-up dropped, `seconds` long.

    Raises:
        AudioError: the device cannot be opened at this rate and channel count, or delivers nothing for 5 s.
    """
    stream = MicrophoneStream(rate_hz, input_device=device.index, channels=channels, channel=channel)
    skip = round(WARMUP_SECONDS * rate_hz)
    remaining = round(seconds * rate_hz)
    blocks = cast(Generator[np.ndarray, None, None], stream.blocks())  # a generator: closed below
    try:
        for block in blocks:
            if skip:
                dropped = min(skip, len(block))
                block, skip = block[dropped:], skip - dropped
            block = block[:remaining]
            remaining -= len(block)
            if len(block):
                yield block
            if remaining <= 0:
                return
    finally:
        blocks.close()  # closes the PortAudio stream now, not when the generator is collected


def _parse_device(text: str) -> int | str:
    """--device: an index when it is all digits, otherwise a name substring."""
    return int(text) if text.strip().isdigit() else text


def _settings(args: argparse.Namespace) -> tuple[AcmonConfig, int | str | None, int]:
    """The config (or defaults), the device to record and the rate, with the options laid over the config."""
    if args.config:
        from device.daemon.daemon_config import load_daemon_config  # noqa: PLC0415 -- only with --config

        cfg = load_daemon_config(args.config, check_targets=False).config
    else:
        cfg = AcmonConfig()
    device = args.device if args.device is not None else cfg.audio.input_device
    rate = (
        args.rate
        or cfg.audio.capture_rate_hz
        or getattr(cfg.features, "sample_rate_hz", None)
        or FeatureParams().sample_rate_hz
    )
    return cfg, device, int(rate)


def _check_options(args: argparse.Namespace) -> None:
    if isinstance(args.device, str) and not args.device.strip():
        raise AcmonError("--device '': give part of a device name or its index (python -m device list-devices)")
    if not (math.isfinite(args.seconds) and MIN_SECONDS <= args.seconds <= MAX_SECONDS):
        raise AcmonError(f"--seconds {args.seconds!r}: record between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds")
    if args.rate is not None and not MIN_SAMPLE_RATE_HZ <= args.rate <= MAX_SAMPLE_RATE_HZ:
        raise AcmonError(
            f"--rate {args.rate}: give a sample rate between {MIN_SAMPLE_RATE_HZ} and {MAX_SAMPLE_RATE_HZ} Hz "
            "(the microphone's rates: python -m device list-devices)"
        )


def _dbfs(value: float | None) -> str:
    return "-inf dBFS" if value is None else f"{value:.1f} dBFS"


def cmd_mic_check(args: argparse.Namespace) -> int:
    """List inputs, record, report the level; exit 0 when it suits the daemon, 3 when it does not."""
    _check_options(args)
    cfg, spec, rate_hz = _settings(args)
    sd = _sounddevice()
    inputs = input_devices(sd)
    if args.device is not None:
        what = f"--device {_short(args.device)}"
    else:
        what = "the default input" if spec is None else f"audio.input_device {_short(spec)} in {args.config}"
    device = resolve_input(sd, spec, inputs, what)
    if not args.json:
        print("input devices (* = recorded):")
        for d in inputs[:MAX_LISTED_DEVICES]:
            mark = "*" if d.index == device.index else " "
            print(f"  {mark} {d.index:>3}  {d.name}  ({d.channels} ch, default {d.default_rate_hz:g} Hz)")
        print(f"recording {args.seconds:g} s from {device.index} {device.name!r} at {rate_hz} Hz ...", flush=True)
    blocks = record_blocks(device, rate_hz, args.seconds, cfg.audio.channels, cfg.audio.channel)
    report = assess_levels(
        blocks,
        rate_hz,
        args.seconds,
        cfg.detector.min_rms_dbfs,
        cfg.health.clipping_fault_ratio,
        cfg.health.dc_offset_fault,
    )
    if args.json:
        print(json.dumps({"device": asdict(device), "rate_hz": rate_hz, **asdict(report)}))
    else:
        print(
            f"level      {_dbfs(report.level_dbfs)} RMS" + (" (digital silence)" if report.level_dbfs is None else "")
        )
        print(f"peak       {_dbfs(report.peak_dbfs)} ({report.peak:.4f} of full scale)")
        print(f"clipped    {100 * report.clipping_ratio:.3f} % of samples")
        print(f"DC offset  {report.dc_offset:+.4f} of full scale")
        print(f"verdict    {report.verdict}: {report.advice}")
    return 0 if report.verdict == VERDICT_OK else EXIT_LEVEL_PROBLEM


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mic-check",
        help="list input devices, record a few seconds and report level, peak, clipping and DC offset with a verdict",
        description="List the audio input devices, record a few seconds from one through the daemon's own capture "
        "code, and report the RMS level (dBFS), the peak, the share of clipped samples and the DC offset, judged "
        "with the daemon's health checks, with a verdict (OK, silent, too quiet, clipping, DC offset) and what to "
        f"do. Exit status: 0 OK, {EXIT_LEVEL_PROBLEM} a level problem, 1 an error (no such device, cannot open it).",
    )
    p.add_argument(
        "--device",
        type=_parse_device,
        help="input device: part of its name or its index (default: audio.input_device of --config, else the "
        "system's default input)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"audio to record (seconds, {MIN_SECONDS:g} to {MAX_SECONDS:g}, default: {DEFAULT_SECONDS:g})",
    )
    p.add_argument(
        "--rate",
        type=int,
        help="sample rate to record at (hertz; default: audio.capture_rate_hz, else features.sample_rate_hz of --config, "
        "else 16000)",
    )
    p.add_argument(
        "--config",
        help="daemon config whose audio.*, detector.min_rms_dbfs and health.* thresholds to use (default: defaults)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object instead of text")
    p.set_defaults(func=cmd_mic_check)
