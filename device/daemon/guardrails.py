"""Guardrails of site calibration and threshold changes: what a technician's command may change without
confirmation (`force`), and when audio looks like a fault rather than the normal sound to calibrate on."""

from __future__ import annotations

import math
from typing import Any

from ..decisions.threshold import MIN_CALIBRATION_WINDOWS
from ..errors import AcmonError

# set_threshold may move the threshold within [calibrated / 4, calibrated * 4] without force: a factor
# of 4 is far more than any retuning needs (the false-alarm rate changes by orders of magnitude across
# it), and well short of switching detection off (`set_threshold 1e308` was accepted).
THRESHOLD_BAND_FACTOR = 4.0
# A calibrated threshold is exceeded by well under 1 % of normal windows; audio that the calibration
# in force scores above its threshold in more than a tenth of its windows is a fault or a changed
# machine, not the normal sound to calibrate on.
MAX_SHARE_ABOVE_THRESHOLD = 0.1


def finite_number(value: Any) -> float | None:
    """A JSON number (not a boolean) as a finite float, or None: NaN, infinities and integers beyond float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit JSON integer
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_threshold_change(value: float, calibrated: float, force: bool = False) -> None:
    """Refuse a threshold outside [calibrated / 4, calibrated * 4] unless forced; never a non-finite one.

    Args:
        value: the requested threshold (score units).
        calibrated: the threshold of the config and calibration in force.
        force: the operator confirmed a value outside the band.

    Raises:
        AcmonError: one line naming the value, the band and how to override.
    """
    number = finite_number(value)
    if number is None or not number > 0:
        raise AcmonError(f"set_threshold: value must be a finite number > 0, got {_short(value)}")
    value = number
    low, high = calibrated / THRESHOLD_BAND_FACTOR, calibrated * THRESHOLD_BAND_FACTOR
    # The state and calibrate payloads give thresholds to 6 decimals: a quarter of the published value
    # may fall a rounding step below the exact bound, and is the band's edge as the operator sees it.
    slack = 1e-6 * high
    if not force and not low - slack <= value <= high + slack:
        raise AcmonError(
            f"set_threshold: {value:.4g} is outside [{low:.4g}, {high:.4g}], a quarter to {THRESHOLD_BAND_FACTOR:g} "
            f"times the calibrated threshold {calibrated:.4g}; send force: true to apply it anyway, or calibrate"
        )


def min_calibration_minutes(hop_seconds: float) -> float:
    """MIN_CALIBRATION_WINDOWS in minutes at this hop, rounded up to a tenth."""
    return math.ceil(MIN_CALIBRATION_WINDOWS * hop_seconds / 6.0) / 10.0


def check_calibration_audio(windows: int, hop_seconds: float, requested: bool = True) -> None:
    """Refuse a calibration on fewer than MIN_CALIBRATION_WINDOWS windows (forced or not).

    Args:
        windows: windows asked for (requested) or collected.
        requested: True for the request (the minutes given), False for the audio that arrived.

    Raises:
        AcmonError: one line stating the minimum.
    """
    if windows >= MIN_CALIBRATION_WINDOWS:
        return
    need = (
        f"at least {MIN_CALIBRATION_WINDOWS} analysis windows ({min_calibration_minutes(hop_seconds):.1f} minutes "
        f"at this model's {hop_seconds:.2f} s hop) are needed to fit the tail of the normal scores"
    )
    got = f"{windows * hop_seconds / 60.0:.2g} minutes"
    if requested:
        raise AcmonError(f"calibrate: {got} is too little audio: {need}; ask for more minutes")
    raise AcmonError(f"calibrate: the audio ended after {windows} windows ({got}): {need}; give more audio")


def check_calibration_result(
    before: float, after: float, share_above: float | None, calibrated_on_site: bool, force: bool = False
) -> None:
    """Refuse a calibration whose audio looks like a fault, unless forced.

    Two signs: the new threshold is more than THRESHOLD_BAND_FACTOR times the current one (the
    finding: a fault raised it from 3.9 to 56.9), or, with a site calibration in force, the current
    model scored more than MAX_SHARE_ABOVE_THRESHOLD of the windows above its threshold. The
    second is not applied to a first calibration: the training data's model is expected to
    misjudge a new site (a neighbour's hum), which is why one calibrates.

    Args:
        before, after: the calibrated threshold in force and the one the new audio calls for (score units;
            its average, before any margin for a rate the audio cannot show).
        share_above: share of the scored windows above the calibrated threshold in force, after
            detector.threshold_scale (None: none scored).
        calibrated_on_site: a calibration.yaml is in force.

    Raises:
        AcmonError: one line with before and after, and how to override.
    """
    if force:
        return
    advice = (
        "nothing was changed. Calibrate while the machine runs normally, or send force: true if this is "
        "its normal sound"
    )
    if after > before * THRESHOLD_BAND_FACTOR:
        raise AcmonError(
            f"calibrate: refused, the audio looks like a fault: the threshold it calls for, {after:.4g}, would be "
            f"{after / before:.1f} times the current {before:.4g} (more than {THRESHOLD_BAND_FACTOR:g} times); {advice}"
        )
    if calibrated_on_site and share_above is not None and share_above > MAX_SHARE_ABOVE_THRESHOLD:
        raise AcmonError(
            f"calibrate: refused, the audio looks like a fault: the calibration in force (threshold {before:.4g}) "
            f"scores {share_above:.0%} of its windows above its threshold (more than {MAX_SHARE_ABOVE_THRESHOLD:.0%}); "
            f"the new threshold would be {after:.4g}; {advice}"
        )


# ---------------------------------------------------------------------------------------------
# A calibration session: what the daemon collects, and what it decides from it
