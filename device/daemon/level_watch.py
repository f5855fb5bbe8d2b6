"""What the config's input filters, band levels, level rule and operating hours become at run time, for one device.

The Runner owns one LevelWatch: every block goes through its filter (filter()) before the pipeline and the
band meter (frames()), the meter's frames feed the telemetry period and the level rule, and in_hours()
says whether an alarm may be raised now. Building it checks what the schema cannot know before the model's
rate is known (a frequency above the Nyquist frequency, a band that is not measured): check_level_settings()
gives those problems one line each, for check-config and for the Runner.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.features import FeatureParams
from ..analysis.inference import AnomalyModel, Runtime
from ..analysis.levels import BandLevelMeter, LevelFrame, LevelPeriod, band_table
from ..analysis.metadata import ModelMetadata
from ..analysis.powerline import PowerlineMeter
from ..audio.filters import InputFilter
from ..decisions.level_rule import LevelRule, LevelRuleSettings, level_rule_settings
from ..decisions.schedule import OperatingHours, hours_window
from ..errors import ConfigError
from ..settings.config import feature_pins

if TYPE_CHECKING:
    from ..settings.schema import AcmonConfig

logger = logging.getLogger(__name__)


# The name and version events and the ping reply give for "no model" (model.path null: the level rule alone).
NO_MODEL = "none"


def _no_runtime(**kwargs: Any) -> Any:
    raise RuntimeError("no model: the level rule alone runs (model.path null)")


class LevelOnlyModel(AnomalyModel):
    """What stands in for the model when model.path is null: the front end's parameters (the analysis windows,
    evidence clips and guardrails use them) and a name, nothing to infer with. The Runner gates every window, so
    nothing is ever scored; the level rule raises the alarms.

    Raises:
        ConfigError: the features section pins parameters that do not make a valid front end.
    """

    def __init__(self, cfg: AcmonConfig) -> None:  # deliberately not AnomalyModel.__init__: there is no file
        try:
            params = FeatureParams(**feature_pins(cfg))
        except ValueError as exc:
            raise ConfigError(f"features: {' '.join(str(exc).split())[:300]}") from None
        self.path = Path(f"({NO_MODEL}: level rule only)")
        self.metadata = ModelMetadata(
            name=NO_MODEL, version=NO_MODEL, feature_params=params, score_kind="gaussian_distance", threshold=1.0
        )
        self.sha256 = "0" * 64
        self.runtime = Runtime(NO_MODEL, _no_runtime)
        self.training_scorer = None
        self.scorer = None
        self.site = None

    def evaluate(self, patch: np.ndarray, state: Any = None) -> tuple[float, np.ndarray]:
        raise RuntimeError("no model: the level rule alone runs (model.path null); windows are never scored")


def make_input_filter(cfg: AcmonConfig, sample_rate_hz: int) -> InputFilter | None:
    """The input filter audio.highpass_hz / notch_hz describe at this rate, or None when neither is set.

    Raises:
        ConfigError: a frequency at or above the Nyquist frequency; one line naming the key.
    """
    a = cfg.audio
    if a.highpass_hz is None and not a.notch_hz:
        return None
    nyquist = sample_rate_hz / 2
    for key, values in (
        ("audio.highpass_hz", [a.highpass_hz] if a.highpass_hz is not None else []),
        ("audio.notch_hz", a.notch_hz),
    ):
        for f in values:
            if not f < nyquist:
                raise ConfigError(
                    f"{key}: {f:g} Hz is not below the Nyquist frequency ({nyquist:g} Hz at the model's "
                    f"{sample_rate_hz} Hz): lower it"
                )
    return InputFilter(sample_rate_hz, a.highpass_hz, a.notch_hz, a.notch_q)


def make_powerline_meter(cfg: AcmonConfig, sample_rate_hz: int) -> PowerlineMeter | None:
    """The power-line meter the powerline section describes at this rate, or None when it is off.

    Raises:
        ConfigError: the rate is too low for the hum; one line naming the section.
    """
    p = cfg.powerline
    if not p.enabled:
        return None
    try:
        mains = None if p.mains_hz == "auto" else float(p.mains_hz)
        return PowerlineMeter(sample_rate_hz, mains, p.phase_bins, p.crackle_threshold_db)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def make_hours(cfg: AcmonConfig) -> OperatingHours:
    """detector.schedule in device.timezone (both validated by the schema)."""
    windows = [hours_window(w.days, w.start, w.end) for w in cfg.detector.schedule]
    return OperatingHours(windows, cfg.device.timezone)


def input_filters_record(cfg: AcmonConfig) -> dict[str, Any]:
    """The input filters as calibration.yaml records them (what the site's normal was measured through)."""
    a = cfg.audio
    return {"highpass_hz": a.highpass_hz, "notch_hz": list(a.notch_hz), "notch_q": a.notch_q if a.notch_hz else None}


def filters_changed_since(cfg: AcmonConfig, calibration_record: Any) -> str | None:
    """Why a calibration no longer fits the config's input filters, or None when it does (or records none and
    the config has none: calibrations made before input filters existed)."""
    now = input_filters_record(cfg)
    then = calibration_record.get("input_filters") if isinstance(calibration_record, dict) else None
    if then is None:
        then = {"highpass_hz": None, "notch_hz": [], "notch_q": None}
    if then == now:
        return None
    return (
        f"the calibration was measured through input filters {then}, the config now has {now}: the threshold, "
        "level gate and normal band levels may no longer fit; calibrate again"
    )


def check_level_settings(cfg: AcmonConfig, sample_rate_hz: int) -> list[str]:
    """One line per problem of the filters, levels and level rule at the model's rate; [] when they are fine."""
    problems = []
    try:
        make_input_filter(cfg, sample_rate_hz)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        LevelWatch(cfg, sample_rate_hz, warn=False)
        make_powerline_meter(cfg, sample_rate_hz)
    except ConfigError as exc:
        problems.append(str(exc))
    return list(dict.fromkeys(problems))


class LevelWatch:
    """Input filter, band meter, telemetry period, level rule and operating hours of one device.

    Args:
        cfg: the config (with calibration.yaml laid over it).
        sample_rate_hz: the model's rate (the stream's).
        wall_clock: seconds since the epoch (the operating hours'); injected by tests.
        warn: log a level rule that cannot run yet (no commissioned normal).

    Raises:
        ConfigError: a frequency above the Nyquist frequency, a band outside the measured ones; one line.
    """

    def __init__(
        self, cfg: AcmonConfig, sample_rate_hz: int, wall_clock: Callable[[], float] = time.time, warn: bool = True
    ):
        self.sample_rate_hz = sample_rate_hz
        self.wall_clock = wall_clock
        self.filter = make_input_filter(cfg, sample_rate_hz)
        lv = cfg.levels
        self.meter: BandLevelMeter | None = None
        self.period: LevelPeriod | None = None
        if lv.enabled or cfg.detector.level_rule is not None:
            try:
                table = band_table(sample_rate_hz, lv.fmin_hz, lv.fmax_hz, lv.frame_seconds)
            except ValueError as exc:
                raise ConfigError(f"levels: {exc}") from None
            self.meter = BandLevelMeter(sample_rate_hz, table, lv.frame_seconds)
            unmeasured = [b for b in lv.ha_bands_hz if b not in table.nominal_hz]
            if unmeasured:
                raise ConfigError(
                    f"levels.ha_bands_hz: {unmeasured[0]:g} Hz is not measured (bands {table.nominal_hz[0]:g} to "
                    f"{table.nominal_hz[-1]:g} Hz at {sample_rate_hz} Hz)"
                )
            if lv.enabled:
                self.period = LevelPeriod(table.nominal_hz, lv.frame_seconds, cfg.audio.calibration_db or 0.0)
        self.hours = make_hours(cfg)
        self.rule: LevelRule | None = None
        self.rule_problem: str | None = None
        self.configure_rule(cfg, warn)

    @property
    def nominal_hz(self) -> tuple[float, ...]:
        return self.meter.nominal_hz if self.meter is not None else ()

    def configure_rule(self, cfg: AcmonConfig, warn: bool = True) -> None:
        """(Re)build the level rule and operating hours from the config (reload, a calibration's new normal).

        A rule whose settings did not change keeps its state (and open alarm); a changed one starts afresh, its
        open alarm the caller's to end. A rule without a commissioned normal stays off, rule_problem saying why.

        Raises:
            ConfigError: a band the meter does not measure; nothing is changed then.
        """
        hours, settings, problem = self._prepare_rule(cfg)
        self.hours, self.rule_problem = hours, problem
        if problem is not None and warn:
            logger.warning("%s", problem)
        if settings is None:
            self.rule = None
        elif self.rule is None or self.rule.settings != settings:
            self.rule = LevelRule(settings)

    def check_rule(self, cfg: AcmonConfig) -> None:
        """Raise what configure_rule(cfg) would raise, changing nothing."""
        self._prepare_rule(cfg)

    def _prepare_rule(self, cfg: AcmonConfig) -> tuple[OperatingHours, LevelRuleSettings | None, str | None]:
        hours = make_hours(cfg)
        rule_cfg = cfg.detector.level_rule
        if rule_cfg is None or self.meter is None:
            return hours, None, None
        missing = [b for b in rule_cfg.bands_hz if b not in self.meter.nominal_hz]
        if missing:
            raise ConfigError(
                f"detector.level_rule.bands_hz: {missing[0]:g} Hz is not measured (bands {self.meter.nominal_hz[0]:g} "
                f"to {self.meter.nominal_hz[-1]:g} Hz at {self.sample_rate_hz} Hz; see levels.fmin_hz, levels.fmax_hz)"
            )
        hop_seconds = self.meter.hop_samples / self.sample_rate_hz
        try:
            settings = level_rule_settings(
                self.meter.nominal_hz,
                rule_cfg.bands_hz,
                cfg.levels.normal_db or {},
                rule_cfg.rise_db,
                rule_cfg.hysteresis_db,
                max(1, math.ceil(rule_cfg.patience_seconds / hop_seconds - 1e-9)),
                cfg.detector.cooldown_seconds,
                cfg.detector.update_seconds,
            )
        except ValueError as exc:
            return (
                hours,
                None,
                f"detector.level_rule is off: {exc}; commission it with `python -m device calibrate` (or set "
                "levels.normal_db)",
            )
        return hours, settings, None

    # -- per stream -----------------------------------------------------

    def reset_stream(self) -> None:
        """A new stream: filter state, meter frames and the rule's decisions start afresh."""
        if self.filter is not None:
            self.filter.reset()
        if self.meter is not None:
            self.meter.reset()
        if self.rule is not None:
            self.rule.reset()

    def filter_block(self, block: np.ndarray) -> np.ndarray:
        """The block through the input filters (as it is without them; see InputFilter for the latency)."""
        return block if self.filter is None else self.filter.process(block)

    def flush(self) -> np.ndarray:
        """The filtered samples still held back at the end of a stream (empty without filters)."""
        return np.zeros(0, dtype=np.float32) if self.filter is None else self.filter.flush()

    def frames(self, filtered: np.ndarray, wanted: bool = True) -> list[LevelFrame]:
        """The level frames a filtered block completes, each added to the telemetry period.

        Args:
            wanted: someone uses them (telemetry is published, a calibration or the level rule runs); otherwise
                the meter only keeps its place in the stream, at no FFT cost (score, replay without MQTT).
        """
        if self.meter is None or not len(filtered):
            return []
        if not (wanted or self.rule is not None):
            self.meter.skip(filtered)
            return []
        frames = list(self.meter.process(filtered))
        if self.period is not None:
            for frame in frames:
                self.period.add(frame)
        return frames

    def take_bands(self) -> dict[str, Any] | None:
        """The telemetry's `bands`, closing the period (None when levels are off or no frame completed)."""
        return self.period.take() if self.period is not None else None

    def in_hours(self) -> bool:
        """Whether alarms may be raised now (wall clock, local time)."""
        return self.hours.in_hours(self.wall_clock())

    def normal_from(self, frames: list[np.ndarray], levels_gate_dbfs: float | None) -> dict[float, float] | None:
        """The commissioned normal per band from a calibration's frames: the Leq of those whose total level is at
        least levels_gate_dbfs (all of them if none is, or without a gate), {nominal Hz: dBFS}; None without frames."""
        if self.meter is None or not frames:
            return None
        stack = np.stack(frames).astype(np.float64)
        if levels_gate_dbfs is not None:
            loud = 10.0 * np.log10(stack.sum(axis=1)) >= levels_gate_dbfs
            if loud.any():
                stack = stack[loud]
        leq = 10.0 * np.log10(stack.mean(axis=0))
        return {band: round(float(v), 2) for band, v in zip(self.meter.nominal_hz, leq)}
