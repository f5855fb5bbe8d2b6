"""`python -m device`: run the monitor, replay or score recordings, check a config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .daemon.cli import make_parser, run_command, setup_logging

if TYPE_CHECKING:
    from .pipeline import WindowResult

logger = logging.getLogger("device")


def _load_config(path: str | None):
    """The config file with its calibration laid over it, or all defaults without a file.

    For replay, score and calibrate: their Runner checks the model (and broker) they use.
    """
    from .daemon.daemon_config import load_daemon_config  # noqa: PLC0415
    from .settings.schema import AcmonConfig  # noqa: PLC0415

    return load_daemon_config(path, check_targets=False).config if path else AcmonConfig()


def _print_verdict(path: str, loaded) -> None:
    """check-config's output: `<file>: OK` on stdout, each warning as `warning: ...` on stderr."""
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    count = len(loaded.warnings)
    print(f"{path}: OK" + (f" ({count} warning{'s' if count > 1 else ''})" if count else ""))


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config exactly as `run` loads it (calibration laid over, model and files checked)."""
    from .daemon.daemon_config import load_daemon_config  # noqa: PLC0415

    _print_verdict(args.config, load_daemon_config(args.config))
    return 0


def cmd_list_devices(args: argparse.Namespace) -> int:
    try:
        import sounddevice as sd  # noqa: PLC0415
    except (ImportError, OSError) as exc:
        from .errors import AcmonError  # noqa: PLC0415

        raise AcmonError(f"sounddevice/PortAudio unavailable ({exc}); install: apt install libportaudio2") from None
    print(sd.query_devices())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay WAV files through the live pipeline; events as JSON lines on stdout, optionally a score plot."""
    from .audio.sources import expand_wav_paths, open_source  # noqa: PLC0415
    from .daemon.runner import Runner  # noqa: PLC0415

    cfg = _load_config(args.config)
    use_mqtt = False if args.no_mqtt else (None if args.config else False)
    runner = Runner(
        cfg,
        model_path=args.model,
        broker=args.broker,
        use_mqtt=use_mqtt,
        config_path=args.config,
        evidence=args.evidence,
    )
    paths = expand_wav_paths(args.wavs)
    trace = _ScoreTrace()
    with runner:
        for path in paths:
            stream = open_source(
                cfg.audio,
                runner.model.params.sample_rate_hz,
                path,
                channel=args.channel,
                block_samples=args.block_samples,
                realtime=args.realtime,
            )
            trace.start_stream(stream.name)
            summary = runner.run_stream(stream.name, stream.blocks(), on_window=trace.add)
            trace.next_stream()
            logger.info("%s: %d windows, %d event(s)", path, summary.windows, summary.events)
            if runner.stop_event.is_set():
                break
        undelivered = runner.close(flush_seconds=args.flush_seconds)
    if args.plot:
        from .evidence.plot import write_score_plot  # noqa: PLC0415

        write_score_plot(
            args.plot, trace.times, trace.scores, runner.settings.threshold, trace.event_spans(), trace.streams
        )
        logger.info(
            "score plot: %s (%.1f s across, threshold %.4g dashed, events shaded)",
            args.plot,
            trace.times[-1] if trace.times else 0.0,
            runner.settings.threshold,
        )
    return 3 if undelivered else 0


class _ScoreTrace:
    """Window scores and event spans of consecutive streams on one time axis, for --plot."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.scores: list[float | None] = []
        self._offset = 0.0
        self._last = 0.0
        self._spans: list[tuple[float, float]] = []
        self._open: float | None = None
        self.streams: list[tuple[float, str]] = []  # (start on the common time axis, name) per file

    def start_stream(self, name: str) -> None:
        self.streams.append((self._offset, name))

    def add(self, result: WindowResult) -> None:
        t = self._offset + result.end_seconds
        self.times.append(t)
        self.scores.append(result.score)
        self._last = t
        for transition in result.transitions:
            if transition.state == "start":
                self._open = t
            elif transition.state == "end" and self._open is not None:
                self._spans.append((self._open, t))
                self._open = None

    def next_stream(self) -> None:
        self.event_spans()  # an event still open at the end of a file ends with it
        self._offset = self._last

    def event_spans(self) -> list[tuple[float, float]]:
        if self._open is not None:
            self._spans.append((self._open, self._last))
            self._open = None
        return list(self._spans)


def cmd_score(args: argparse.Namespace) -> int:
    """One JSON line per file: its clip score and whether the detector raised an event."""
    from .analysis.model_file import load_metadata  # noqa: PLC0415
    from .audio.sources import expand_wav_paths, open_source  # noqa: PLC0415
    from .daemon.runner import Runner  # noqa: PLC0415

    cfg = _load_config(args.config)
    if load_metadata(args.model)[2].task == "classification":
        return _classify_files(args, cfg)
    runner = Runner(cfg, model_path=args.model, use_mqtt=False, events_out=None)
    paths = expand_wav_paths(args.wavs)
    for path in paths:
        stream = open_source(cfg.audio, runner.model.params.sample_rate_hz, path)
        summary = runner.run_stream(str(path), stream.blocks())
        score = summary.score
        print(
            json.dumps(
                {
                    "path": str(path),
                    "score": None if score is None else round(score, 6),
                    "max_score": round(max(summary.scores), 6) if summary.scores else None,
                    "windows": summary.windows,
                    "events": summary.events,
                    "anomaly": summary.events > 0,
                }
            ),
            flush=True,
        )
    return 0


def _classify_files(args: argparse.Namespace, cfg) -> int:
    """`score` with a sound classification model: one JSON line per file with its most probable label.

    Every window of the file is classified (no level gate: a classifier is asked what a clip is, not
    whether it is loud enough to watch) and the probabilities are averaged over the file. `score` is that
    label's probability, so each line still has a path and a score.
    """
    from .analysis.inference import AnomalyModel, classify_clip  # noqa: PLC0415
    from .audio.sources import expand_wav_paths, open_source  # noqa: PLC0415
    from .daemon.daemon_config import trusted_keys  # noqa: PLC0415
    from .pipeline import iter_patches, iter_windows  # noqa: PLC0415
    from .settings.config import feature_pins  # noqa: PLC0415

    model = AnomalyModel(args.model, expected_params=feature_pins(cfg), trusted_keys=trusted_keys(cfg))
    params = model.params
    for path in expand_wav_paths(args.wavs):
        stream = open_source(cfg.audio, params.sample_rate_hz, path)
        result = classify_clip(model, iter_patches(iter_windows(stream.blocks(), params), params))
        probability = None if result.probability is None else round(result.probability, 6)
        line = {"path": str(path), "score": probability, "label": result.label, "probability": probability}
        print(json.dumps({**line, "windows": result.windows, "probabilities": result.probabilities}), flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon: analyse the configured source until stopped."""
    from .audio.sources import expand_wav_paths, open_source  # noqa: PLC0415
    from .daemon.daemon_config import load_daemon_config  # noqa: PLC0415
    from .daemon.runner import Runner  # noqa: PLC0415

    loaded = load_daemon_config(args.config, model_path=args.model, broker=args.broker)
    if args.check_config:
        _print_verdict(args.config, loaded)
        return 0
    cfg = loaded.config
    setup_logging("DEBUG" if args.debug else cfg.logging.level.upper())
    for warning in loaded.warnings:
        logger.warning("%s", warning)
    audio = cfg.audio
    with Runner(
        cfg,
        model_path=args.model,
        broker=args.broker,
        events_out=sys.stdout if args.print_events else None,
        config_path=args.config,
        evidence=cfg.evidence.enabled,
    ) as runner:
        runner.install_signal_handlers()
        rate = runner.model.params.sample_rate_hz
        if audio.source == "wav":
            for path in expand_wav_paths(audio.wav_paths):
                stream = open_source(audio, rate, path, realtime=audio.realtime)
                runner.run_stream(stream.name, stream.blocks())
                if runner.stop_event.is_set():
                    break
        elif audio.source == "stdin":
            stream = open_source(audio, rate)
            runner.run_stream(stream.name, stream.blocks())
        else:
            runner.run_live(lambda: _microphone(cfg, rate, runner.stop_event))
    return 0


def _microphone(cfg, rate_hz: int, stop_event):
    from .audio.sources import open_source  # noqa: PLC0415

    return open_source(cfg.audio, rate_hz, stop_event=stop_event)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Learn the site's normal: threshold (and level gate if needed) from N minutes through the live pipeline."""
    from .audio.sources import expand_wav_paths, open_source  # noqa: PLC0415
    from .daemon.runner import Runner  # noqa: PLC0415
    from .daemon.site_config import rollback_calibration  # noqa: PLC0415
    from .errors import AcmonError  # noqa: PLC0415

    if args.rollback:
        path = rollback_calibration(args.config)
        _load_config(args.config)  # the restored calibration must be valid
        print(json.dumps({"rolled_back": str(path)}))
        return 0
    if args.source == "file" and not args.wavs:
        raise AcmonError("calibrate --source file: give the WAV files (or folders) to calibrate on")
    if args.source == "mic" and args.wavs:
        raise AcmonError("calibrate: WAV files are only read with --source file")
    cfg = _load_config(args.config)
    runner = Runner(
        cfg, model_path=args.model, use_mqtt=False, events_out=None, config_path=args.config, evidence=False
    )
    runner.install_signal_handlers()
    rate = runner.model.params.sample_rate_hz

    def run() -> None:
        if args.source == "mic":
            runner.run_live(lambda: _microphone(cfg, rate, runner.stop_event))
            return
        for path in expand_wav_paths(args.wavs):
            stream = open_source(cfg.audio, rate, path)
            runner.run_stream(stream.name, stream.blocks())
            if runner.stop_event.is_set():
                break

    result, error = runner.calibrate(args.minutes, run, force=args.force)
    runner.close()
    if error:
        raise AcmonError(error)
    print(json.dumps(result))
    return 0


def cmd_export_labels(args: argparse.Namespace) -> int:
    """The device's labelled alarms as a CSV manifest that `training fit --data FILE` reads."""
    from .daemon.labels import dataset_folder, export_manifest  # noqa: PLC0415

    cfg = _load_config(args.config)
    folder = dataset_folder(cfg)
    path, counts = export_manifest(folder, Path(args.out) if args.out else None)
    summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    print(
        f"{path}: {sum(counts.values())} clip(s) ({summary}); train with: python -m training fit --data {path} --out MODEL"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, commands = make_parser("python -m device", __doc__)

    p = commands.add_parser("run", help="run the monitor on the configured source (microphone, WAV or stdin)")
    p.add_argument("--config", required=True, help="YAML config file (see configs/device.yaml)")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config as check-config does (with --model and --broker if given) and exit 0 (valid) or 1",
    )
    p.add_argument("--model", help="model file or folder (default: model.path from the config)")
    p.add_argument("--broker", help="MQTT broker HOST[:PORT] (default: mqtt.host and mqtt.port from the config)")
    p.add_argument("--print-events", action="store_true", help="also print events as JSON lines on stdout")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "replay",
        help="replay WAV files through the live pipeline; events as JSON lines",
        description="Replay WAV files (or folders of them) through the same ring buffer, windows, "
        "normalization, inference and decisions as the microphone. Events are printed as JSON lines and, "
        "with --config (mqtt.enabled) or --broker, published over MQTT.",
    )
    p.add_argument("wavs", nargs="+", metavar="WAV", help="WAV files or folders")
    p.add_argument("--config", help="YAML config (device id, detector, MQTT); defaults without it")
    p.add_argument("--model", help="model file or folder (default: model.path from the config)")
    p.add_argument("--broker", help="publish to this MQTT broker HOST[:PORT]")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish, even if the config enables MQTT")
    p.add_argument(
        "--realtime", action="store_true", help="pace the replay at real time (default: as fast as possible)"
    )
    p.add_argument(
        "--block-samples", type=int, help="samples per block fed to the pipeline (default: audio.block_samples, 1024)"
    )
    p.add_argument("--channel", type=int, help="channel of a multichannel WAV to use (default: mix all down)")
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=10.0,
        help="wait this long for the broker to acknowledge events (seconds, default: 10)",
    )
    p.add_argument("--plot", metavar="PNG", help="also draw the score over time, threshold and events to this PNG file")
    p.add_argument(
        "--evidence",
        action="store_true",
        default=False,
        help="save evidence clips for events (evidence.* in the config; default: off for replays)",
    )
    p.set_defaults(func=cmd_replay)

    p = commands.add_parser(
        "calibrate",
        help="learn the site's normal sound: threshold, level gate and (Gaussian models) the site's normal statistics",
        description="Record (or read) N minutes of the site's normal sound through the live pipeline and set the "
        "threshold for calibration.false_alarms_per_day, and detector.min_rms_dbfs if quiet periods (machine off) "
        "would raise alarms. With a Gaussian model and at least 2.2 minutes of the machine running it also learns the "
        "site's normal statistics (calibration-site-*.npz), so the site's own background stops reading as a fault. "
        "Needs at least 200 analysis windows (1.8 minutes at the usual hop); refuses audio that looks like a fault "
        "(a threshold over 4 times the current one) unless --force. Written atomically to calibration.yaml in the "
        "state directory, $STATE_DIRECTORY/calibration/<site>/<device id> (run it with STATE_DIRECTORY=/var/lib/acmon "
        "as the service's user so the daemon finds it), else ~/.local/state/acmon/calibration/...; the previous one is "
        "kept as calibration.prev.yaml, and it is laid over the config at start; a running daemon picks it up on "
        "SIGHUP. While the daemon runs, the microphone may be busy: use its MQTT command calibrate {minutes} instead.",
    )
    p.add_argument(
        "wavs", nargs="*", metavar="WAV", help="with --source file: WAV files or folders of the site's sound"
    )
    p.add_argument(
        "--config",
        required=True,
        help="YAML config file (its device.site and device.id name the calibration folder in the state directory)",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="audio to calibrate on (minutes, default: 10)")
    p.add_argument(
        "--source",
        choices=("mic", "file"),
        default="mic",
        help="record the configured microphone, or read WAV files (default: mic)",
    )
    p.add_argument("--model", help="model file or folder (default: model.path from the config)")
    p.add_argument("--rollback", action="store_true", help="swap back to calibration.prev.yaml and exit")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply the calibration even if the audio looks like a fault (default: refuse it)",
    )
    p.set_defaults(func=cmd_calibrate)

    p = commands.add_parser(
        "export-labels", help="write the alarms labelled on this device (MQTT command label) as a CSV manifest for fit"
    )
    p.add_argument("--config", required=True, help="YAML config file (names the device whose dataset it is)")
    p.add_argument("--out", help="manifest to write (default: manifest.csv in the dataset folder)")
    p.set_defaults(func=cmd_export_labels)

    p = commands.add_parser(
        "score",
        help="score WAV files: one JSON line per file",
        description="One JSON line per file. An anomaly model: path, score (the clip's score), max_score, windows, "
        "events, anomaly. A sound classification model (trained on labels with no 'normal'): path, label (the most "
        "probable class over the file's windows), probability and score (both that label's mean probability), "
        "windows and probabilities (every class's).",
    )
    p.add_argument("wavs", nargs="+", metavar="FILE", help="WAV files or folders")
    p.add_argument("--model", required=True, help="model file or folder")
    p.add_argument("--config", help="YAML config for detector settings (optional)")
    p.set_defaults(func=cmd_score)

    p = commands.add_parser(
        "check-config",
        help="validate a config file as run loads it and exit 0 (valid) or 1",
        description="Validate a config exactly as `run` loads it: the file, calibration.yaml laid over it, the model "
        "(loads, matches features.*, thresholds consistent), and with MQTT on the TLS files and the password. "
        "Warnings (world-readable password file, password without TLS) go to stderr. Same verdict as "
        "`run --config FILE --check-config`.",
    )
    p.add_argument("config", help="YAML config file")
    p.set_defaults(func=cmd_check_config)

    p = commands.add_parser("list-devices", help="list audio input devices (PortAudio)")
    p.set_defaults(func=cmd_list_devices)

    from .mqtt.monitor import add_monitor_parser  # noqa: PLC0415 - the parser lives with the command (issue 5)

    add_monitor_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
