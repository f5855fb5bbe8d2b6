"""Audio sources: WAV files (replay) and the microphone, delivering mono float32 blocks at the model's rate."""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import AudioError
from .audio_io import MAX_SAMPLE_MAGNITUDE, WavReader, check_resampling, check_stream_format, to_mono
from .resample import StreamingResampler

if TYPE_CHECKING:
    from ..settings.schema import AudioConfig

logger = logging.getLogger(__name__)

WAV_SUFFIXES = (".wav", ".wave")


class Stream(Protocol):
    """One continuous stream of audio: a file, or the microphone from open to close."""

    name: str

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at the target rate, in order, until the stream ends."""
        ...


def expand_wav_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by their .wav files in name order.

    Raises:
        AudioError: a path does not exist, or a folder holds no .wav file.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in WAV_SUFFIXES and f.is_file())
            if not found:
                raise AudioError(f"{p}: folder contains no .wav files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise AudioError(f"{p}: no such file or folder")
    return out


def _resample(resampler: StreamingResampler | None, mono: np.ndarray) -> np.ndarray:
    """The block at the target rate (as is without a resampler).

    An infinite input sample meets the filter's zero taps (inf * 0 = NaN): numpy's warning about it is
    silenced, because the pipeline gates and counts such windows and a warning per block would flood the log.
    """
    if resampler is None:
        return mono
    with np.errstate(invalid="ignore", over="ignore"):
        return resampler.process(mono)


class WavFileStream:
    """A WAV file read block by block from disk, mixed or channel-picked to mono and resampled.

    With realtime=True blocks are released at the pace they would arrive from a
    microphone, so a replay exercises the live timing too. Samples that are NaN,
    infinite or absurd (float WAVs only) are delivered as they are, for the
    pipeline to gate, and reported in one warning naming the file at its end.

    Raises (from blocks()):
        AudioError: the file cannot be read, or its rate cannot be resampled to the target cheaply.
    """

    def __init__(
        self,
        path: str | Path,
        target_rate_hz: int,
        block_samples: int = 1024,
        channel: int | None = None,
        realtime: bool = False,
    ):
        self.path = Path(path)
        self.name = str(path)
        self.target_rate_hz = target_rate_hz
        self.block_samples = block_samples
        self.channel = channel
        self.realtime = realtime

    def blocks(self) -> Iterator[np.ndarray]:
        with WavReader(self.path) as reader:
            if reader.n_frames == 0:
                raise AudioError(f"{self.path}: no audio samples (0 frames)")
            if reader.channels > 1:
                how = f"channel {self.channel}" if self.channel is not None else "the mean of all channels"
                logger.info("%s: %d channels, using %s", self.path, reader.channels, how)
            resampler = None
            if reader.sample_rate_hz != self.target_rate_hz:
                check_resampling(self.name, reader.sample_rate_hz, self.target_rate_hz)
                logger.info("%s: resampling %d Hz to %d Hz", self.path, reader.sample_rate_hz, self.target_rate_hz)
                resampler = StreamingResampler(reader.sample_rate_hz, self.target_rate_hz)
            # Read in blocks of the file's own rate that last as long as block_samples at the target rate.
            read_frames = max(1, round(self.block_samples * reader.sample_rate_hz / self.target_rate_hz))
            start = time.monotonic()
            delivered = 0
            while True:
                frames = reader.read(read_frames)
                if len(frames) == 0:
                    break
                mono = to_mono(frames, self.channel)
                block = _resample(resampler, mono)
                if self.realtime:
                    delivered += len(block)
                    delay = start + delivered / self.target_rate_hz - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if len(block):
                    yield block
            if reader.nonfinite_samples:
                logger.warning(
                    "%s: %d sample(s) are NaN, infinite or beyond %g full scale (first at %.3f s); the file is "
                    "damaged: the analysis windows holding them were not scored",
                    self.name,
                    reader.nonfinite_samples,
                    MAX_SAMPLE_MAGNITUDE,
                    reader.first_nonfinite_frame / reader.sample_rate_hz,
                )
            if resampler is not None:
                with np.errstate(invalid="ignore", over="ignore"):
                    tail = resampler.flush()
                if len(tail):
                    yield tail


class MicrophoneStream:
    """The live microphone through sounddevice (PortAudio).

    The PortAudio callback runs on PortAudio's own thread and only copies the
    block into a bounded queue and counts overflows; everything else happens
    on the reading side. If the queue is full (analysis fell behind), the block
    is dropped and counted rather than blocking the audio thread.
    """

    def __init__(
        self,
        target_rate_hz: int,
        block_samples: int = 1024,
        input_device: str | int | None = None,
        capture_rate_hz: int | None = None,
        channels: int = 1,
        channel: int | None = None,
        queue_blocks: int = 64,
        stall_timeout_seconds: float = 5.0,
        stop_event: threading.Event | None = None,
    ):
        self.name = f"microphone:{input_device if input_device is not None else 'default'}"
        self.target_rate_hz = target_rate_hz
        self.capture_rate_hz = capture_rate_hz or target_rate_hz
        self.block_samples = block_samples
        self.input_device = input_device
        self.channels = channels
        self.channel = channel
        self.stall_timeout_seconds = stall_timeout_seconds
        self.stop_event = stop_event or threading.Event()
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self.overflows = 0
        self.dropped_blocks = 0

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped_blocks += 1

    def blocks(self) -> Iterator[np.ndarray]:
        import sounddevice as sd  # noqa: PLC0415 -- the device extra; PortAudio is loaded only when capturing

        check_stream_format(
            self.name,
            self.capture_rate_hz,
            self.channels,
            "set audio.capture_rate_hz / channels to values the microphone supports (python -m device list-devices)",
        )
        resampler = None
        if self.capture_rate_hz != self.target_rate_hz:
            check_resampling(self.name, self.capture_rate_hz, self.target_rate_hz)
            resampler = StreamingResampler(self.capture_rate_hz, self.target_rate_hz)
        read_frames = max(1, round(self.block_samples * self.capture_rate_hz / self.target_rate_hz))
        try:
            stream = sd.InputStream(
                device=self.input_device,
                samplerate=self.capture_rate_hz,
                channels=self.channels,
                dtype="float32",
                blocksize=read_frames,
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioError(
                f"microphone {self.input_device!r}: cannot open at {self.capture_rate_hz} Hz, "
                f"{self.channels} channel(s): {exc}; list devices with: python -m device list-devices"
            ) from None
        with stream:
            logger.info("capturing from %s at %d Hz", self.name, self.capture_rate_hz)
            while not self.stop_event.is_set():
                try:
                    frames = self._queue.get(timeout=self.stall_timeout_seconds)
                except queue.Empty:
                    raise AudioError(
                        f"{self.name}: no audio for {self.stall_timeout_seconds:.0f} s; the microphone hung "
                        "or was disconnected"
                    ) from None
                mono = to_mono(frames, self.channel)
                yield _resample(resampler, mono)


STDIN_FORMATS = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2147483648.0), "f32le": ("<f4", 1.0)}


class RawPcmStream:
    """Interleaved raw PCM from a byte stream, e.g. `arecord -f S16_LE -r 16000 -c 1 - | python -m device run`."""

    def __init__(
        self,
        stream,
        sample_rate_hz: int,
        target_rate_hz: int,
        sample_format: str = "s16le",
        channels: int = 1,
        channel: int | None = None,
        block_samples: int = 1024,
        name: str = "stdin",
    ):
        if sample_format not in STDIN_FORMATS:
            raise AudioError(f"{name}: unsupported raw format {sample_format!r}; use one of {sorted(STDIN_FORMATS)}")
        check_stream_format(name, sample_rate_hz, channels, "set the raw stream's rate and channels to what it carries")
        if sample_rate_hz != target_rate_hz:
            check_resampling(name, sample_rate_hz, target_rate_hz)
        self.stream = stream
        self.name = name
        self.dtype, self.full_scale = STDIN_FORMATS[sample_format]
        self.channels = channels
        self.channel = channel
        self.sample_rate_hz = sample_rate_hz
        self.target_rate_hz = target_rate_hz
        self.block_samples = block_samples

    def blocks(self) -> Iterator[np.ndarray]:
        frame_bytes = np.dtype(self.dtype).itemsize * self.channels
        resampler = None
        if self.sample_rate_hz != self.target_rate_hz:
            resampler = StreamingResampler(self.sample_rate_hz, self.target_rate_hz)
        carry = b""
        while True:
            chunk = self.stream.read(self.block_samples * frame_bytes)
            if not chunk:
                break
            data = carry + chunk
            usable = len(data) - len(data) % frame_bytes  # a read may end mid-frame
            data, carry = data[:usable], data[usable:]
            if not data:
                continue
            frames = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.channels).astype(np.float32)
            mono = to_mono(frames / np.float32(self.full_scale), self.channel)
            yield _resample(resampler, mono)
        if resampler is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                tail = resampler.flush()
            if len(tail):
                yield tail


# Blocks of a WAV file read as fast as possible (score, evaluate, replay without --realtime): about a second
# of audio. Measured with bench_pipeline.py: device score's path took 3.2 times the minimal reference with
# 1024-sample blocks, 1.6 times with 16384.
FILE_BLOCK_SAMPLES = 16384


def open_source(
    audio: AudioConfig,
    rate_hz: int,
    path: str | Path | None = None,
    *,
    channel: int | None = None,
    block_samples: int | None = None,
    realtime: bool = False,
    stop_event: Any = None,
) -> Stream:
    """The audio source a config describes, delivering mono blocks at the model's rate: the one place one is built.

    Every command that reads audio goes through here (run, replay, score, calibrate, and training's
    evaluate), so the config's `audio.channel` and `audio.block_samples` mean the same everywhere: a
    site calibrated on channel 1 is scored on channel 1, not on a mix-down.

    Args:
        audio: the config's audio section.
        rate_hz: the model's sample rate; other rates are resampled.
        path: a WAV file to read; without it, audio.source decides: 'stdin' (raw PCM on standard
            input) or 'microphone'. (Source 'wav' lists its files in audio.wav_paths: the caller
            opens each with its path.)
        channel, block_samples: override the config's (the replay command's options). A file read as fast
            as possible without block_samples is read in blocks of at least FILE_BLOCK_SAMPLES.
        realtime: pace a WAV file at its real rate (replay --realtime; run takes audio.realtime).
        stop_event: ends a microphone stream when set.
    """
    ch = audio.channel if channel is None else channel
    block = block_samples or audio.block_samples
    if path is not None:
        if not realtime and block_samples is None:
            # Nobody waits on a file read as fast as possible: larger blocks cut the per-block work (read,
            # health, commands) that dominated scoring; the windows, and so the scores, are the same.
            block = max(block, FILE_BLOCK_SAMPLES)
        return WavFileStream(path, rate_hz, block, ch, realtime=realtime)
    if audio.source == "stdin":
        return RawPcmStream(
            sys.stdin.buffer, audio.stdin_rate_hz or rate_hz, rate_hz, audio.stdin_format, audio.channels, ch, block
        )
    if audio.source == "wav":
        raise ValueError("audio.source 'wav' is opened one file at a time: pass the path")
    return MicrophoneStream(
        rate_hz, block, audio.input_device, audio.capture_rate_hz, audio.channels, ch, stop_event=stop_event
    )
