"""`python -m device`: run the monitor, replay or score recordings, check a config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from .cli import make_parser, run_command, setup_logging

logger = logging.getLogger("device")


def _load_config(path: str | None):
    from .config import AcmonConfig, load_config  # noqa: PLC0415

    return load_config(path) if path else AcmonConfig()


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import load_config  # noqa: PLC0415

    load_config(args.config)
    print(f"{args.config}: OK")
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
    """Replay WAV files through the live pipeline; events as JSON lines on stdout."""
    from .runner import Runner  # noqa: PLC0415
    from .sources import WavFileStream, expand_wav_paths  # noqa: PLC0415

    cfg = _load_config(args.config)
    use_mqtt = False if args.no_mqtt else (None if args.config else False)
    runner = Runner(cfg, model_path=args.model, broker=args.broker, use_mqtt=use_mqtt)
    paths = expand_wav_paths(args.wavs)
    with runner:
        for path in paths:
            stream = WavFileStream(
                path,
                runner.model.params.sample_rate_hz,
                block_samples=args.block_samples or cfg.audio.block_samples,
                channel=args.channel if args.channel is not None else cfg.audio.channel,
                realtime=args.realtime,
            )
            summary = runner.run_stream(stream.name, stream.blocks())
            logger.info("%s: %d windows, %d event(s)", path, summary.windows, summary.events)
            if runner.stop_event.is_set():
                break
        undelivered = runner.close(flush_seconds=args.flush_seconds)
    return 3 if undelivered else 0


def cmd_score(args: argparse.Namespace) -> int:
    """One JSON line per file: its clip score and whether the detector raised an event."""
    from .runner import Runner  # noqa: PLC0415
    from .sources import WavFileStream, expand_wav_paths  # noqa: PLC0415

    cfg = _load_config(args.config)
    runner = Runner(cfg, model_path=args.model, use_mqtt=False, events_out=None)
    paths = expand_wav_paths(args.wavs)
    for path in paths:
        stream = WavFileStream(path, runner.model.params.sample_rate_hz, block_samples=cfg.audio.block_samples)
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


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon: analyse the configured source until stopped."""
    from .config import load_config  # noqa: PLC0415
    from .runner import Runner  # noqa: PLC0415
    from .sources import MicrophoneStream, RawPcmStream, WavFileStream, expand_wav_paths  # noqa: PLC0415

    cfg = load_config(args.config)
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    setup_logging("DEBUG" if args.debug else cfg.logging.level.upper())
    audio = cfg.audio
    with Runner(cfg, model_path=args.model, broker=args.broker, events_out=sys.stdout if args.print_events else None) as runner:
        runner.install_signal_handlers()
        rate = runner.model.params.sample_rate_hz
        if audio.source == "wav":
            streams = [
                WavFileStream(p, rate, audio.block_samples, audio.channel, realtime=audio.realtime)
                for p in expand_wav_paths(audio.wav_paths)
            ]
        elif audio.source == "stdin":
            streams = [
                RawPcmStream(
                    sys.stdin.buffer,
                    audio.stdin_rate_hz or rate,
                    rate,
                    audio.stdin_format,
                    audio.channels,
                    audio.channel,
                    audio.block_samples,
                )
            ]
        else:
            streams = [
                MicrophoneStream(
                    rate,
                    audio.block_samples,
                    audio.input_device,
                    audio.capture_rate_hz,
                    audio.channels,
                    audio.channel,
                    stop_event=runner.stop_event,
                )
            ]
        for stream in streams:
            runner.run_stream(stream.name, stream.blocks())
            if runner.stop_event.is_set():
                break
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, commands = make_parser("python -m device", __doc__)

    p = commands.add_parser("run", help="run the monitor on the configured source (microphone, WAV or stdin)")
    p.add_argument("--config", required=True, help="YAML config file (see configs/device.yaml)")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit 0 (valid) or 1")
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
    p.add_argument("--realtime", action="store_true", help="pace the replay at real time (default: as fast as possible)")
    p.add_argument("--block-samples", type=int, help="samples per block fed to the pipeline (default: audio.block_samples, 1024)")
    p.add_argument("--channel", type=int, help="channel of a multichannel WAV to use (default: mix all down)")
    p.add_argument(
        "--flush-seconds", type=float, default=10.0, help="wait this long for the broker to acknowledge events (seconds, default: 10)"
    )
    p.set_defaults(func=cmd_replay)

    p = commands.add_parser("score", help="score WAV files: one JSON line per file")
    p.add_argument("wavs", nargs="+", metavar="FILE", help="WAV files or folders")
    p.add_argument("--model", required=True, help="model file or folder")
    p.add_argument("--config", help="YAML config for detector settings (optional)")
    p.set_defaults(func=cmd_score)

    p = commands.add_parser("check-config", help="validate a config file and exit 0 (valid) or 1")
    p.add_argument("config", help="YAML config file")
    p.set_defaults(func=cmd_check_config)

    p = commands.add_parser("list-devices", help="list audio input devices (PortAudio)")
    p.set_defaults(func=cmd_list_devices)

    from .monitor import add_monitor_parser  # noqa: PLC0415 - the parser lives with the command (issue 5)

    add_monitor_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
