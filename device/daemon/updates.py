"""Model updates over the air: fetch a bundle, verify it, swap it in, watch, and roll back by itself.

`cmd/update_model {"url": ..., "sha256": ...}` (updates.enabled) starts a download on a worker
thread from the site's own HTTP(S) server; the file must have that SHA-256, pass the bundle's
checks (manifest, and signature when model.trusted_keys is set) and load as this device's model
(feature parameters, site statistics) before anything changes. The analysis thread then swaps it
in between blocks and watches it for updates.watch_minutes: if it scores no window, or raises more
than updates.max_alarms_while_watching alarms, the previous model comes back by itself. The
result of every step is published, retained, on `<base>/model` (schema acmon.model/1).

State, in <state directory>/models/<site>/<device id>/: the bundles (`<sha256>.acmon`, the
active one and the one before it) and `active.json`, which names the active bundle, the one it
replaced, and whether it is still being watched. It is written atomically; a restart while
watching goes on watching (and after MAX_STARTS_WATCHING starts rolls back: a model that crashes the
daemon never gets to score). A config whose model.path changed since the update wins over it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.bundle import BUNDLE_MAX_BYTES, read_bundle
from ..errors import AcmonError
from ..mqtt.payloads import utc_now_iso
from ..settings.config import load_config
from ..settings.schema import AcmonConfig
from ..settings.yaml_files import read_yaml_file
from ..state import atomic_write, make_private_directory, read_small_file, state_root
from .site_config import calibration_in_force, load_site_config, rollback_calibration, write_calibration

logger = logging.getLogger(__name__)

MODEL_SCHEMA = "acmon.model/1"
ACTIVE_NAME = "active.json"
ACTIVE_MAX_BYTES = 64 * 1024
MAX_STARTS_WATCHING = 3
SET_ASIDE_MARKER = "# No site calibration: the one before was set aside (calibration.prev.yaml) by update_model from "
DOWNLOAD_CHUNK = 64 * 1024
ALLOWED_SCHEMES = ("http", "https")


class UpdateError(AcmonError):
    """An update was refused or failed; nothing changed (or the previous model is back)."""


def update_folder(cfg: AcmonConfig, environ: Any = os.environ) -> Path:
    return state_root(environ) / "models" / cfg.device.site / cfg.device.id


# -- the record of the active update --------------------------------------------


def read_active(folder: Path) -> dict[str, Any] | None:
    """active.json, or None when there is none or it cannot be used (logged: the config's model is used)."""
    path = folder / ACTIVE_NAME
    try:
        record = json.loads(read_small_file(path, ACTIVE_MAX_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.error("%s: unreadable (%s); using the config's model", path, exc)
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("bundle"), str)
        or "/" in record["bundle"]
        or not isinstance(record.get("config_model"), str)
        or record.get("status") not in ("watching", "confirmed")
        or not (record.get("previous") is None or _valid_previous(record["previous"]))
    ):
        logger.error("%s: not an update record; using the config's model", path)
        return None
    return record


def _valid_previous(previous: Any) -> bool:
    return isinstance(previous, dict) and isinstance(previous.get("bundle"), str) and "/" not in previous["bundle"]


def write_active(folder: Path, record: dict[str, Any] | None) -> None:
    path = folder / ACTIVE_NAME
    if record is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, json.dumps(record, indent=2).encode(), mode=0o600)


# -- download --------------------------------------------------------------------


def check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES or not parts.hostname:
        raise UpdateError(f"update_model: {url[:120]!r} is not an http:// or https:// URL with a host")


def download(url: str, sha256: str, folder: Path, timeout: float, max_bytes: int = BUNDLE_MAX_BYTES) -> Path:
    """Fetch url into folder/<sha256>.acmon, checking its size and SHA-256 as it arrives.

    Raises:
        UpdateError: not http(s), the server refused, too large, cut short, or another SHA-256.
    """
    import urllib.error  # noqa: PLC0415 - 2.6 MB of http.client and email a daemon without updates never needs
    import urllib.request  # noqa: PLC0415

    class SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
        """Follow redirects only to http(s) (urllib would also follow ftp)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urllib.parse.urlsplit(newurl).scheme not in ALLOWED_SCHEMES:
                raise UpdateError(f"update_model: redirected to {newurl[:120]!r}, which is not http(s)")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    check_url(url)
    target = folder / f"{sha256}.acmon"
    partial = folder / f".{sha256}.{os.getpid()}.part"
    opener = urllib.request.build_opener(SameSchemeRedirects())
    digest = hashlib.sha256()
    size = 0
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "acmon"}), timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UpdateError(
                    f"update_model: {url[:120]} is {int(declared)} bytes, over the {max_bytes} a bundle may be"
                )
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(DOWNLOAD_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UpdateError(f"update_model: {url[:120]} sent more than {max_bytes} bytes; not a bundle")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise UpdateError(
                f"update_model: the file at {url[:120]} has SHA-256 {digest.hexdigest()[:16]}..., not the "
                f"{sha256[:16]}... the command gave; check the URL and the hash"
            )
        os.replace(partial, target)
    except urllib.error.HTTPError as exc:
        raise UpdateError(f"update_model: {url[:120]}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UpdateError(f"update_model: cannot fetch {url[:120]}: {reason}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


# -- the runner's side ------------------------------------------------------------


@dataclass
class Pending:
    """A verified, loaded model waiting for the analysis thread to swap it in."""

    model: Any
    settings: Any
    bundle: Path
    bundle_sha256: str
    url: str
    reply: Any
    cfg: AcmonConfig  # the config the model was loaded with (without the site calibration when it is set aside)
    set_aside_calibration: bool


class ModelUpdates:
    """The update state of one Runner (see the module). Called from the analysis thread except the download."""

    def __init__(self, runner: Any, cfg: AcmonConfig):
        self.runner = runner
        self.folder = update_folder(cfg)
        self.active = read_active(self.folder)
        self.last: dict[str, Any] | None = None  # the last update's outcome, for <base>/model
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._pending: Pending | None = None
        self._failed: tuple[str, Any] | None = None  # (error, reply) from the worker
        self._watch: dict[str, float] | None = None
        if self.active is not None and self.active["config_model"] != cfg.model.path:
            logger.warning(
                "model.path changed to %s since the update to %s: the config's model is used",
                cfg.model.path,
                self.active["bundle"],
            )
            self.active = None
        elif self.active is not None and self.active["status"] == "watching":
            starts = int(self.active.get("starts_watching", 0)) + 1
            self.active["starts_watching"] = starts
            if starts > MAX_STARTS_WATCHING:  # it may crash the daemon before it can score: never load it again
                self.forget_active(f"the daemon started {starts} times while watching it")
            else:
                self._save()

    def forget_active(self, reason: str) -> None:
        """Before any model is loaded: drop the active update for the one before it (or the config's model)."""
        assert self.active is not None
        failed = self.active
        self.active = failed.get("previous")
        self._save()
        (self.folder / failed["bundle"]).unlink(missing_ok=True)
        logger.error("model update to %s %s rolled back: %s", failed.get("name"), failed.get("version"), reason)
        self.last = {"status": "rolled_back", "reason": reason, "url": failed.get("url"), "time": utc_now_iso()}

    def follow_config(self, cfg: AcmonConfig) -> None:
        """On reload: a config whose model.path changed since the update wins over it."""
        if self.active is not None and self.active["config_model"] != cfg.model.path:
            logger.warning(
                "model.path changed to %s: the updated model %s is no longer used",
                cfg.model.path,
                self.active["bundle"],
            )
            self.active = None
            self._watch = None
            self._save()

    # -- where the model comes from --

    def model_path(self) -> str | None:
        """The active updated bundle's path, or None for the config's model."""
        if self.active is None:
            return None
        path = self.folder / self.active["bundle"]
        if not path.is_file():
            logger.error("%s: the updated model is missing; using the config's model", path)
            self.active = None
            return None
        return str(path)

    # -- the command --

    def start(self, url: str, sha256: str, reply: Any, drop_calibration: bool = False) -> None:
        """Begin an update (worker thread); the reply comes when it is installed or refused.

        Raises:
            UpdateError: updates are off, another one is under way, or the URL is not http(s).
        """
        cfg = self.runner.cfg
        if not cfg.updates.enabled:
            raise UpdateError("update_model: updates are off on this device (updates.enabled: false in its config)")
        if self.runner.model_path is not None:
            raise UpdateError("update_model: the daemon was started with --model, which an update cannot replace")
        if (self._worker is not None and self._worker.is_alive()) or self._pending or self._watch:
            raise UpdateError("update_model: an update is already under way; wait for its result on <base>/model")
        check_url(url)
        try:
            make_private_directory(self.folder)
        except OSError as exc:
            raise UpdateError(f"update_model: cannot write {self.folder}: {exc.strerror or exc}") from None
        self._publish({"status": "downloading", "url": url, "sha256": sha256})
        cfg, set_aside = cfg, False
        calibrated = self.runner.config_path is not None and calibration_in_force(self.runner.config_path)
        if drop_calibration and calibrated:
            # The site calibration belongs to the model it was measured with: the new one runs without it.
            cfg, set_aside = load_config(self.runner.config_path), True
        self._worker = threading.Thread(
            target=self._fetch_and_load, args=(url, sha256, reply, cfg, set_aside), name="acmon-update", daemon=True
        )
        self._worker.start()

    def _fetch_and_load(self, url: str, sha256: str, reply: Any, cfg: AcmonConfig, set_aside: bool) -> None:
        """Worker thread: everything that can be checked before the swap. Its outcome goes to tick()."""
        try:
            path = download(url, sha256, self.folder, cfg.updates.download_timeout_seconds)
            try:
                read_bundle(path, self.runner.trusted_keys())
                model = self.runner.load_model(cfg, str(path))
                if not set_aside:
                    self._check_calibration_fits(model)
                settings = self.runner.settings_for(cfg, model)
            except AcmonError:
                path.unlink(missing_ok=True)
                raise
            with self._lock:
                self._pending = Pending(model, settings, path, sha256, url, reply, cfg, set_aside)
        except AcmonError as exc:
            with self._lock:
                self._failed = (str(exc), reply)
        except Exception as exc:  # a bug must reach the analysis thread, not die with this one
            logger.exception("update_model: internal error in the download thread")
            with self._lock:
                self._failed = (f"update_model: internal error ({type(exc).__name__}: {exc})", reply)

    def _check_calibration_fits(self, model: Any) -> None:
        """A site calibration (its threshold, its statistics) belongs to the model it was measured with.

        Raises:
            UpdateError: one is in force and was measured with another model.
        """
        current = calibration_in_force(self.runner.config_path) if self.runner.config_path else None
        if current is None:
            return
        try:
            record = (read_yaml_file(current, "calibration file") or {}).get("calibration") or {}
        except (AcmonError, AttributeError):
            record = {}
        if not isinstance(record, dict) or not record:
            return  # an empty calibration (the one an update leaves when it sets the site's aside): nothing to fit
        measured_with = record.get("source")
        meta = model.metadata
        if measured_with != f"{meta.name} {meta.version}":
            raise UpdateError(
                f"update_model: the site calibration in force ({current}) was measured with model {measured_with}, "
                f'not {meta.name} {meta.version}; send the update with "drop_calibration": true to set it aside '
                "(rollback_model restores it), then calibrate again"
            )

    # -- between blocks --

    def tick(self) -> None:
        """Swap in a pending model, report a refused one, and judge the one being watched."""
        with self._lock:
            pending, self._pending = self._pending, None
            failed, self._failed = self._failed, None
        if failed is not None:
            error, reply = failed
            logger.error("%s", error)
            self._publish({"status": "refused", "reason": error})
            reply(None, error)
        if pending is not None:
            self._install(pending)
        if self._watch is None and self.active is not None and self.active["status"] == "watching":
            self._begin_watch()  # a restart while watching
        if self._watch is not None:
            self._judge()

    def _install(self, p: Pending) -> None:
        runner = self.runner
        previous = self.active
        try:
            if p.set_aside_calibration:
                # An empty calibration in force; the site's becomes calibration.prev.yaml (rollback restores it).
                write_calibration(runner.config_path, SET_ASIDE_MARKER + f"{p.url[:200]}\n")
            runner.install_model(p.model, p.settings, p.cfg)
        except AcmonError as exc:
            p.bundle.unlink(missing_ok=True)
            self._publish({"status": "refused", "reason": str(exc)})
            p.reply(None, str(exc))
            return
        meta = p.model.metadata
        self.active = {
            "bundle": p.bundle.name,
            "bundle_sha256": p.bundle_sha256,
            "url": p.url,
            "name": meta.name,
            "version": meta.version,
            "installed": utc_now_iso(),
            "status": "watching",
            "starts_watching": 0,
            "config_model": runner.cfg.model.path,
            "calibration_set_aside": p.set_aside_calibration,
            # The update this one replaced (it was confirmed: an update waits for the last to be judged), or None.
            "previous": {k: v for k, v in previous.items() if k != "previous"} if previous else None,
        }
        self._save()
        self._prune()
        self._begin_watch()
        watch = runner.cfg.updates.watch_minutes
        logger.warning("model updated to %s %s from %s; watching it for %g min", meta.name, meta.version, p.url, watch)
        self._publish({"status": "watching", "url": p.url, "watch_minutes": watch})
        p.reply({"model_name": meta.name, "model_version": meta.version, "status": "watching", "watch_minutes": watch})

    def _begin_watch(self) -> None:
        self._watch = {
            "since": time.monotonic(),
            "windows": self.runner.windows_scored,
            "alarms": self.runner.alarms_started,
        }

    def _judge(self) -> None:
        assert self._watch is not None and self.active is not None
        u = self.runner.cfg.updates
        alarms = self.runner.alarms_started - self._watch["alarms"]
        scored = self.runner.windows_scored - self._watch["windows"]
        elapsed = time.monotonic() - self._watch["since"]
        if alarms > u.max_alarms_while_watching:
            self._rollback_watched(
                f"{alarms} alarms in {elapsed / 60:.1f} min of watching (at most {u.max_alarms_while_watching})"
            )
        elif elapsed >= u.watch_minutes * 60:
            if scored == 0:
                self._rollback_watched(f"it scored no window in {u.watch_minutes:g} min")
            else:
                self._watch = None
                self.active["status"] = "confirmed"
                self.active.pop("starts_watching", None)
                self._save()
                logger.info("model update confirmed: %d windows scored, %d alarms while watching", scored, alarms)
                self._publish({"status": "confirmed", "windows_scored": scored, "alarms": alarms})

    def _rollback_watched(self, reason: str) -> None:
        """Roll back a model that failed its watch; if the one before cannot come back, keep this one and say so."""
        try:
            self.rollback(reason)
        except AcmonError as exc:
            self._watch = None
            logger.error("model update: rollback failed (%s); the new model stays: %s", reason, exc)
            self._publish({"status": "rollback_failed", "reason": f"{reason}; rollback failed: {exc}"})

    def rollback(self, reason: str) -> dict[str, Any]:
        """Go back to the model before the active update (an earlier update, or the config's model).

        Raises:
            UpdateError: nothing to roll back to, or the previous model no longer loads.
        """
        if self.active is None:
            raise UpdateError("rollback_model: the model in use is the config's; there is no update to roll back")
        failed, previous = self.active, self.active.get("previous")
        cfg = self.runner.cfg
        restore = failed.get("calibration_set_aside") and self._set_aside_in_force()
        if restore:
            rollback_calibration(self.runner.config_path)  # the site calibration of the model that comes back
            cfg = load_site_config(self.runner.config_path)
        path = str(self.folder / previous["bundle"]) if previous else cfg.model.path
        model = self.runner.load_model(cfg, path)
        self.runner.install_model(model, self.runner.settings_for(cfg, model), cfg)
        self._watch = None
        self.active = previous
        self._save()
        (self.folder / failed["bundle"]).unlink(missing_ok=True)
        logger.error("model update to %s %s rolled back: %s", failed.get("name"), failed.get("version"), reason)
        self._publish({"status": "rolled_back", "reason": reason, "url": failed.get("url")})
        return {"model_name": model.metadata.name, "model_version": model.metadata.version, "reason": reason}

    def _set_aside_in_force(self) -> bool:
        """True while the calibration in force is the empty one an update put there (not a newer calibration)."""
        current = calibration_in_force(self.runner.config_path) if self.runner.config_path else None
        try:
            return current is not None and current.read_text(errors="replace").startswith(SET_ASIDE_MARKER)
        except OSError:
            return False

    # -- files and reports --

    def _save(self) -> None:
        try:
            make_private_directory(self.folder)
            write_active(self.folder, self.active)
        except OSError as exc:
            self.runner.report_storage("model update record", f"{self.folder / ACTIVE_NAME}: {exc}")

    def _prune(self) -> None:
        """Keep the active bundle and the one before it; delete older downloads."""
        previous = (self.active or {}).get("previous") or {}
        keep = {self.active.get("bundle"), previous.get("bundle")} if self.active else set()
        for f in self.folder.glob("*.acmon"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def _publish(self, update: dict[str, Any]) -> None:
        self.last = {**update, "time": utc_now_iso()}
        self.runner.publish_model_state()

    def payload(self) -> dict[str, Any]:
        """The body of <base>/model (schema acmon.model/1)."""
        model = self.runner.model
        meta = model.metadata
        return {
            "schema": MODEL_SCHEMA,
            "device_id": self.runner.cfg.device.id,
            "site": self.runner.cfg.device.site,
            "time": utc_now_iso(),
            "model": {
                "name": meta.name,
                "version": meta.version,
                "sha256": model.sha256,
                "source": "update" if self.active else "config",
                "bundle_sha256": self.active.get("bundle_sha256") if self.active else None,
                "status": self.active["status"] if self.active else "config",
            },
            "last_update": self.last,
        }
