"""The daemon's YAML configuration, declared: one pydantic model per section, each key with its type, bounds,
default and description (docs/configuration.md is generated from them: device/settings/reference.py).

Over 500 lines on purpose: it is the whole schema, one class per section, and most of its lines are the
descriptions a technician reads. Reading a file is device/settings/config.py (load_config).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from ..analysis.features import NORMALIZATIONS, FeatureParams
from ..analysis.levels import DEFAULT_FRAME_SECONDS, NOMINAL_CENTRES_HZ, lowest_resolved_hz
from ..audio.filters import DEFAULT_NOTCH_Q, MAX_NOTCHES
from ..audio.health import (
    DEFAULT_CLIPPING_FAULT_RATIO,
    DEFAULT_DC_OFFSET_FAULT,
    DEFAULT_SILENCE_SECONDS,
    DEFAULT_TELEMETRY_SECONDS,
)
from ..decisions.detector import (
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_PATIENCE_WINDOWS,
    DEFAULT_RELEASE_RATIO,
    DEFAULT_SMOOTHING,
    DEFAULT_SMOOTHING_WINDOWS,
    DEFAULT_UPDATE_SECONDS,
)
from ..decisions.schedule import DAY_NAMES, hours_window

logger = logging.getLogger(__name__)


# Device ids and site names become MQTT topic levels: no '/', '+', '#' or spaces.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# Environment variable names as POSIX shells accept them.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# A systemd credential name is a file name inside $CREDENTIALS_DIRECTORY.
CREDENTIAL_NAME_PATTERN = r"^[^/\x00]{1,255}$"

# Site metadata is free text, printable, on one line.
ASSET_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"

PASSWORD_SOURCES = ("password_file", "password_env", "password_credential")


class SectionConfig(BaseModel):
    """Common base of every section: unknown keys fail, values are immutable and strictly typed.

    Strict mode suits YAML, which already gives ints, floats, bools and strings:
    it refuses ``port: "1883"`` or ``patience_windows: yes`` instead of coercing.
    An int is still accepted where a float is expected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DeviceConfig(SectionConfig):
    """Who this device is. Both names become MQTT topic levels: `<topic_prefix>/<site>/<id>/...`."""

    id: str = Field(
        "acmon-1",
        pattern=NAME_PATTERN,
        description="Device id, unique within its site: 1 to 64 letters, digits, '_' or '-'.",
    )
    site: str = Field(
        "default",
        pattern=NAME_PATTERN,
        description="Site (plant, building) the device belongs to: 1 to 64 letters, digits, '_' or '-'.",
    )
    timezone: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="IANA time zone of detector.schedule's operating hours, e.g. 'Europe/Berlin'; null = the "
        "system's local time zone.",
    )
    # Site metadata: carried in every event and telemetry message (`asset`) when any is set.
    asset_id: str | None = Field(
        None, pattern=ASSET_TEXT_PATTERN, max_length=64, description="Asset the device watches, e.g. a tower number."
    )
    location: str | None = Field(
        None, pattern=ASSET_TEXT_PATTERN, max_length=128, description="Where it is, free text (or 'lat,lon')."
    )
    line_voltage_kv: float | None = Field(
        None, gt=0, le=1500, description="Line voltage of the asset, in kilovolts (e.g. 110, 400)."
    )

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 -- only when a zone is named

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("unknown time zone: give an IANA name such as 'Europe/Berlin' or 'UTC'") from None
        return value


class ModelConfig(SectionConfig):
    """The anomaly model the daemon loads."""

    path: str | None = Field(
        "models/demo/model.tflite",
        min_length=1,
        description="Path of the model: a .acmon bundle (python -m firmware_tools bundle), a .tflite file, or a "
        "folder containing model.tflite (relative paths are relative to the daemon's working directory). null = no "
        "model: the level rule (detector.level_rule) alone raises alarms, at the sample rate features.sample_rate_hz "
        "pins (16000 if not pinned).",
    )
    trusted_keys: str | None = Field(
        None,
        min_length=1,
        description="A public key file (.pub, from python -m firmware_tools keygen) or a folder of them. When set, "
        "the model must be a .acmon bundle signed by one of these keys, and one that is not is refused; null = "
        "signatures not checked (a bundle's manifest hashes always are). Relative to the daemon's working directory.",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="Anomaly score threshold (score units of the model); null = use the threshold "
        "calibrated with the model.",
    )
    site_statistics: str | None = Field(
        None,
        min_length=1,
        description="The site's normal statistics for a Gaussian model, a file beside the config (relative "
        "to its folder); written by `python -m device calibrate` into calibration.yaml, with the "
        "threshold measured against them. null = score against the training data's statistics.",
    )


def _feature_pin_field(name: str, type_: Any, doc: str) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for pinning one FeatureParams field; every pin is optional."""
    description = (
        f"{doc + ' ' if doc else ''}If set, the model's FeatureParams.{name} must equal this value; null = not pinned."
    )
    if name == "normalization":
        return Literal[NORMALIZATIONS] | None, Field(None, description=description)
    if type_ is int:
        return int | None, Field(None, gt=0, description=description)
    if type_ is float:
        return float | None, Field(None, ge=0, description=description)
    return type_ | None, Field(None, description=description)


def _make_features_config() -> type:
    """Build FeaturesConfig from dataclasses.fields(FeatureParams) so the two never drift apart."""
    hints = typing.get_type_hints(FeatureParams)
    docs = FeatureParams.field_descriptions()
    definitions = {
        f.name: _feature_pin_field(f.name, hints[f.name], docs.get(f.name, ""))
        for f in dataclasses.fields(FeatureParams)
    }
    # A model built at import from FeatureParams: mypy cannot follow it (FeaturesConfig is Any to it).
    return create_model(  # type: ignore[call-overload]
        "FeaturesConfig",
        __base__=SectionConfig,
        __module__=__name__,
        __doc__=(
            "Feature parameters this site expects the model to use (e.g. `sample_rate_hz: 16000`). "
            "Keys are the fields of FeatureParams in device/analysis/features.py; each is optional. "
            "The daemon refuses a model whose parameters differ from a pinned value."
        ),
        **definitions,
    )


FeaturesConfig = _make_features_config()


class AudioConfig(SectionConfig):
    """Where the audio comes from.

    Rules: source `wav` needs at least one entry in `wav_paths`; `channel` must be
    less than `channels` when both are set.
    """

    source: Literal["microphone", "wav", "stdin"] = Field(
        "microphone",
        description="Audio source: 'microphone' (PortAudio input), 'wav' (replay files from wav_paths) "
        "or 'stdin' (raw PCM on standard input).",
    )
    input_device: int | str | None = Field(
        None,
        description="Microphone: PortAudio device name substring (string) or device index (integer >= 0); "
        "null = the system default input. List devices with `python -m sounddevice`.",
    )
    capture_rate_hz: int | None = Field(
        None,
        ge=8000,
        le=384000,
        description="Sample rate to open the microphone at, in hertz; null = the model's rate.",
    )
    channel: int | None = Field(
        None,
        ge=0,
        description="Input channel to analyse (0-based index); null = mix all channels down to mono.",
    )
    channels: int = Field(1, ge=1, le=32, description="Number of input channels to open.")
    block_samples: int = Field(
        1024,
        ge=1,
        le=65536,
        description="Samples per block read from the source, in samples (per channel). A WAV file read as fast "
        "as possible (score, evaluate, replay without --realtime, audio.realtime false) is read in blocks of at "
        "least 16384: the windows are the same, the per-block work less.",
    )
    wav_paths: list[str] = Field(
        default_factory=list,
        description="Source 'wav': WAV files, or folders of WAV files, to replay.",
    )
    realtime: bool = Field(
        True,
        description="Source 'wav': pace the replay at real time (true) or read as fast as possible (false).",
    )
    stdin_format: Literal["s16le", "s32le", "f32le"] = Field(
        "s16le",
        description="Source 'stdin': sample format, interleaved little-endian: 's16le', 's32le' or 'f32le'.",
    )
    stdin_rate_hz: int | None = Field(
        None,
        ge=8000,
        le=384000,
        description="Source 'stdin': sample rate of the stream, in hertz; null = the model's rate.",
    )
    highpass_hz: float | None = Field(
        None,
        gt=0,
        le=100000,
        description="Input high-pass filter: a 2nd-order Butterworth, -3 dB at this frequency and -12 dB per "
        "octave below, in hertz; null = none. Applied to the audio before the analysis, the band levels and the "
        "evidence clips (not the health checks); below the Nyquist frequency of the model's rate.",
    )
    notch_hz: list[float] = Field(
        default_factory=list,
        max_length=MAX_NOTCHES,
        description="Input band-reject (notch) filters at these frequencies, in hertz, e.g. [50, 100, 150] for "
        "mains hum and its harmonics; [] = none. Applied with highpass_hz.",
    )
    notch_q: float = Field(
        DEFAULT_NOTCH_Q,
        ge=1,
        le=200,
        description="Quality factor of every notch: its -3 dB width is frequency / Q (5 Hz at 50 Hz with 10, which "
        "still removes over 30 dB of a hum drifting 0.05 Hz). Dimensionless.",
    )
    calibration_db: float | None = Field(
        None,
        ge=-50,
        le=250,
        description="Added to dBFS to give sound pressure level, in dB: e.g. 120 when a 94 dB SPL calibrator reads "
        "-26 dBFS. Only the band levels in telemetry use it (their unit becomes 'dB'); null = report dBFS.",
    )

    @field_validator("notch_hz")
    @classmethod
    def _check_notches(cls, value: list[float]) -> list[float]:
        if any(not f > 0 for f in value):
            raise ValueError("notch frequencies must be > 0 Hz")
        if len(set(value)) != len(value):
            raise ValueError("notch frequencies must not repeat")
        return value

    @field_validator("input_device", mode="plain")
    @classmethod
    def _check_input_device(cls, value: Any) -> int | str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError("a device index must be >= 0")
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise ValueError("must be a device name (non-empty string), a device index (integer >= 0) or null")

    @field_validator("wav_paths")
    @classmethod
    def _check_wav_paths(cls, value: list[str]) -> list[str]:
        if any(not p for p in value):
            raise ValueError("paths must not be empty strings")
        return value

    @model_validator(mode="after")
    def _check_rules(self) -> AudioConfig:
        if self.source == "wav" and not self.wav_paths:
            raise ValueError("source 'wav' needs at least one file or folder in wav_paths")
        if self.channel is not None and self.channel >= self.channels:
            raise ValueError(
                f"channel {self.channel} does not exist with channels: {self.channels} "
                f"(channels are numbered from 0; open more channels or pick a lower one)"
            )
        return self


class LevelRuleConfig(SectionConfig):
    """The level-only alarm rule: an alarm when a chosen 1/3-octave band rises `rise_db` above its commissioned
    normal (levels.normal_db, recorded by calibrate) for `patience_seconds`. It needs no model (model.path
    null runs it alone) and raises the same events, with `rule: level`. One alarm is open at a time: while
    the model's is open the rule waits, and the other way round."""

    bands_hz: list[float] = Field(
        ...,
        min_length=1,
        max_length=len(NOMINAL_CENTRES_HZ),
        description="Bands to watch, by nominal centre frequency (IEC 61260-1: 25, 31.5, 40, 50, 63, 80, 100, "
        "125, ... 20000), in hertz.",
    )
    rise_db: float = Field(10.0, gt=0, le=100, description="Rise above the normal level that raises the alarm, in dB.")
    hysteresis_db: float = Field(
        3.0,
        ge=0,
        le=100,
        description="The alarm ends below rise_db - hysteresis_db (patience_seconds long), in dB; < rise_db.",
    )
    patience_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How long a band must stay above before the alarm starts (and below before it ends), in "
        "seconds; counted in level frames (every levels.frame_seconds / 2).",
    )

    @field_validator("bands_hz")
    @classmethod
    def _check_bands(cls, value: list[float]) -> list[float]:
        for band in value:
            if band not in NOMINAL_CENTRES_HZ:
                raise ValueError(
                    f"{band:g} Hz is not a nominal 1/3-octave centre frequency; use one of "
                    f"{', '.join(f'{c:g}' for c in NOMINAL_CENTRES_HZ)}"
                )
        if len(set(value)) != len(value):
            raise ValueError("bands must not repeat")
        return value

    @model_validator(mode="after")
    def _check_hysteresis(self) -> LevelRuleConfig:
        if self.hysteresis_db >= self.rise_db:
            raise ValueError(f"hysteresis_db ({self.hysteresis_db}) must be below rise_db ({self.rise_db})")
        return self


class OperatingWindowConfig(SectionConfig):
    """One weekly window of operating hours, in local time (device.timezone)."""

    days: list[Literal[DAY_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DAY_NAMES),
        min_length=1,
        max_length=7,
        description="Days the window starts on: mon, tue, wed, thu, fri, sat, sun.",
    )
    start: str = Field(..., max_length=5, description="Start, 'HH:MM' on a 24-hour clock, local time.")
    end: str = Field(
        ...,
        max_length=5,
        description="End, 'HH:MM' or '24:00'; an end at or before the start runs past midnight into the next day.",
    )

    @model_validator(mode="after")
    def _check_window(self) -> OperatingWindowConfig:
        hours_window(self.days, self.start, self.end)  # ValueError with the reason
        return self


class DetectorConfig(SectionConfig):
    """When scores become alarms."""

    patience_windows: int = Field(
        DEFAULT_PATIENCE_WINDOWS,
        ge=1,
        le=100,
        description="Consecutive analysis windows above the threshold before an alarm is raised, in windows.",
    )
    cooldown_seconds: float = Field(
        DEFAULT_COOLDOWN_SECONDS,
        ge=0,
        le=86400,
        description="No new alarm is raised for this long after one ends, in seconds.",
    )
    min_rms_dbfs: float = Field(
        -80.0,
        ge=-150,
        le=0,
        description="Windows quieter than this RMS level are skipped, not scored, in dBFS "
        "(a full-scale sine is -3 dBFS).",
    )
    threshold_scale: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Multiplies the threshold, for on-site tuning (dimensionless; > 1 = fewer alarms).",
    )
    release_ratio: float = Field(
        DEFAULT_RELEASE_RATIO,
        gt=0,
        le=1,
        description="Hysteresis: an alarm ends after patience_windows windows below threshold * release_ratio "
        "(dimensionless, <= 1).",
    )
    off_threshold: float | None = Field(
        None,
        gt=0,
        description="Explicit release threshold (score units); replaces threshold * release_ratio when set; "
        "null = use release_ratio. Must not exceed the threshold.",
    )
    smoothing_windows: int = Field(
        DEFAULT_SMOOTHING_WINDOWS,
        ge=1,
        le=100,
        description="Decisions use the last K window scores combined by `smoothing`, in windows (1 = no smoothing).",
    )
    smoothing: Literal["mean", "median", "max"] = Field(
        DEFAULT_SMOOTHING, description="How the last smoothing_windows scores are combined: 'mean', 'median' or 'max'."
    )
    update_seconds: float = Field(
        DEFAULT_UPDATE_SECONDS,
        ge=0,
        le=86400,
        description="While an alarm lasts, an 'update' event message every this many seconds; 0 = none.",
    )
    level_rule: LevelRuleConfig | None = Field(
        None, description="The level-only alarm rule (a section); null = off. Needs levels.normal_db (calibrate)."
    )
    schedule: list[OperatingWindowConfig] = Field(
        default_factory=list,
        max_length=100,
        description="Operating hours: a list of {days, start, end} windows in local time; outside them no alarm "
        "starts, an open one ends (reason 'schedule') and the state is 'off_hours'. [] = always.",
    )


class LevelsConfig(SectionConfig):
    """1/3-octave band levels (IEC 61260-1 base-10 bands) in every telemetry message: Leq, minimum and maximum of
    the period's frames, per band. Measured on the filtered input (audio.highpass_hz, notch_hz) from the FFT
    power of Hann-windowed frames of `frame_seconds`, one every half frame."""

    enabled: bool = Field(True, description="Report band levels in telemetry (`bands`); false = `bands: null`.")
    fmin_hz: float = Field(
        25.0,
        gt=0,
        le=20000,
        description="Lowest band's nominal centre frequency, in hertz (25 Hz needs frame_seconds >= 1).",
    )
    fmax_hz: float | None = Field(
        None,
        gt=0,
        le=100000,
        description="No band reaches above this frequency, in hertz; null = the Nyquist frequency of the model's "
        "rate (6300 Hz is the last band at 16 kHz).",
    )
    frame_seconds: float = Field(
        DEFAULT_FRAME_SECONDS,
        ge=0.125,
        le=10,
        description="Frame length, in seconds: min and max are those of these frames; longer frames resolve lower "
        "bands (1 s: 1 Hz bins).",
    )
    normal_db: dict[float, float] | None = Field(
        None,
        max_length=len(NOMINAL_CENTRES_HZ),
        description="The commissioned normal level of each band, {nominal centre Hz: dBFS}; written by `python -m "
        "device calibrate` into calibration.yaml (the Leq of the calibration's frames that pass the level gate). "
        "detector.level_rule compares against it.",
    )
    ha_bands_hz: list[float] = Field(
        default_factory=list,
        max_length=8,
        description="Bands that get a Home Assistant sensor (their Leq), by nominal centre, in hertz; [] = none.",
    )

    @field_validator("normal_db")
    @classmethod
    def _check_normal(cls, value: dict[float, float] | None) -> dict[float, float] | None:
        if value is None:
            return None
        for band, level in value.items():
            if band not in NOMINAL_CENTRES_HZ:
                raise ValueError(f"{band:g} Hz is not a nominal 1/3-octave centre frequency")
            if not -200 <= level <= 50:
                raise ValueError(f"{band:g} Hz: {level:g} dBFS is not a level between -200 and 50 dBFS")
        return value

    @field_validator("ha_bands_hz")
    @classmethod
    def _check_ha_bands(cls, value: list[float]) -> list[float]:
        for band in value:
            if band not in NOMINAL_CENTRES_HZ:
                raise ValueError(f"{band:g} Hz is not a nominal 1/3-octave centre frequency")
        if len(set(value)) != len(value):
            raise ValueError("bands must not repeat")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> LevelsConfig:
        if self.fmax_hz is not None and self.fmax_hz <= self.fmin_hz:
            raise ValueError(f"fmax_hz ({self.fmax_hz}) must be above fmin_hz ({self.fmin_hz})")
        lowest = lowest_resolved_hz(self.frame_seconds)
        if self.fmin_hz < lowest * 10 ** (-1 / 20):
            raise ValueError(
                f"frames of {self.frame_seconds:g} s resolve bands from {lowest:g} Hz up: raise fmin_hz to {lowest:g} "
                "or lengthen frame_seconds"
            )
        return self


class PowerlineConfig(SectionConfig):
    """Power-line figures for towers in every telemetry message (`powerline`): the mains frequency tracked from the
    hum, the 2f hum comb's strength, the crackle rate and the crackles' phase in the hum's cycle
    (device/analysis/powerline.py). Measured on the unfiltered input (audio.notch_hz would remove the hum)."""

    enabled: bool = Field(
        False, description="Measure and report them (about 0.5 ms per second of audio, 1.4 times the band levels)."
    )
    mains_hz: Literal[50, 60, "auto"] = Field(
        "auto", description="Mains frequency of the grid, 50 or 60 hertz; auto = whichever hum comb is stronger."
    )
    phase_bins: int = Field(36, ge=4, le=360, description="Bins of the crackle phase histogram over 360 degrees.")
    crackle_threshold_db: float = Field(
        10.0, ge=3, le=40, description="A crackle stands this many dB above the running floor of the ticks' band."
    )


class EvidenceConfig(SectionConfig):
    """Audio clips saved for each alarm, kept in memory until written.

    Each alarm writes `<time>_<event id>.wav` and a spectrogram `.png` into `directory`,
    from `pre_roll_seconds` before the alarm to `post_roll_seconds` after it; the oldest
    files are removed when the folder exceeds `quota_mb`.
    """

    enabled: bool = Field(True, description="Save an evidence clip and spectrogram for each alarm.")
    directory: str | None = Field(
        None,
        min_length=1,
        description="Folder for the clips (created if missing); null = $STATE_DIRECTORY/evidence under systemd "
        "(/var/lib/acmon/evidence with StateDirectory=acmon), else $XDG_STATE_HOME/acmon/evidence "
        "(~/.local/state/acmon/evidence).",
    )
    pre_roll_seconds: float = Field(5.0, ge=0, le=60, description="Audio kept before the alarm, in seconds.")
    post_roll_seconds: float = Field(5.0, ge=0, le=60, description="Audio recorded after the alarm, in seconds.")
    quota_mb: float = Field(
        200.0, gt=0, le=1_000_000, description="Largest total size of the evidence folder, in megabytes (10^6 bytes)."
    )
    format: Literal["wav", "flac"] = Field(
        "wav",
        description="Audio format of the clips: wav, or flac (16-bit, lossless, about 40 % smaller; needs the "
        "soundfile package, acmon[flac]; without it the clips are WAV and the log says why).",
    )
    max_clips: int | None = Field(
        None, ge=1, le=1_000_000, description="Keep at most this many clips (the oldest go first); null = no limit."
    )
    max_age_days: float | None = Field(
        None, gt=0, le=3650, description="Remove clips older than this many days (at the next clip); null = no limit."
    )
    speech_guard: bool = Field(
        False,
        description="Judge each clip with a small voice-activity detector (no downloaded weights) and keep neither "
        "its audio nor its spectrogram when it holds speech: `<clip>.withheld` says 'evidence withheld: speech "
        "detected' instead. Off by default: it also withholds a few clips of machines that sound like a voice.",
    )
    speech_guard_threshold: float = Field(
        0.5, gt=0, lt=1, description="Speech probability (0 to 1) from which the speech guard withholds a clip."
    )


class HealthConfig(SectionConfig):
    """Device health: input level checks, faults and periodic telemetry."""

    telemetry_seconds: float = Field(
        DEFAULT_TELEMETRY_SECONDS, ge=1, le=86400, description="Telemetry message period, in seconds of audio."
    )
    silence_seconds: float = Field(
        DEFAULT_SILENCE_SECONDS,
        ge=1,
        le=3600,
        description="Digital silence (all-zero samples) or a flat line for this long is a dead-microphone fault, "
        "in seconds.",
    )
    clipping_fault_ratio: float = Field(
        DEFAULT_CLIPPING_FAULT_RATIO,
        gt=0,
        le=1,
        description="Fraction of clipped samples over a telemetry period that is a fault.",
    )
    dc_offset_fault: float = Field(
        DEFAULT_DC_OFFSET_FAULT,
        gt=0,
        le=1,
        description="Absolute mean sample value (full scale = 1) that is a DC-offset fault.",
    )
    reopen_min_seconds: float = Field(
        1.0, gt=0, le=3600, description="First wait before reopening a microphone stream that failed, in seconds."
    )
    reopen_max_seconds: float = Field(
        60.0, gt=0, le=3600, description="Longest wait between reopen attempts (the wait doubles), in seconds."
    )

    @model_validator(mode="after")
    def _check_reopen(self) -> HealthConfig:
        if self.reopen_max_seconds < self.reopen_min_seconds:
            raise ValueError(
                f"reopen_max_seconds ({self.reopen_max_seconds}) must be >= reopen_min_seconds "
                f"({self.reopen_min_seconds})"
            )
        return self


class CalibrationConfig(SectionConfig):
    """On-site calibration (`python -m device calibrate`, or the `calibrate` command)."""

    false_alarms_per_day: float = Field(
        1.0, gt=0, le=10000, description="Target false-alarm rate on normal site audio, in alarms per day."
    )
    gate_margin_db: float = Field(
        6.0,
        ge=0,
        le=60,
        description="When calibration sets detector.min_rms_dbfs, it goes this far above the site's quiet level, "
        "in dB.",
    )


class MqttTlsConfig(SectionConfig):
    """TLS to the broker. Rule: `cert_file` and `key_file` are given both or neither."""

    ca_file: str = Field(
        ..., min_length=1, description="CA certificate(s) that signed the broker's certificate, PEM file path."
    )
    cert_file: str | None = Field(
        None, min_length=1, description="Client certificate for mutual TLS, PEM file path; null = none."
    )
    key_file: str | None = Field(
        None, min_length=1, description="Private key of cert_file, PEM file path; null = none."
    )
    insecure: bool = Field(
        False,
        description="Skip checking the broker's host name against its certificate. Only for testing.",
    )

    @model_validator(mode="after")
    def _check_pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class MqttConfig(SectionConfig):
    """Alerts to an MQTT broker.

    There is deliberately no `password` key: the password is read at connect time
    from exactly one of `password_file`, `password_env` or `password_credential`.
    Rules: a `username` needs exactly one password source; a password source needs a
    `username`; `reconnect_max_seconds` >= `reconnect_min_seconds`.
    """

    enabled: bool = Field(True, description="Publish alerts over MQTT (false = do not connect to a broker).")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or IP address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (1883 plain, usually 8883 with TLS).")
    topic_prefix: str = Field(
        "acmon",
        min_length=1,
        description="First topic level(s): topics are `<topic_prefix>/<site>/<device id>/...`. "
        "No '+', '#', and no leading or trailing '/'.",
    )
    client_id: str | None = Field(None, min_length=1, description="MQTT client id; null = 'acmon-<site>-<device id>'.")
    keepalive_seconds: int = Field(60, ge=5, le=3600, description="MQTT keepalive interval, in seconds.")
    reconnect_min_seconds: float = Field(
        1.0, gt=0, description="Shortest delay before reconnecting to the broker, in seconds."
    )
    reconnect_max_seconds: float = Field(
        60.0, gt=0, description="Longest delay between reconnection attempts, in seconds."
    )
    username: str | None = Field(None, min_length=1, description="Broker user name; null = anonymous.")
    password_file: str | None = Field(
        None,
        min_length=1,
        description="File holding the password (one trailing newline is ignored); keep it mode 0600.",
    )
    password_env: str | None = Field(
        None,
        pattern=ENV_NAME_PATTERN,
        description="Name of an environment variable holding the password.",
    )
    password_credential: str | None = Field(
        None,
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of a systemd credential holding the password (LoadCredential= or "
        "LoadCredentialEncrypted=), read from $CREDENTIALS_DIRECTORY/<name>.",
    )
    tls: MqttTlsConfig | None = Field(None, description="TLS settings (a section); null = plain TCP.")
    max_pending_alerts: int = Field(
        10000,
        ge=1,
        le=1000000,
        description="Messages (events, state, command results) waiting in memory for the publisher thread, "
        "which writes events to the spool; fills only if the disk stalls; beyond it the oldest is dropped, in messages.",
    )
    spool_dir: str | None = Field(
        None,
        min_length=1,
        description="Folder of the on-disk event spool; each device uses <spool_dir>/<topic_prefix>/<site>/<id>. "
        "null = $STATE_DIRECTORY/spool under systemd (/var/lib/acmon/spool), else ~/.local/state/acmon/spool.",
    )
    spool_max_mb: float = Field(
        20.0,
        gt=0,
        le=100000,
        description="Largest total size of unacknowledged events kept on disk, in megabytes (10^6 bytes); "
        "beyond it the oldest are dropped and counted in telemetry `spool.dropped`.",
    )
    spool_max_age_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Unacknowledged events older than this are dropped (and counted), in days.",
    )
    homeassistant_discovery: bool = Field(
        True,
        description="Publish retained Home Assistant discovery configs (anomaly, score, level, diagnostics) "
        "and republish them when Home Assistant announces `online`.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        min_length=1,
        description="Home Assistant's MQTT discovery prefix (its `discovery_prefix`); Home Assistant's "
        "status topic is `<discovery_prefix>/status`.",
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if "://" in value or "/" in value:
            raise ValueError("give the host name or IP address only, without scheme or path (the port goes in port)")
        return value

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise ValueError("must not contain the MQTT wildcards '+' or '#'")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with '/'")
        if "//" in value or "\x00" in value:
            raise ValueError("must not contain empty topic levels ('//') or NUL characters")
        if any(level in (".", "..") for level in value.split("/")):
            raise ValueError("must not contain '.' or '..' levels (topic levels also name the spool folders)")
        return value

    @field_validator("password_credential")
    @classmethod
    def _check_credential_name(cls, value: str | None) -> str | None:
        if value in (".", ".."):
            raise ValueError("must be a credential name, not '.' or '..'")
        return value

    @model_validator(mode="after")
    def _check_rules(self) -> MqttConfig:
        sources = [name for name in PASSWORD_SOURCES if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"give at most one password source, got {' and '.join(sources)}")
        if self.username is not None and not sources:
            raise ValueError("username needs a password source: set password_file, password_env or password_credential")
        if self.username is None and sources:
            raise ValueError(f"{sources[0]} is set but username is not: set username too")
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError(
                f"reconnect_max_seconds ({self.reconnect_max_seconds}) must be >= "
                f"reconnect_min_seconds ({self.reconnect_min_seconds})"
            )
        return self


class UpdatesConfig(SectionConfig):
    """Model updates over MQTT (`cmd/update_model {url, sha256}`): fetch a bundle, swap it in, watch it, roll back."""

    enabled: bool = Field(
        False,
        description="Accept update_model commands. Set model.trusted_keys too: without it, anyone who may publish "
        "to the device's cmd/ topics can replace its model (check-config warns).",
    )
    watch_minutes: float = Field(
        10.0,
        gt=0,
        le=1440,
        description="How long a new model is watched after it is swapped in; it is rolled back if it scores no "
        "window in that time or raises too many alarms.",
    )
    max_alarms_while_watching: int = Field(
        3, ge=0, le=1000, description="More alarms than this while a new model is watched roll it back."
    )
    download_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Give up a bundle download that stalls for this long, in seconds."
    )


class MetricsConfig(SectionConfig):
    """A Prometheus /metrics endpoint for Grafana (needs the prometheus-client package: acmon[metrics])."""

    enabled: bool = Field(
        False, description="Serve the metrics (about 2 MB more memory beside MQTT, 9.5 MB without it)."
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address to listen on: 127.0.0.1 for a Prometheus on the same machine, 0.0.0.0 for the LAN "
        "(the metrics are read-only, but they tell anyone who can reach the port how the machine sounds).",
    )
    port: int = Field(9101, ge=0, le=65535, description="TCP port of the endpoint (0 = any free port).")


class WebConfig(SectionConfig):
    """The commissioning page (device/daemon/web.py): level, spectrogram, score, health, events, mute and calibrate.

    Off by default. A token is required: exactly one of `token_file` or `token_credential`
    (at least 16 characters; e.g. `openssl rand -hex 16 > web-token`). Open
    `http://<device>:<port>/?token=<token>` once: the browser then keeps it in an HttpOnly cookie.
    Plain HTTP: on 0.0.0.0 the token crosses the LAN readable by anyone on its path.
    """

    enabled: bool = Field(
        False,
        description="Serve the commissioning page (refused without a token; about 1 MB more memory, 5 MB while a "
        "page is open).",
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address to listen on: 127.0.0.1 for this machine only (an SSH tunnel), 0.0.0.0 for the LAN.",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the page (0 = any free port).")
    token_file: str | None = Field(
        None,
        min_length=1,
        description="File holding the access token (one trailing newline is ignored); keep it mode 0600.",
    )
    token_credential: str | None = Field(
        None,
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of a systemd credential holding the token (LoadCredential=), read from "
        "$CREDENTIALS_DIRECTORY/<name>.",
    )

    @model_validator(mode="after")
    def _check_token(self) -> WebConfig:
        if self.token_file is not None and self.token_credential is not None:
            raise ValueError("give one token source, token_file or token_credential, not both")
        if self.enabled and self.token_file is None and self.token_credential is None:
            raise ValueError("the page needs a token: set token_file or token_credential (or enabled: false)")
        return self


class LoggingConfig(SectionConfig):
    """Log output of the daemon."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged: DEBUG, INFO, WARNING or ERROR (lower case accepted)."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class AcmonConfig(SectionConfig):
    """The whole configuration file. Every section is optional; an empty file means all defaults."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="Who this device is.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The anomaly model.")
    features: FeaturesConfig = Field(  # type: ignore[valid-type]
        default_factory=FeaturesConfig, description="Feature parameters the model must have."
    )
    audio: AudioConfig = Field(default_factory=AudioConfig, description="Where the audio comes from.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="When scores become alarms.")
    levels: LevelsConfig = Field(default_factory=LevelsConfig, description="1/3-octave band levels in telemetry.")
    powerline: PowerlineConfig = Field(default_factory=PowerlineConfig, description="Power-line figures (towers).")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Audio clips saved for each alarm.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Input checks, faults and telemetry.")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, description="On-site calibration.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Alerts to an MQTT broker.")
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig, description="Model updates over MQTT.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics.")
    web: WebConfig = Field(default_factory=WebConfig, description="The commissioning page.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")

    @model_validator(mode="after")
    def _check_something_alarms(self) -> AcmonConfig:
        if self.model.path is None and self.detector.level_rule is None:
            raise ValueError(
                "model.path is null (no model) and detector.level_rule is not set: nothing would raise an alarm; "
                "give a model or a level rule"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out ("mqtt:" alone) is YAML null: use its defaults.
        if isinstance(data, Mapping):
            return {k: ({} if v is None and k in cls.model_fields else v) for k, v in data.items()}
        return data
