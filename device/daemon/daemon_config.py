"""The one loader of the daemon's commands: the config as `run` will use it, checked against what it names.

`check-config`, `run --check-config` and `run` all go through load_daemon_config(): the config file
(device/settings/config.py) with the site's calibration laid over it (device/daemon/site_config.py), then the model
it names loaded as the Runner loads it, the detector settings it gives, and with MQTT the TLS files
and password source, so that a config that passes here is not refused when the daemon starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..analysis.bundle import trusted_keys_from
from ..analysis.gaussian import Scorer
from ..analysis.inference import AnomalyModel
from ..analysis.model_file import resolve_model_path
from ..audio.audio_io import check_resampling
from ..decisions.detector import DetectorSettings
from ..errors import AcmonError, ConfigError
from ..settings.config import feature_pins, parse_broker
from ..settings.schema import AcmonConfig, MqttConfig, MqttTlsConfig
from ..settings.secret_files import not_regular_file, resolve_mqtt_password
from ..settings.yaml_files import read_yaml_file
from .level_watch import LevelOnlyModel, check_level_settings, filters_changed_since
from .site_config import calibration_in_force, load_site_config


def detector_settings(cfg: AcmonConfig, model: AnomalyModel) -> DetectorSettings:
    """The decision rules the config asks for, with the site (or model) threshold.

    Raises:
        AcmonError: the combination is invalid (e.g. detector.off_threshold above the threshold).
    """
    d = cfg.detector
    threshold = (cfg.model.threshold or model.threshold) * d.threshold_scale
    try:
        return DetectorSettings(
            threshold=threshold,
            patience_windows=d.patience_windows,
            release_ratio=d.release_ratio,
            cooldown_seconds=d.cooldown_seconds,
            off_threshold=d.off_threshold,
            smoothing_windows=d.smoothing_windows,
            smoothing=d.smoothing,
            update_seconds=d.update_seconds,
        )
    except ValueError as exc:
        raise AcmonError(f"detector: {exc}; change detector.off_threshold or the threshold") from None


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """A configuration as the daemon will run it, and what is risky about it.

    Attributes:
        config: the config file with calibration.yaml laid over it.
        warnings: one line each, naming the file and key; for the log, or printed by check-config.
    """

    config: AcmonConfig
    warnings: tuple[str, ...] = ()


def load_daemon_config(
    path: str | os.PathLike,
    *,
    model_path: str | None = None,
    broker: str | None = None,
    check_targets: bool = True,
    environ: Mapping[str, str] = os.environ,
) -> LoadedConfig:
    """Load a config the way `run` uses it: the one loader of `check-config`, `run --check-config` and `run`.

    Reads and validates the file (load_config), lays calibration.yaml over it, then
    checks what it points to, with the daemon's own code, so that a config that
    passes here is not refused when the daemon starts:

    - the model is a regular file that loads, matches the pinned feature parameters
      and, with the site statistics, gives a threshold consistent with detector.off_threshold;
    - with MQTT in use: the TLS files are readable PEM (the key unencrypted: nobody can type
      a passphrase for a service) and the password source gives a password. An
      environment variable or systemd credential missing from this process's environment
      is a warning, not an error: only the service's own environment has them.

    Warnings: a password file or TLS key readable by every user; a password sent
    without TLS to a broker that is not on this machine (on loopback it never crosses a
    network); `mqtt.tls.insecure`. They are returned, not logged: `run` logs them,
    check-config prints them. Nothing is written.

    Args:
        path: the YAML config file.
        model_path: model file or folder that replaces model.path (`--model`).
        broker: HOST[:PORT] that replaces mqtt.host/mqtt.port and turns MQTT on (`--broker`).
        check_targets: False to read and validate the files only (replay, score, calibrate,
            whose Runner checks the parts they use).
        environ: environment the password source is read from.

    Returns:
        The configuration and its warnings.

    Raises:
        ConfigError: one line per problem, each naming the config file and the key.
    """
    cfg = load_site_config(path)
    if not check_targets:
        return LoadedConfig(cfg)
    name = str(path)
    problems = _model_problems(cfg, name, model_path)
    warnings: list[str] = []
    if cfg.mqtt.enabled or broker is not None:
        _check_mqtt(cfg.mqtt, name, broker, environ, problems, warnings)
    if cfg.updates.enabled and not cfg.model.trusted_keys:
        warnings.append(
            f"{name}: updates.enabled without model.trusted_keys: anyone who can publish to this device's cmd/ "
            "topics can replace its model; sign bundles (python -m firmware_tools keygen, sign) and set "
            "model.trusted_keys"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    warnings += level_warnings(cfg, path)
    return LoadedConfig(cfg, tuple(warnings))


def level_warnings(cfg: AcmonConfig, path: str | os.PathLike) -> list[str]:
    """A level rule that cannot run yet (no commissioned normal), and a calibration measured through other input
    filters than the config's: one line each, naming the file and key."""
    out = []
    rule = cfg.detector.level_rule
    normal = cfg.levels.normal_db or {}
    if rule is not None and any(b not in normal for b in rule.bands_hz):
        out.append(
            f"{path}: detector.level_rule: no commissioned normal level for every band in bands_hz "
            "(levels.normal_db): the rule stays off until `python -m device calibrate` records it"
        )
    calibration = calibration_in_force(path)
    if calibration is not None:
        try:
            record = (read_yaml_file(calibration, "calibration file") or {}).get("calibration")
        except (ConfigError, AttributeError):
            record = None  # load_site_config has already refused a damaged file
        changed = filters_changed_since(cfg, record)
        if changed:
            out.append(f"{calibration}: audio.highpass_hz/notch_hz: {changed}")
    return out


def trusted_keys(cfg: AcmonConfig) -> dict[str, bytes] | None:
    """The public keys model.trusted_keys names ({key id: key}), or None when it is not set."""
    return trusted_keys_from(cfg.model.trusted_keys)


def _model_problems(cfg: AcmonConfig, name: str, model_path: str | None) -> list[str]:
    """The model as Runner loads it, and the detector settings it gives; [] when both are fine."""

    key = "--model" if model_path else "model.path"
    given = model_path or cfg.model.path
    if given is None:  # no model: the level rule alone, at the pinned (or default) rate
        try:
            rate = LevelOnlyModel(cfg).params.sample_rate_hz
        except AcmonError as exc:
            return [f"{name}: {exc}"]
        return [f"{name}: {p}" for p in check_level_settings(cfg, rate)]
    path = resolve_model_path(given)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return [
            f"{name}: {key}: {path}: no such model file; copy the model there or change {key} "
            "(train one with: python -m training fit)"
        ]
    except OSError as exc:
        return [f"{name}: {key}: {path}: cannot read the model ({exc.strerror or type(exc).__name__})"]
    if not stat.S_ISREG(info.st_mode):
        # /dev/zero would be read until memory runs out, a FIFO would block for ever.
        return [f"{name}: {key}: {path} is not a regular file; give a .tflite file or a model folder"]
    try:
        model = AnomalyModel(given, expected_params=feature_pins(cfg), trusted_keys=trusted_keys(cfg))
        model.require_anomaly_task()
        if cfg.model.site_statistics:  # load_site_config made it absolute (beside the config)
            model.use_site_statistics(Scorer.load(cfg.model.site_statistics), source=cfg.model.site_statistics)
        detector_settings(cfg, model)
        level_problems = check_level_settings(cfg, model.params.sample_rate_hz)
        if level_problems:
            return [f"{name}: {p}" for p in level_problems]
        # A rate the model needs converting from must give a filter of sane size, or opening the
        # microphone (and reopening it, again and again) would fail only at run time.
        rate = model.params.sample_rate_hz
        for key_name, source_rate in (
            ("audio.capture_rate_hz", cfg.audio.capture_rate_hz),
            ("audio.stdin_rate_hz", cfg.audio.stdin_rate_hz),
        ):
            if source_rate is not None and source_rate != rate:
                check_resampling(f"{name}: {key_name}", source_rate, rate)
    except AcmonError as exc:  # the model's messages name its file
        return [f"{name}: {' '.join(str(exc).split())}"]
    return []


def _check_mqtt(
    m: MqttConfig,
    name: str,
    broker: str | None,
    environ: Mapping[str, str],
    problems: list[str],
    warnings: list[str],
) -> None:
    """Append the problems and warnings of the MQTT section's files and secrets."""

    host = m.host
    if broker is not None:
        try:
            host = parse_broker(broker, m.port)[0]
        except AcmonError as exc:
            problems.append(str(exc))
    if m.tls is not None:
        _check_tls(m.tls, name, problems, warnings)
        if m.tls.insecure:
            warnings.append(
                f"{name}: mqtt.tls.insecure is true: the broker's host name is not checked against its "
                "certificate, so another machine can pose as the broker; set it to false outside tests"
            )
    if m.username is None:
        return
    if m.password_file is not None:
        secret = Path(m.password_file)
        try:
            resolve_mqtt_password(m, environ)
        except ConfigError as exc:
            problems.append(f"{name}: {exc}")
        else:
            _warn_world_readable(secret, f"{name}: mqtt.password_file", warnings)
    elif m.password_env is not None and m.password_env not in environ:
        warnings.append(
            f"{name}: mqtt.password_env: {m.password_env} is not set here, so the password was not checked; "
            "the daemon's environment must set it"
        )
    elif m.password_credential is not None and not environ.get("CREDENTIALS_DIRECTORY"):
        warnings.append(
            f"{name}: mqtt.password_credential: not checked outside systemd (no CREDENTIALS_DIRECTORY); "
            f"the unit must have LoadCredential={m.password_credential}:<file>"
        )
    else:
        try:
            resolve_mqtt_password(m, environ)
        except ConfigError as exc:
            problems.append(f"{name}: {exc}")
    if m.tls is None and not _is_loopback(host):
        warnings.append(
            f"{name}: mqtt: the password for {m.username!r} goes to {host} without TLS, readable by anyone on "
            "the network path; set mqtt.tls.ca_file and the broker's TLS port (usually 8883)"
        )


def _check_tls(tls: MqttTlsConfig, name: str, problems: list[str], warnings: list[str]) -> None:
    """Load the TLS files into an SSL context as the MQTT client will; problems name the key and file."""
    import ssl  # noqa: PLC0415

    unreadable = False
    for key in ("ca_file", "cert_file", "key_file"):
        file = getattr(tls, key)
        problem = None if file is None else not_regular_file(file)
        if problem:
            problems.append(f"{name}: mqtt.tls.{key}: {file}: {problem}")
            unreadable = True
    if unreadable:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        problems.append(f"{name}: mqtt.tls.ca_file: {tls.ca_file}: {_tls_reason(exc, 'PEM CA certificate')}")
    if tls.cert_file is None or tls.key_file is None:
        return
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        problems.append(
            f"{name}: mqtt.tls.key_file: {tls.key_file}: the key is encrypted with a passphrase, which a service "
            "cannot type; store it unencrypted and readable by the daemon only (mode 600)"
        )
    except OSError as exc:
        problems.append(
            f"{name}: mqtt.tls.cert_file/key_file: {tls.cert_file}, {tls.key_file}: "
            f"{_tls_reason(exc, 'PEM certificate and its private key')}"
        )
    else:
        _warn_world_readable(Path(tls.key_file), f"{name}: mqtt.tls.key_file", warnings)


class _EncryptedKey(Exception):
    """The TLS key asks for a passphrase (OpenSSL would prompt on the terminal without a callback)."""


def _refuse_passphrase() -> bytes:
    raise _EncryptedKey


def _tls_reason(exc: OSError, expected: str) -> str:
    import ssl  # noqa: PLC0415

    if not isinstance(exc, ssl.SSLError):
        return f"cannot read ({exc.strerror or type(exc).__name__})"
    return f"not a {expected} ({exc.reason or exc})"


def _warn_world_readable(path: Path, what: str, warnings: list[str]) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & stat.S_IROTH:
        warnings.append(
            f"{what}: {path} is readable by every user (mode {mode:04o}); "
            f"chmod 600 {path} (or 640 with the daemon's group)"
        )


def _is_loopback(host: str) -> bool:
    """True for a broker on this machine, where a password never crosses a network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
