"""Tracked runs: every `python -m training fit` and `evaluate` is logged to MLflow (`training runs` reads them back).

What a run holds: the command's options and the feature and fit settings as parameters; a fingerprint of the data
(sha256 of every file, one digest over the list, the list itself as the artifact data/data_files.tsv); the networks'
Keras history per epoch and the summary's figures (threshold, calibration, the Gaussian model's validation AUCs, an
evaluation's AUC and pAUC) as metrics; the model, the training summary and the evaluation's report and plots as
artifacts.

Where: --tracking-uri, else $MLFLOW_TRACKING_URI, else the local store $XDG_STATE_HOME/acmon/mlflow (by default
~/.local/state/acmon/mlflow, beside the daemon's state): mlflow.db, SQLite as MLflow 3 recommends (its file store is
deprecated and refuses to open without an opt-in), and artifacts/ beside it. A folder path given as the URI means such
a local store; a URI with a scheme (http://, sqlite://, file:) goes to MLflow as it is.

MLflow is optional (`pip install 'acmon[track]'`: mlflow-skinny and SQLAlchemy, no server). Without it, fit and
evaluate say once that the run is not tracked and work as before. Tracking never costs a fit: a tracking server that
cannot be reached, or stops answering, is left with one warning and the run is written to the local store instead
(at the end, if it failed midway); a store that cannot be used at all is one warning and an untracked run.
Nothing here contacts the network except a tracking server the user configured: MLflow's telemetry is switched off.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from device import __version__
from device.analysis.metadata import CLASSIFICATION
from device.errors import AcmonError
from device.state import state_root

from .fingerprint import fingerprint

logger = logging.getLogger(__name__)

EXPERIMENT = "acmon"
INSTALL_HINT = "pip install 'acmon[track]'"
STORE_DB = "mlflow.db"
STORE_ARTIFACTS = "artifacts"
DATA_FILES_ARTIFACT = "data_files.tsv"
MAX_PARAM_CHARS = 500
# Not parameters: how the run is tracked, and the argparse plumbing.
_SKIPPED_ARGS = {"func", "debug", "no_track", "tracking_uri"}
# MLflow's own environment, set before it is imported: no telemetry, no hint printed for coding tools, and a tracking
# server that does not answer fails in seconds instead of retrying for minutes (the user's values win for the HTTP ones).
_FORCED_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_DISABLE_AGENT_HINT": "1"}
_DEFAULT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

_active: TrackedRun | None = None
"""The run being logged by this process, if any (the Keras callback logs into it)."""


def import_mlflow() -> Any:
    """The mlflow module with its telemetry off, or None when it is not installed."""
    os.environ.update(_FORCED_ENV)
    for key, value in _DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow  # noqa: PLC0415 -- optional: only tracked runs need it, and it takes 2 s to import
    except ImportError:
        return None
    for name in ("mlflow", "alembic"):  # their INFO lines (creating tables, migrations) are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    # A tracking server that does not answer is reported in one line by TrackedRun, not by every retry.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return mlflow


def brief(exc: BaseException) -> str:
    """An exception as one short line (MLflow's messages can be pages of HTML or a retry chain)."""
    text = " ".join(str(exc).split()).split(" [SQL: ")[0] or type(exc).__name__  # SQLAlchemy appends the query
    return f"{type(exc).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def default_store(environ: Mapping[str, str] = os.environ) -> Path:
    """The local store's folder: $XDG_STATE_HOME/acmon/mlflow (~/.local/state/acmon/mlflow)."""
    return state_root(environ) / "mlflow"


@dataclass(frozen=True)
class Target:
    """Where runs are written: an MLflow tracking URI and, for a local SQLite store, its artifact folder."""

    uri: str
    artifact_location: str | None = None
    folder: Path | None = None
    """The local store's folder (None for a server or a URI given with its scheme)."""

    @property
    def remote(self) -> bool:
        return urlparse(self.uri).scheme in ("http", "https")

    def __str__(self) -> str:
        return str(self.folder) if self.folder is not None else self.uri


def local_target(folder: str | Path) -> Target:
    path = Path(folder).expanduser().resolve()
    return Target(f"sqlite:///{path / STORE_DB}", str(path / STORE_ARTIFACTS), path)


def resolve_target(uri: str | None, environ: Mapping[str, str] = os.environ) -> Target:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the default local store; a path is a local store's folder."""
    value = uri or environ.get("MLFLOW_TRACKING_URI") or ""
    if not value:
        return local_target(default_store(environ))
    scheme = urlparse(value).scheme
    if len(scheme) <= 1:  # no scheme (or a Windows drive letter): a folder
        return local_target(value)
    if scheme == "sqlite":
        path = Path(value.split(":///", 1)[-1])
        return Target(value, str(path.parent.resolve() / STORE_ARTIFACTS))
    if scheme == "file":
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the user asked for MLflow's legacy file store
    return Target(value)


def open_store(mlflow: Any, target: Target, create: bool = True) -> tuple[Any, str | None]:
    """(MlflowClient, id of the 'acmon' experiment or None when it does not exist and create is False).

    Raises:
        AcmonError: the store cannot be opened or read (one line: where and why).
    """
    try:
        if target.folder is not None and create:
            target.folder.mkdir(parents=True, exist_ok=True)
        client = mlflow.tracking.MlflowClient(tracking_uri=target.uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return client, experiment.experiment_id
        if not create:
            return client, None
        return client, client.create_experiment(EXPERIMENT, artifact_location=target.artifact_location)
    except ImportError as exc:
        raise AcmonError(f"tracking store {target}: {exc.name or exc} is not installed; {INSTALL_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy, requests and OS errors alike mean "cannot use it"
        raise AcmonError(f"tracking store {target}: cannot be used ({brief(exc)})") from None


# -- what is logged --------------------------------------------------------------------------------------------------


def _clean_key(key: str) -> str:
    """An MLflow-legal name: letters, digits and _ - . / space kept, anything else as '_'."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)[:250]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and dataclasses as {'a.b': leaf}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, argparse.Namespace):
        value = {k: v for k, v in vars(value).items() if k not in _SKIPPED_ARGS and v is not None}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {_clean_key(prefix[:-1]): value} if prefix else {}


def numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of a summary or report (bools and lists left out), as metrics."""
    out = {}
    for key, leaf in flatten(value, prefix).items():
        if isinstance(leaf, (int, float)) and not isinstance(leaf, bool) and abs(float(leaf)) < float("inf"):
            out[key] = float(leaf)
    return out


class TrackedRun:
    """One fit or evaluate being logged. Every call is kept in a journal, so a run whose store fails midway can be
    written whole to the local store at the end; nothing here raises into the command it tracks."""

    def __init__(self, mlflow: Any = None, target: Target | None = None, fallback: Target | None = None):
        self.mlflow = mlflow
        self.target = target
        self.fallback = fallback
        self.client: Any = None
        self.run_id: str | None = None
        self.failed_reason: str | None = None
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int, int]] = []
        self.artifacts: list[tuple[str, str | None]] = []
        self.run_name = ""
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def enabled(self) -> bool:
        return self.mlflow is not None

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        """Call the store; on its first failure, say so once and keep only the journal."""
        if self.client is None or self.run_id is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracking failure must never stop a fit
            self.failed_reason = f"{what}: {brief(exc)}"
            self.client = None
            where = f"; the run will be written to the local store {self.fallback}" if self.fallback else ""
            logger.warning("tracking store %s failed (%s)%s", self.target, self.failed_reason, where)

    def start(self, run_name: str, tags: dict[str, str]) -> None:
        self.tags.update(tags)
        self.run_name = run_name
        self.run_id = None
        if not self.enabled or self.target is None:
            return
        try:
            self.client, experiment_id = open_store(self.mlflow, self.target)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=self.tags).info.run_id
        except AcmonError as exc:
            self.client, self.failed_reason = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - as in _call
            self.client, self.failed_reason = None, f"tracking store {self.target}: {brief(exc)}"
        if self.failed_reason:
            if self.fallback is not None:
                logger.warning("%s; logging this run to the local store %s instead", self.failed_reason, self.fallback)
                moved = {"acmon.fallback_from": str(self.target), "acmon.fallback_reason": self.failed_reason}
                self.target, self.fallback, self.failed_reason = self.fallback, None, None
                self.start(run_name, moved)
            else:
                logger.warning("%s; this run is not tracked", self.failed_reason)

    def log_params(self, params: Mapping[str, Any]) -> None:
        new = {}
        for key, value in flatten(params).items():
            text = str(value)
            text = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
            if key not in self.params:
                self.params[key] = new[key] = text
        self._write_batch(params=new)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)
        self._write_batch(tags=dict(tags))

    def log_metrics(self, values: Mapping[str, Any], step: int = 0) -> None:
        now = int(time.time() * 1000)
        new = [(_clean_key(k), float(v), step, now) for k, v in numbers(dict(values)).items()]
        self.metrics += new
        self._write_batch(metrics=new)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).is_file():
            self.artifacts.append((str(path), artifact_path))
            self._call("artifact", self._artifact_into, self.client, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str, artifact_path: str | None = None) -> None:
        """Keep a text as an artifact (written to a file of this process's own, kept until the run ends)."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="acmon-run-")
        folder = Path(self._scratch.name) / (artifact_path or "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        self.log_artifact(folder / name, artifact_path)

    def _terminate(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)

    @staticmethod
    def _artifact_into(client: Any, run_id: str, path: str, artifact_path: str | None) -> None:
        client.log_artifact(run_id, path, artifact_path)

    def _write_batch(self, params=None, tags=None, metrics=None) -> None:
        if self.client is not None and self.run_id is not None:
            self._call(
                "log", _log_batch, self.mlflow, self.client, self.run_id, params or {}, tags or {}, metrics or []
            )

    def finish(self, status: str) -> None:
        """End the run; a run whose store failed midway is written whole to the fallback store."""
        if not self.enabled:
            return
        self._call("end", self._terminate, status)
        if self.client is None and self.run_id is not None and self.fallback is not None:
            lost, reason = self.target, self.failed_reason or ""
            self.target, self.fallback, self.failed_reason = self.fallback, None, None
            self.start(self.run_name, {"acmon.fallback_from": str(lost), "acmon.fallback_reason": reason})
            self._write_batch(params=self.params, metrics=self.metrics)
            for path, artifact_path in self.artifacts:
                self._call("artifact", self._artifact_into, self.client, self.run_id, path, artifact_path)
            self._call("end", self._terminate, status)
        if self.client is not None and self.run_id is not None:
            logger.info(
                "tracked as run %s in %s (python -m training runs --show %s)",
                self.run_id[:8],
                self.target,
                self.run_id[:8],
            )
        elif self.run_id is not None:  # lost midway with nowhere else to go (not said yet: start() says its own)
            logger.warning("run %s in %s is incomplete: %s", self.run_id[:8], self.target, self.failed_reason)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # What fit and evaluate hand over.

    def log_fit(self, summary: Mapping[str, Any], out: str | Path) -> None:
        """A finished fit: its model, summary and figures."""
        self.log_params({"model": {"kind": summary.get("model_kind"), "sha256": summary.get("sha256")}})
        # A sound classifier's threshold is a placeholder nothing uses: not a figure to compare.
        kept = (
            ("size_bytes", "seconds")
            if summary.get("task") == CLASSIFICATION
            else ("threshold", "size_bytes", "seconds")
        )
        figures = {k: summary.get(k) for k in kept}
        figures.update(
            {k: summary.get(k) for k in ("calibration", "float_int8_parity", "training", "choice") if k in summary}
        )
        choice = summary.get("choice") or {}
        chosen = "+".join(choice.get("chosen") or [])
        validation = (choice.get("candidates") or {}).get(chosen) or {}
        if "auc" in validation:  # the Gaussian model's validation AUC of the members it chose
            figures.update({"val_auc": validation["auc"], "val_pauc": validation.get("pauc")})
        if summary.get("val_loss"):
            figures["best_val_loss"] = min(summary["val_loss"])
        cv = summary.get("cross_validation") or {}
        if cv.get("mean_accuracy") is not None:  # a sound classifier: its held-out folds, not its unused threshold
            figures.update({"cv_mean_accuracy": cv["mean_accuracy"], "cv_std_accuracy": cv.get("std_accuracy")})
        for row in summary.get("comparison") or []:
            figures[f"cv_accuracy.{row.get('features')}.{row.get('model')}"] = row.get("mean_accuracy")
        self.log_metrics(figures)
        for name in ("model.tflite", "training_summary.json"):
            self.log_artifact(Path(out) / name, "model")
        for name in [*(summary.get("reports") or []), "comparison.md", "comparison.json"]:
            if (Path(out) / name).is_file():
                self.log_artifact(Path(out) / name, "reports")

    def log_evaluation(self, report: Mapping[str, Any]) -> None:
        """A finished evaluation: the model it measured, its figures, report and plots."""
        model = report.get("model") or {}
        self.log_params({"model": {k: model.get(k) for k in ("name", "version", "sha256", "score_kind", "threshold")}})
        overall = report.get("overall") or {}
        self.log_metrics({"auc": overall.get("mean_auc"), "pauc": overall.get("mean_pauc")})
        self.log_metrics(numbers({k: report.get(k) for k in ("overall", "float_int8_parity", "seconds")}))
        for group in report.get("groups") or []:
            self.log_metrics({f"auc.{group.get('machine_type')}.{group.get('machine_id')}": group.get("auc")})
        for path in (report.get("files") or {}).values():
            self.log_artifact(path, "evaluation")


def _log_batch(mlflow: Any, client: Any, run_id: str, params: dict, tags: dict, metrics: list) -> None:
    """log_batch within MLflow's limits per request (100 params, 100 tags, 1000 metrics)."""
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415 -- optional, as import_mlflow

    p = [Param(k, v) for k, v in params.items()]
    t = [RunTag(k, str(v)) for k, v in tags.items()]
    m = [Metric(k, v, ts, step) for k, v, step, ts in metrics]
    chunks = max(-(-len(p) // 100), -(-len(t) // 100), -(-len(m) // 1000), 1)
    for k in range(chunks):
        client.log_batch(run_id, m[k * 1000 : (k + 1) * 1000], p[k * 100 : (k + 1) * 100], t[k * 100 : (k + 1) * 100])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri and --no-track, for the commands that are tracked."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store for this run: a folder (a local store), sqlite:///..., or a tracking server http://HOST:PORT "
        "(default: $MLFLOW_TRACKING_URI, else ~/.local/state/acmon/mlflow)",
    )
    parser.add_argument("--no-track", action="store_true", help="do not log this run to MLflow")


@contextlib.contextmanager
def tracked_run(
    args: argparse.Namespace, kind: str, data: str | Path, params: Mapping[str, Any] | None = None
) -> Iterator[TrackedRun]:
    """Log one command as an MLflow run: its options, params and data fingerprint now, what the body logs, its end.

    A run that raises is ended FAILED with the error as the tag acmon.error; the exception goes on.
    """
    global _active
    if getattr(args, "no_track", False) or not Path(data).exists():  # no data: the command stops with its own error
        yield TrackedRun()
        return
    mlflow = import_mlflow()
    if mlflow is None:
        logger.info("runs are not tracked: MLflow is not installed (%s; --no-track hides this line)", INSTALL_HINT)
        yield TrackedRun()
        return
    target = resolve_target(getattr(args, "tracking_uri", None))
    fallback = local_target(default_store()) if target.remote else None
    run = TrackedRun(mlflow, target, fallback)
    tags = {"acmon.command": kind, "acmon.version": __version__, "acmon.data": str(Path(data).resolve())}
    run.start(f"{kind} {Path(data).resolve().name}", tags)
    _active = run
    status = "FAILED"
    try:
        run.log_params({"cli": args, **(params or {})})
        try:
            found = fingerprint(data, exclude=getattr(args, "out", None))
            run.log_params({"data_fingerprint": found.digest, "data_files": len(found.files)})
            run.log_metrics({"data_bytes": found.total_bytes})
            run.set_tags({"acmon.data_fingerprint": found.digest})
            run.log_text(found.table(), DATA_FILES_ARTIFACT, "data")
        except AcmonError as exc:
            run.set_tags({"acmon.data_fingerprint": f"none: {exc}"})
        yield run
        status = "FINISHED"
    except BaseException as exc:
        run.set_tags({"acmon.error": str(exc)[:MAX_PARAM_CHARS] or type(exc).__name__})
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        _active = None
        run.finish(status)


def keras_callbacks(tf: Any) -> list[Any]:
    """A Keras callback that logs each epoch's history (loss, val_loss, accuracy...) into the active run, if any."""
    if _active is None or not _active.enabled:
        return []
    run: TrackedRun = _active

    class _EpochMetrics(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            run.log_metrics(logs or {}, step=epoch + 1)

    return [_EpochMetrics()]
