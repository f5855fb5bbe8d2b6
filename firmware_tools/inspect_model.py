"""`inspect` and `verify`: what a model file carries, and whether this device can run it."""

from __future__ import annotations

import argparse
import json

import numpy as np

from device.analysis.bundle import is_bundle_path, read_bundle, trusted_keys_from
from device.analysis.features import extract_patch
from device.analysis.inference import AnomalyModel
from device.analysis.metadata import ModelMetadata
from device.analysis.model_file import load_metadata, sha256_hex

from .bundles import describe


def cmd_inspect(args: argparse.Namespace) -> int:
    path, data, meta = load_metadata(args.model)  # refuses a damaged file (ModelError)
    if is_bundle_path(args.model) and not args.json:
        print(describe(read_bundle(args.model)))
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(path),
                    "sha256": sha256_hex(data),
                    "size_bytes": len(data),
                    "integrity": integrity_status(meta),
                    "metadata": stored_document(meta),
                },
                indent=2,
            )
        )
        return 0
    p = meta.feature_params
    print(f"model       {path} ({len(data) / 1024:.1f} KiB, sha256 {sha256_hex(data)[:16]}...)")
    if meta.content_sha256:
        print(f"integrity   content SHA-256 verified ({meta.content_sha256[:16]}...)")
    else:
        print(
            "integrity   not recorded (made before acmon recorded a checksum): damage cannot be detected; "
            "re-export the model to add one"
        )
    print(f"name        {meta.name}  version {meta.version}  made by acmon {meta.acmon_version or '?'}")
    if meta.task == "classification":
        cv = meta.training.get("cross_validation") or {}
        folds = f"; cross-validated accuracy {cv['mean_accuracy']:.3f} over {len(cv['folds'])} folds" if cv else ""
        print(f"task        sound classification, {len(meta.labels)} classes: {', '.join(meta.labels)}{folds}")
        print(f"score       {meta.score_kind} (the top class's probability; no alarms, threshold unused)")
    else:
        print(f"score       {meta.score_kind}, threshold {meta.threshold:.6g}")
    scorer = meta.scorer
    if scorer:
        choice = scorer.choice
        figures = ", ".join(f"{name} {v['auc']:.3f}" for name, v in choice.get("candidates", {}).items())
        print(
            f"members     {' + '.join(scorer.members)} (context {scorer.context_windows} windows); chosen on "
            f"{choice.get('faulty_clips', '?')} validation fault clips against {choice.get('normal_recordings', '?')} "
            f"normal recordings, AUC {figures}"
        )
    cal = meta.calibration
    if cal:
        print(
            f"calibrated  {cal['method']} on {cal['n_windows']} held-out normal windows "
            f"({cal['held_out_seconds'] / 60:.1f} min) for {cal['false_alarms_per_day']:g} false alarm(s) per day "
            f"with {cal['patience_windows']}-window patience"
        )
        if "false_alarms_per_day_90ci" in cal:
            low, high = cal["false_alarms_per_day_90ci"]
            print(
                f"            90 % interval of the false alarms per day: {low:.3g} to {high:.3g}; "
                f"{100 * cal.get('validation_faults_alarming_share', 0):.0f} % of validation faults alarm"
            )
        if cal.get("warning"):
            print(f"warning     {cal['warning']}")
    print(
        f"front end   {p.sample_rate_hz} Hz, n_fft {p.n_fft}, STFT hop {p.stft_hop_samples}, {p.n_mels} mels "
        f"{p.fmin_hz:g}-{p.fmax_hz:g} Hz, {p.normalization} normalization (front end v{p.frontend_version})"
    )
    print(
        f"windows     {p.window_seconds:.3f} s ({p.window_samples} samples), hop {p.hop_seconds:.3f} s "
        f"({100 * (1 - p.hop_samples / p.window_samples):.0f}% overlap), patch {p.n_frames}x{p.n_mels}"
    )
    print(f"explains    {explains(meta)}")
    training = meta.training
    if training:
        print(f"trained on  {training_summary(training)}")
    return 0


def explains(meta: ModelMetadata) -> str:
    """What the model's events can say changed (device/analysis/explain.py)."""
    if meta.task == "classification":
        return "nothing: a sound classifier names classes (python -m device score) and raises no events"
    said = []
    if meta.band_levels is not None:
        said.append(f"the bands that rose (normal band levels from {meta.band_levels.windows} windows)")
    if meta.score_kind == "anomaly_probability" and len(meta.labels) > 1:
        said.append(f"the fault class ({', '.join(meta.labels[1:])})")
    if not said:
        return "nothing: no normal band levels (made before acmon recorded them); retrain to have events name bands"
    return " and ".join(said)


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a bundle as the device will (manifest, and signature with --trusted-keys), then load the model
    with this machine's runtime and run one window of noise through it."""
    keys = trusted_keys_from(args.trusted_keys)
    if is_bundle_path(args.model):
        print(describe(read_bundle(args.model, keys)))
    model = AnomalyModel(args.model, runtime=args.runtime, trusted_keys=keys)
    p = model.params
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(p.window_samples)).astype(np.float32)
    score = model.score(extract_patch(noise, p))
    if not np.isfinite(score):
        print(f"{model.path}: FAILED: score is {score}")
        return 1
    checked = "content checksum verified" if model.metadata.content_sha256 else "no content checksum (older model)"
    print(
        f"{model.path}: OK with {model.runtime.name}: {checked}; input int8 {p.n_frames}x{p.n_mels} "
        f"(scale {model.input_scale:.4g}, zero point {model.input_zero_point}), test score {score:.4g}"
    )
    return 0


def stored_document(meta: ModelMetadata) -> dict:
    """The metadata document as the file stores it (with its verified checksum, when it has one)."""
    return {**meta.document(), **({"content_sha256": meta.content_sha256} if meta.content_sha256 else {})}


def integrity_status(meta: ModelMetadata) -> str:
    """'verified' (the recorded content checksum matched at load) or 'not recorded' (a model from before it)."""
    return "verified" if meta.content_sha256 else "not recorded"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="check a model's recorded checksum; show its feature parameters, threshold and training summary"
    )
    p.add_argument("model", help="a .acmon bundle, a model.tflite or its folder")
    p.add_argument("--json", action="store_true", help="print the whole metadata document as JSON")
    p.set_defaults(func=cmd_inspect)
    p = subparsers.add_parser(
        "verify", help="check the model's recorded checksum and that this machine's TFLite runtime loads and runs it"
    )
    p.add_argument("model", help="a .acmon bundle, a model.tflite or its folder")
    p.add_argument("--trusted-keys", help="a .pub file or folder of them: a bundle's signature must verify with one")
    p.add_argument(
        "--runtime", choices=["ai_edge_litert", "tflite_runtime", "tensorflow"], help="use this runtime only"
    )
    p.set_defaults(func=cmd_verify)


def training_summary(training: dict) -> str:
    """One line on what a model was trained on, from the metadata's `training` record."""
    parts = [f"{training.get('recordings', '?')} recording(s), {training.get('seconds', 0) / 60:.1f} min of audio"]
    kind = training.get("model")
    if kind == "gaussian":
        folds = (training.get("cross_fitting") or {}).get("folds")
        parts.append(
            f"Gaussian model of {training.get('descriptors', '?')} windows"
            + (f", cross-fitted in {folds} folds" if folds else "")
        )
    elif kind:
        parts.append(
            f"{kind}, {training.get('epochs', '?')} epoch(s) of {training.get('windows_per_epoch', '?')} windows"
        )
    if training.get("skipped_recordings"):
        parts.append(f"{training['skipped_recordings']} unreadable recording(s) skipped")
    return ", ".join(parts)
