"""The site's configuration: the config file with the calibration in the state directory laid over it.

`python -m device calibrate` writes calibration.yaml (and keeps the previous one) in the device's
calibration folder (config.calibration_directory); load_site_config() is the loader the daemon,
check-config and reload use: the config, then the calibration in force over it, then the site
statistics beside it. Rollback restores the previous calibration.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..analysis.gaussian import SITE_FILE_PREFIX
from ..errors import AcmonError, ConfigError
from ..settings.config import calibration_directory, config_from_dict, load_config
from ..settings.schema import AcmonConfig
from ..settings.yaml_files import read_yaml_file
from ..state import PRIVATE_FILE_MODE, atomic_write, make_private_directory
from .calibrate import CalibrationResult, SiteCalibration

logger = logging.getLogger(__name__)

CALIBRATION_FILENAME = "calibration.yaml"
PREVIOUS_FILENAME = "calibration.prev.yaml"
# Keys a calibration file may set, by section; everything else in it is rejected.
CALIBRATED_KEYS = {
    "model": ("threshold", "site_statistics"),
    "detector": ("min_rms_dbfs",),
    "levels": ("normal_db",),
}


# ---------------------------------------------------------------------------------------------
# Calibration files in the state directory


def calibration_paths(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> tuple[Path, Path]:
    """(calibration.yaml, calibration.prev.yaml) of the device the config file describes.

    Raises:
        ConfigError: the config file is invalid (its device id and site name the folder).
    """
    folder = calibration_directory(load_config(config_path), environ)
    return folder / CALIBRATION_FILENAME, folder / PREVIOUS_FILENAME


def legacy_calibration_path(config_path: str | os.PathLike) -> Path:
    """Where calibration.yaml was written before issue 11: beside the config (read-only under systemd)."""
    return Path(config_path).resolve().parent / CALIBRATION_FILENAME


def calibration_in_force(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The calibration file load_site_config() lays over this config, or None."""
    current, _ = calibration_paths(config_path, environ)
    if current.exists():
        return current
    legacy = legacy_calibration_path(config_path)
    return legacy if legacy.is_file() else None


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"), PRIVATE_FILE_MODE)


def _write_error(path: Path, exc: OSError) -> AcmonError:
    return AcmonError(
        f"calibrate: cannot write {exc.filename or path} ({exc.strerror or type(exc).__name__}); nothing was changed. "
        "The state directory must be writable: StateDirectory=acmon in the unit, or set STATE_DIRECTORY"
    )


def prepare_calibration_folder(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """Create the calibration folder (0700) of the config's device; returns it.

    Raises:
        AcmonError: it cannot be created (read-only, a file in the way, disk full); one line.
    """
    folder = calibration_paths(config_path, environ)[0].parent
    try:
        return make_private_directory(folder)
    except OSError as exc:
        raise _write_error(folder, exc) from None


def calibration_document(
    result: CalibrationResult,
    source: str,
    wall_time: float | None = None,
    site_statistics: str | None = None,
    level_normal_db: dict[float, float] | None = None,
) -> str:
    """The YAML text of a calibration file: the calibrated keys, and how they were measured.

    Args:
        site_statistics: file name (beside the config) of the site's normal statistics, if learnt.
        level_normal_db: the commissioned normal level per 1/3-octave band ({nominal Hz: dBFS}), if measured.
    """
    sections: dict[str, Any] = {"model": {"threshold": round(result.threshold, 6)}}
    if site_statistics is not None:
        sections["model"]["site_statistics"] = site_statistics
    if result.min_rms_dbfs is not None:
        sections["detector"] = {"min_rms_dbfs": result.min_rms_dbfs}
    if level_normal_db:
        sections["levels"] = {"normal_db": {_plain(k): _plain(v) for k, v in level_normal_db.items()}}
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if wall_time is None else wall_time))
    record = {"time": when, "source": source, **{k: _plain(v) for k, v in result.info.items()}}
    header = (
        f"# On-site calibration written by `python -m device calibrate` at {when}.\n"
        "# Laid over the config at start and on reload; roll back with `python -m device calibrate --rollback`.\n"
    )
    return header + yaml.safe_dump({**sections, "calibration": record}, sort_keys=False)


def levels_calibration_document(
    level_normal_db: dict[float, float], record: dict[str, Any], wall_time: float | None = None
) -> str:
    """The YAML text of a calibration without a model (model.path null): the normal band levels only."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if wall_time is None else wall_time))
    header = (
        f"# On-site calibration (no model: the level rule's normal band levels) written at {when}.\n"
        "# Laid over the config at start and on reload; roll back with `python -m device calibrate --rollback`.\n"
    )
    document = {
        "levels": {"normal_db": {_plain(k): _plain(v) for k, v in level_normal_db.items()}},
        "calibration": {"time": when, "source": "level rule", **{k: _plain(v) for k, v in record.items()}},
    }
    return header + yaml.safe_dump(document, sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_calibration(config_path: str | os.PathLike, document: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Write calibration.yaml atomically (0600), keeping the one it replaces as calibration.prev.yaml.

    The current file is copied to the previous one first (also atomically), so
    at every instant both files are whole and calibration.yaml exists. The first
    calibration after an upgrade keeps the old file beside the config as the
    previous one, so a rollback returns to it.

    Raises:
        AcmonError: the state directory cannot be written; one line, nothing changed
            (at worst calibration.prev.yaml was refreshed from calibration.yaml).
    """
    current, previous = calibration_paths(config_path, environ)
    prepare_calibration_folder(config_path, environ)
    try:
        # errors="replace": a damaged calibration.yaml is kept as the previous one, not a UnicodeDecodeError.
        if current.exists():
            _write_text(previous, current.read_bytes().decode("utf-8", errors="replace"))
        elif legacy_calibration_path(config_path).is_file():
            _write_text(previous, legacy_calibration_path(config_path).read_bytes().decode("utf-8", errors="replace"))
        _write_text(current, document)
    except OSError as exc:
        raise _write_error(current, exc) from None
    return current


def save_site_calibration(
    config_path: str | os.PathLike,
    decided: SiteCalibration,
    source: str,
    environ: Mapping[str, str] = os.environ,
    level_normal_db: dict[float, float] | None = None,
) -> tuple[Path, str | None]:
    """Write what a session decided: the site statistics (when learnt) and calibration.yaml naming them.

    Args:
        source: the model it was measured with ('<name> <version>'), recorded in the file.
        level_normal_db: the commissioned normal band levels (levels.normal_db), if measured.

    Returns:
        (calibration.yaml's path, the site statistics' file name or None).

    Raises:
        AcmonError: a file cannot be written; nothing is in force that was not before.
    """
    site_file = None
    if decided.site is not None:
        folder = prepare_calibration_folder(config_path, environ)
        try:
            saved = decided.site.save(folder)  # owner-only, as all calibration files
        except OSError as exc:
            raise AcmonError(
                f"calibrate: cannot write {exc.filename or folder} ({exc.strerror or exc}); nothing was changed"
            ) from None
        site_file = saved.name
    document = calibration_document(decided.result, source, site_statistics=site_file, level_normal_db=level_normal_db)
    return write_calibration(config_path, document, environ), site_file


def prune_site_statistics(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Delete site statistics files that neither calibration.yaml nor calibration.prev.yaml names; returns them."""
    paths = calibration_paths(config_path, environ)
    folder = paths[0].parent
    referenced = set()
    for path in paths:
        try:
            data = read_yaml_file(path, "calibration file") or {}
            referenced.add(str((data.get("model") or {}).get("site_statistics")))
        except (ConfigError, OSError, AttributeError):  # missing or damaged: names nothing
            continue
    removed = []
    for f in folder.glob(f"{SITE_FILE_PREFIX}*.npz"):
        if f.name in referenced:
            continue
        try:
            f.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("calibration: cannot remove the unused %s (%s)", f, exc.strerror or exc)
            continue
        removed.append(f)
    return removed


def rollback_calibration(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """Swap calibration.yaml and calibration.prev.yaml (a second rollback undoes the first).

    The previous file must be readable UTF-8 YAML before anything is swapped; whether its
    keys are valid is checked by loading the config afterwards.

    Raises:
        AcmonError: there is no previous calibration, it is damaged, or the files cannot be written.
    """
    current, previous = calibration_paths(config_path, environ)
    if not previous.exists():
        raise AcmonError(f"{previous}: no previous calibration to roll back to")
    # Refuse a damaged previous file before swapping: the daemon would not start on it.
    lay_calibration_over(load_config(config_path), previous, f"delete {previous.name} or fix it; nothing was changed")
    old_previous = previous.read_text(encoding="utf-8")  # valid UTF-8: checked just above
    try:
        if current.exists():
            # errors="replace": rolling back from a damaged calibration.yaml is what rollback is for.
            _write_text(previous, current.read_bytes().decode("utf-8", errors="replace"))
        else:
            previous.unlink()
        _write_text(current, old_previous)
    except OSError as exc:
        raise _write_error(current, exc) from None
    return current


def load_site_config(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> AcmonConfig:
    """The config file with its device's calibration.yaml (if there is one) laid over it.

    The calibration is read from the state directory (config.calibration_directory); a
    calibration.yaml beside the config, where it was written before, is still read when the
    state directory has none, with a warning to move it.

    Raises:
        ConfigError: the config or the calibration file is invalid; messages name the file and key.
    """
    cfg = load_config(config_path)
    current = calibration_directory(cfg, environ) / CALIBRATION_FILENAME
    if not current.exists():
        legacy = legacy_calibration_path(config_path)
        if not legacy.is_file():
            return _site_statistics_beside(cfg, Path(config_path).resolve().parent)
        logger.warning(
            "calibration: reading %s beside the config, where older versions wrote it; the daemon now "
            "keeps it in %s (move it there: the next calibration writes there)",
            legacy,
            current.parent,
        )
        current = legacy
    out = lay_calibration_over(
        cfg, current, "fix it, or roll back with: python -m device calibrate --config FILE --rollback"
    )
    logger.info("calibration %s laid over %s", current, config_path)
    return _site_statistics_beside(out, Path(config_path).resolve().parent)


def lay_calibration_over(cfg: AcmonConfig, calibration_file: Path, hint: str) -> AcmonConfig:
    """`cfg` with the keys a calibration file sets replaced by its values.

    A relative model.site_statistics the file names is made absolute beside the file.

    Args:
        hint: what to do, appended to every error.

    Raises:
        ConfigError: the file cannot be read (see config.read_yaml_file), or sets a key a
            calibration may not set, or a value the schema refuses.
    """
    current = calibration_file
    try:
        data = read_yaml_file(current, "calibration file") or {}
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{current}: expected a mapping of sections; {hint}")
    merged = cfg.model_dump()
    for section, values in data.items():
        if section == "calibration":
            continue  # the record of how it was measured
        allowed = CALIBRATED_KEYS.get(section)
        if allowed is None or not isinstance(values, dict) or set(values) - set(allowed):
            raise ConfigError(
                f"{current}: {str(section)[:80]!r}: a calibration file may set only "
                f"{', '.join(f'{s}.{k}' for s, keys in CALIBRATED_KEYS.items() for k in keys)}; {hint}"
            )
        merged[section] = {**merged[section], **values}
    try:
        out = config_from_dict(merged, source=str(current))
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    # A relative site_statistics lies beside the file that named it: the calibration's folder.
    if "site_statistics" in (data.get("model") or {}):
        out = _site_statistics_beside(out, current.parent)
    return out


def _site_statistics_beside(cfg: AcmonConfig, folder: Path) -> AcmonConfig:
    """model.site_statistics made absolute: a relative name lies in `folder`."""
    name = cfg.model.site_statistics
    if not name or Path(name).is_absolute():
        return cfg
    path = folder / name
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"site_statistics": str(path)})})
