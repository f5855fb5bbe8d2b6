"""`python -m training runs`: the tracked fit and evaluate runs (training/tracking.py) in the terminal.

    runs                      a table of the latest runs: id, start, command, status, data fingerprint, key metrics
    runs --show ID            one run's tags, parameters, metrics (with their per-epoch ranges) and artifacts
    runs --compare ID ID ...  runs side by side (parameters that differ, metrics; --all for every parameter)

An ID is any unique prefix of a run id (the table's first column is 8 characters).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from device.errors import AcmonError

from .tracking import EXPERIMENT, INSTALL_HINT, STORE_DB, brief, import_mlflow, open_store, resolve_target

KEY_METRICS = (
    ("auc", "auc"),
    ("pauc", "pauc"),
    ("cv_mean_accuracy", "cv_acc"),
    ("accuracy", "acc"),
    ("val_auc", "val_auc"),
    ("best_val_loss", "val_loss"),
    ("threshold", "threshold"),
)
"""Metrics shown in the table when a run has them: (metric, column label)."""
MAX_RUNS = 100_000
"""Runs read at most when an id prefix is looked up."""
MAX_CELL = 32


def _client(args: argparse.Namespace) -> tuple[Any, str | None, str]:
    """(client, experiment id or None when the store holds no run yet, where).

    Raises:
        AcmonError: MLflow is not installed, or the store cannot be read.
    """
    mlflow = import_mlflow()
    if mlflow is None:
        raise AcmonError(f"listing tracked runs needs MLflow, which is not installed: {INSTALL_HINT}")
    target = resolve_target(args.tracking_uri)
    if target.folder is not None and not (target.folder / STORE_DB).is_file():
        return None, None, str(target)  # nothing tracked there yet; do not create a store just to list it
    client, experiment_id = open_store(mlflow, target, create=False)
    return client, experiment_id, str(target)


def _search(client: Any, experiment_id: str, limit: int) -> list[Any]:
    runs: list[Any] = []
    token = None
    try:
        while len(runs) < limit:
            page = client.search_runs(
                [experiment_id],
                order_by=["attributes.start_time DESC"],
                max_results=min(1000, limit - len(runs)),
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                break
    except Exception as exc:  # noqa: BLE001 - any store failure is one line for the user
        raise AcmonError(f"tracking store: cannot list runs ({brief(exc)})") from None
    return runs


def _find(client: Any, experiment_id: str | None, where: str, prefix: str) -> Any:
    """The run whose id starts with prefix.

    Raises:
        AcmonError: no run, or several, match.
    """
    prefix = prefix.strip().lower()
    matches = [] if experiment_id is None or not prefix else _search(client, experiment_id, MAX_RUNS)
    matches = [r for r in matches if r.info.run_id.startswith(prefix)]
    if not matches:
        raise AcmonError(f"run {prefix!r}: no such run in {where} (python -m training runs lists them)")
    if len(matches) > 1:
        ids = ", ".join(r.info.run_id[:12] for r in matches[:4])
        raise AcmonError(f"run {prefix!r}: matches {len(matches)} runs ({ids}...); give more of the id")
    return matches[0]


def _started(run: Any) -> str:
    return datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary_row(run: Any) -> list[str]:
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    key = "  ".join(f"{label} {_fmt(metrics[name])}" for name, label in KEY_METRICS if name in metrics)
    model = params.get("model.name") or tags.get("mlflow.runName", "").split(" ", 1)[-1]
    sha = params.get("model.sha256", "")
    return [
        run.info.run_id[:8],
        _started(run),
        tags.get("acmon.command", "?"),
        run.info.status.lower(),
        params.get("data_fingerprint", "-")[:12],
        f"{model} {sha[:8]}".strip(),
        key,
    ]


def list_runs(args: argparse.Namespace) -> str:
    client, experiment_id, where = _client(args)
    runs = [] if experiment_id is None else _search(client, experiment_id, args.limit)
    if args.command:
        runs = [r for r in runs if r.data.tags.get("acmon.command") == args.command]
    if not runs:
        return f"no tracked runs in {where} (every python -m training fit and evaluate is logged there)"
    header = ["run", "started (UTC)", "command", "status", "data", "model", "key metrics"]
    return f"{len(runs)} run(s) in {where}, latest first\n" + _table(header, [_summary_row(r) for r in runs])


def _artifacts(client: Any, run_id: str, path: str | None = None, depth: int = 0) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth < 3:
            out += _artifacts(client, run_id, item.path, depth + 1)
        elif not item.is_dir:
            out.append(f"{item.path} ({item.file_size} bytes)")
    return out


def show_run(args: argparse.Namespace) -> str:
    client, experiment_id, where = _client(args)
    run = _find(client, experiment_id, where, args.show)
    run_id, tags = run.info.run_id, run.data.tags
    lines = [
        f"run {run_id} ({tags.get('mlflow.runName', '')}), {tags.get('acmon.command', '?')}, {run.info.status.lower()}",
        f"started {_started(run)} UTC, acmon {tags.get('acmon.version', '?')}, store {where}",
        f"data {tags.get('acmon.data', '?')} fingerprint {tags.get('acmon.data_fingerprint', '-')}",
    ]
    if "acmon.error" in tags:
        lines.append(f"error: {tags['acmon.error']}")
    if "acmon.fallback_from" in tags:
        lines.append(
            f"logged here because {tags['acmon.fallback_from']} failed: {tags.get('acmon.fallback_reason', '')}"
        )
    lines += ["", "parameters:"] + [f"  {k} = {v}" for k, v in sorted(run.data.params.items())]
    lines += ["", "metrics (last value; per-step ones with their steps and range):"]
    try:
        for name, value in sorted(run.data.metrics.items()):
            history = client.get_metric_history(run_id, name)
            if len(history) > 1:
                values = [m.value for m in history]
                span = f"  ({len(values)} steps, min {_fmt(min(values))}, max {_fmt(max(values))})"
            else:
                span = ""
            lines.append(f"  {name} = {_fmt(value)}{span}")
        artifacts = _artifacts(client, run_id)
    except Exception as exc:  # noqa: BLE001 - as in _search
        raise AcmonError(f"run {run_id[:8]}: cannot read it from {where} ({brief(exc)})") from None
    lines += ["", f"artifacts ({run.info.artifact_uri}):"] + [f"  {a}" for a in artifacts]
    return "\n".join(lines)


def compare_runs(args: argparse.Namespace) -> str:
    client, experiment_id, where = _client(args)
    runs = [_find(client, experiment_id, where, prefix) for prefix in args.compare]
    header = ["", *[r.info.run_id[:8] for r in runs]]
    rows: list[list[str]] = [
        ["command", *[r.data.tags.get("acmon.command", "?") for r in runs]],
        ["started (UTC)", *[_started(r) for r in runs]],
        ["status", *[r.info.status.lower() for r in runs]],
    ]
    hidden = 0
    for section, values in (("param", [r.data.params for r in runs]), ("metric", [r.data.metrics for r in runs])):
        rows.append([f"{section}s:", *["" for _ in runs]])
        for key in sorted(set().union(*values)):
            cells = [v.get(key, "-") for v in values]
            differ = len({str(c) for c in cells}) > 1
            if section == "param" and not differ and not args.all:
                hidden += 1
                continue
            rows.append([f"{'* ' if differ else '  '}{key}", *[_fmt(c) for c in cells]])
    note = f"\n{hidden} parameter(s) equal in all runs not shown (--all shows them)" if hidden else ""
    return _table(header, rows) + "\n(* differs)" + note


def run_runs(args: argparse.Namespace) -> int:
    if args.compare is not None and len(args.compare) < 2:
        raise AcmonError("runs --compare: give two or more run ids")
    if args.show:
        text = show_run(args)
    elif args.compare:
        text = compare_runs(args)
    else:
        text = list_runs(args)
    print(text)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list, show and compare the tracked fit and evaluate runs",
        description=f"The runs that fit and evaluate logged to MLflow (experiment {EXPERIMENT!r}), latest first: "
        "id, start, command, status, data fingerprint, model and key metrics. --show ID gives one run whole, "
        "--compare ID ID puts runs side by side. An ID is any unique prefix of a run id.",
    )
    parser.add_argument(
        "--tracking-uri",
        help="the MLflow store to read: a folder, sqlite:///..., or http://HOST:PORT "
        "(default: $MLFLOW_TRACKING_URI, else ~/.local/state/acmon/mlflow)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--show", metavar="ID", help="one run: tags, parameters, metrics and artifacts")
    what.add_argument("--compare", metavar="ID", nargs="+", help="two or more runs side by side")
    parser.add_argument("--all", action="store_true", help="with --compare: also the parameters that are equal")
    parser.add_argument("--limit", type=int, default=20, help="runs listed at most (default: 20)")
    parser.add_argument("--command", choices=("fit", "evaluate"), help="list only the runs of this command")
    parser.set_defaults(func=run_runs)
