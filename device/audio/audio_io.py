"""Streaming RIFF/WAVE reading, atomic WAV writing and channel selection (numpy only).

Over 500 lines on purpose: most of it is WavReader, one streaming RIFF parser whose every header field is
bounds-checked with a one-line error (the hostile-audio tests attack each). soundfile was measured as the
alternative: identical samples, but 4-7x slower to read, +3 MB, and it reads truncated files silently and
takes 1000 channels, so reading stays here (see the README's layout notes).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from typing import Any, BinaryIO, Union

import numpy as np

from ..errors import AudioError
from ..state import atomic_open

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Formats seen in the wild, so the error message can say what the file is.
_FORMAT_TAG_NAMES = {
    0x0000: "unknown",
    0x0001: "PCM",
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x00FF: "AAC",
    0x0161: "WMA",
    0x2000: "AC-3",
    0xF1AC: "FLAC",
}

# Bytes 2..15 of every WAVE_FORMAT_EXTENSIBLE subformat GUID
# (KSDATAFORMAT_SUBTYPE_*); bytes 0..1 hold the plain format tag.
_SUBFORMAT_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

# (format tag, bits per sample) -> (sample_format name, numpy dtype of one sample)
_SUPPORTED: dict[tuple[int, int], tuple[str, np.dtype | None]] = {
    (WAVE_FORMAT_PCM, 8): ("pcm_u8", np.dtype("u1")),
    (WAVE_FORMAT_PCM, 16): ("pcm_s16", np.dtype("<i2")),
    (WAVE_FORMAT_PCM, 24): ("pcm_s24", None),  # no numpy dtype; decoded by hand
    (WAVE_FORMAT_PCM, 32): ("pcm_s32", np.dtype("<i4")),
    (WAVE_FORMAT_IEEE_FLOAT, 32): ("float32", np.dtype("<f4")),
    (WAVE_FORMAT_IEEE_FLOAT, 64): ("float64", np.dtype("<f8")),
}

# write_wav sample_format -> (format tag, bits per sample)
_WRITE_FORMATS = {
    "uint8": (WAVE_FORMAT_PCM, 8),
    "int16": (WAVE_FORMAT_PCM, 16),
    "int24": (WAVE_FORMAT_PCM, 24),
    "int32": (WAVE_FORMAT_PCM, 32),
    "float32": (WAVE_FORMAT_IEEE_FLOAT, 32),
}

# -- Audio input bounds: what a header (or a stream's settings) may claim -----------------
# Every size the reader allocates or loops over follows from these and the real file size,
# never from a header field alone.

MIN_SAMPLE_RATE_HZ = 1000
"""Lowest sample rate accepted, in hertz. Below it a header is damaged, not a recording: a 1 Hz
header on 16 kHz data would be upsampled 16000x into days of stream time and gigabytes."""

MAX_SAMPLE_RATE_HZ = 384000
"""Highest sample rate accepted, in hertz: the highest rate audio interfaces record at."""

MAX_CHANNELS = 64
"""Most interleaved channels accepted (a 64-element microphone array). A block of 1024 frames
is then at most 512 KiB of float64; 65535 channels would make it 512 MiB."""

MAX_SAMPLE_MAGNITUDE = 1e3
"""Largest believable |sample| in full-scale units (+60 dBFS). Integer PCM never exceeds 1.0;
float WAVs may go past full scale (unnormalized exports), but not by a thousand times. Larger
values, like NaN and infinities, are damage: counted, and the windows holding them not scored."""

MAX_RESAMPLE_FACTOR = 10_000
"""Largest up or down factor, after reducing rate/target by their gcd, that is resampled. The
polyphase filter has 20 * factor + 1 taps: 10000 designs in about 0.05 s and 16 MB at peak,
while a coprime 383999 Hz -> 16 kHz would take 7.7 million taps, 860 MB and 4 s. Every rate in
common use fits against 16 kHz (the largest is 44056 Hz, NTSC-locked audio: 2000/5507)."""

_MAX_CHUNKS = 4096
"""Chunks walked before the reader gives up. Real files have a handful (fmt, fact, LIST, bext,
cue, data); each chunk costs a seek and a read, and empty 8-byte chunks could fill a file."""

_FMT_READ_BYTES = 64
"""Bytes of a 'fmt ' chunk read (WAVE_FORMAT_EXTENSIBLE needs 40), whatever its size field says."""

# Sizes declared in 32-bit RIFF fields cannot describe more than this.
_MAX_CHUNK_BYTES = 0xFFFFFFFF

# Streaming writers that cannot seek back put this in the data chunk size.
_UNKNOWN_SIZE = 0xFFFFFFFF

# write_wav encodes this many frames at a time to bound peak memory.
_WRITE_BLOCK_FRAMES = 1 << 18


def _name(path: PathLike) -> str:
    """The path as the user gave it, for messages."""
    name = os.fspath(path)
    return name if isinstance(name, str) else os.fsdecode(name)


def _sox_hint(path: PathLike) -> str:
    """A sox command that converts ``path`` to 16-bit PCM WAV next to it."""
    name = _name(path)
    stem, suffix = os.path.splitext(name)
    target = stem + ("_pcm16.wav" if suffix.lower() == ".wav" else ".wav")
    return f"convert it with: sox {name} -e signed-integer -b 16 {target}"


def check_stream_format(name: str, sample_rate_hz: int, channels: int, remedy: str = "the header is damaged") -> None:
    """Refuse a sample rate or channel count outside the bounds above.

    Args:
        name: The file or stream, for the message.
        sample_rate_hz: Claimed sample rate in hertz.
        channels: Claimed number of interleaved channels.
        remedy: What the user should do or know, ending the message.

    Raises:
        AudioError: One line naming the input, the value, the supported range and the remedy.
    """
    if not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise AudioError(
            f"{name}: a sample rate of {sample_rate_hz} Hz is outside the supported "
            f"{MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz; {remedy}"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: {channels} channels is outside the supported 1..{MAX_CHANNELS}; {remedy}")


def check_resampling(name: str, from_rate_hz: int, to_rate_hz: int) -> None:
    """Refuse a rate conversion whose filter would be unreasonably large (see MAX_RESAMPLE_FACTOR).

    Raises:
        AudioError: One line naming the input, both rates and a sox command that converts it.
    """
    g = math.gcd(int(from_rate_hz), int(to_rate_hz))
    factor = max(from_rate_hz, to_rate_hz) // g
    if factor > MAX_RESAMPLE_FACTOR:
        raise AudioError(
            f"{name}: cannot resample {from_rate_hz} Hz to {to_rate_hz} Hz (the ratio reduces to "
            f"{to_rate_hz // g}/{from_rate_hz // g}, whose filter would need {20 * factor + 1} taps); "
            f"if the rate is right, convert with: sox {name} -r {to_rate_hz} out.wav"
        )


def _format_name(tag: int) -> str:
    name = _FORMAT_TAG_NAMES.get(tag)
    return f"0x{tag:04X} ({name})" if name else f"0x{tag:04X}"


def _sniff_non_wav(head: bytes) -> str:
    """Describe what a file that is not RIFF/WAVE looks like, for the error message."""
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "looks like MP3"
    if head.startswith(b"fLaC"):
        return "looks like FLAC"
    if head.startswith(b"OggS"):
        return "looks like Ogg"
    if head.startswith(b"FORM"):
        return "looks like AIFF"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "looks like MP4/M4A"
    if head.startswith(b"RIFF"):
        return f"RIFF type {head[8:12]!r}, not WAVE"
    return "no RIFF/WAVE header"


class WavReader:
    """Reads a RIFF/WAVE file block by block without loading it whole.

    Supports PCM (8-bit unsigned, 16/24/32-bit signed), IEEE float (32/64-bit)
    and WAVE_FORMAT_EXTENSIBLE with a PCM or float subformat, any number of
    channels. Unknown chunks are skipped. A data chunk that claims more bytes
    than the file holds (a recorder killed mid-write, or a streamed WAV with
    size 0xFFFFFFFF) is read as far as the file goes, with one warning: the
    audio that is there is good, and refusing it would lose the recording a
    power cut interrupted. Sizes come from the real file size, never from a
    header field alone; the sample rate and channel count must lie within
    MIN_SAMPLE_RATE_HZ..MAX_SAMPLE_RATE_HZ and 1..MAX_CHANNELS.

    Float samples that are NaN, infinite or beyond MAX_SAMPLE_MAGNITUDE are
    passed through unchanged (the pipeline gates the windows that hold them)
    and counted in ``nonfinite_samples``.

    Use as a context manager::

        with WavReader("pump.wav") as reader:
            while (block := reader.read(4096)).shape[0]:
                ...

    Attributes:
        path: The path as given.
        sample_rate_hz: Sample rate in hertz.
        channels: Number of interleaved channels.
        n_frames: Number of sample frames (one sample per channel) available.
        sample_format: "pcm_u8", "pcm_s16", "pcm_s24", "pcm_s32", "float32"
            or "float64".
        bits_per_sample: Container size of one sample in bits.
        duration_seconds: ``n_frames / sample_rate_hz``.
        nonfinite_samples: Samples read so far that are NaN, infinite or
            beyond MAX_SAMPLE_MAGNITUDE (float formats only; always 0 for PCM).
        first_nonfinite_frame: The frame holding the first of them, or None.

    Raises:
        AudioError: The file is missing, unreadable, not a WAV file, or in an
            encoding this reader does not support. One line naming the file.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = _name(path)
        self._file: BinaryIO | None = None
        self._file = self._open()
        try:
            self._parse()
        except BaseException:
            self.close()
            raise
        self._next_frame = 0
        self.nonfinite_samples = 0
        self.first_nonfinite_frame: int | None = None

    # -- parsing ---------------------------------------------------------

    def _fail(self, what: str) -> AudioError:
        # Messages are shown as is on one line; an OS message could contain a newline.
        return AudioError(f"{self.path}: {what}".replace("\n", " "))

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            raise self._fail("no such file; check the path") from None
        except IsADirectoryError:
            raise self._fail("is a directory, not a WAV file; give the path of a .wav file") from None
        except PermissionError:
            raise self._fail("permission denied; make the file readable (chmod +r) or run as its owner") from None
        except OSError as e:
            raise self._fail(f"cannot open: {e.strerror or e}") from None

    def _read_at(self, offset: int, n_bytes: int) -> bytes:
        """Up to ``n_bytes`` from ``offset`` (fewer at end of file)."""
        assert self._file is not None
        try:
            self._file.seek(offset)
            return self._file.read(n_bytes)
        except OSError as e:
            raise self._fail(f"read error: {e.strerror or e}") from None

    def _parse(self) -> None:
        assert self._file is not None
        try:
            file_size = os.fstat(self._file.fileno()).st_size
        except OSError as e:
            raise self._fail(f"cannot stat: {e.strerror or e}") from None
        if file_size == 0:
            raise self._fail("empty file (0 bytes); re-record it or choose another file")
        header = self._read_at(0, 12)
        if header[:4] == b"RIFX":
            raise self._fail(f"big-endian RIFX WAV is not supported; {_sox_hint(self.path)}")
        if header[:4] in (b"RF64", b"BW64"):
            raise self._fail(
                f"{header[:4].decode()} WAV (for files over 4 GB) is not supported; split or {_sox_hint(self.path)}"
            )
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            raise self._fail(f"not a WAV file ({_sniff_non_wav(header)}); {_sox_hint(self.path)}")

        fmt: bytes | None = None
        data_offset: int | None = None
        data_bytes = 0
        declared_data_bytes = 0
        offset = 12
        n_chunks = 0
        # The RIFF size field is ignored: streamed and truncated files get it
        # wrong, and the real file size is what bounds the chunks.
        while offset + 8 <= file_size and (fmt is None or data_offset is None):
            n_chunks += 1
            if n_chunks > _MAX_CHUNKS:
                raise self._fail(
                    f"more than {_MAX_CHUNKS} chunks before the audio format and data; "
                    "the file is damaged or not a real WAV"
                )
            chunk_header = self._read_at(offset, 8)
            if len(chunk_header) < 8:  # the file shrank while we read it
                break
            chunk_id, chunk_size = struct.unpack("<4sI", chunk_header)
            body = offset + 8
            available = file_size - body
            if chunk_id == b"fmt ":
                if fmt is None:
                    fmt = self._read_at(body, min(chunk_size, available, _FMT_READ_BYTES))
            elif chunk_id == b"data" and data_offset is None:
                data_offset = body
                declared_data_bytes = chunk_size
                data_bytes = min(chunk_size, available)
                if chunk_size > available:
                    # The data runs to the end of the file; there is nothing after it.
                    break
            # Chunks are word-aligned: an odd-sized chunk is followed by a pad byte.
            offset = body + chunk_size + (chunk_size & 1)

        if fmt is None:
            raise self._fail("no 'fmt ' chunk, so the audio format is unknown; the file is damaged or not a real WAV")
        self._parse_fmt(fmt)
        if data_offset is None:
            raise self._fail("no 'data' chunk (no audio in the file); the recording was probably interrupted")

        self._data_offset = data_offset
        self.n_frames = data_bytes // self._frame_bytes
        if declared_data_bytes > data_bytes:
            if declared_data_bytes == _UNKNOWN_SIZE:
                reason = "data chunk size is 0xFFFFFFFF (streamed WAV)"
            else:
                reason = (
                    f"data chunk declares {declared_data_bytes} bytes but only {data_bytes} "
                    "are present (recording cut short?)"
                )
            logger.warning("%s: %s; reading the %s whole frames present", self.path, reason, self.n_frames)
        self.duration_seconds = self.n_frames / self.sample_rate_hz

    def _parse_fmt(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise self._fail(
                f"'fmt ' chunk is {len(fmt)} bytes, shorter than the 16 a WAV header needs; the file is damaged"
            )
        tag, channels, sample_rate_hz, byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == WAVE_FORMAT_EXTENSIBLE:
            if len(fmt) < 40:
                raise self._fail(
                    f"WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is {len(fmt)} bytes, shorter than 40; the file is damaged"
                )
            # The container size (bits) decides the decoding; fewer valid bits
            # (e.g. 20 in 24) are left-justified, so full-scale scaling holds.
            guid = fmt[24:40]
            if guid[2:] != _SUBFORMAT_GUID_TAIL:
                raise self._fail(f"unsupported WAVE_FORMAT_EXTENSIBLE subformat {guid.hex()}; {_sox_hint(self.path)}")
            (tag,) = struct.unpack("<H", guid[:2])
        if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
            raise self._fail(
                f"unsupported WAV encoding: format {_format_name(tag)}; only PCM and IEEE float are "
                f"supported; {_sox_hint(self.path)}"
            )
        supported = _SUPPORTED.get((tag, bits))
        if supported is None:
            kind = "PCM (8, 16, 24 or 32 supported)" if tag == WAVE_FORMAT_PCM else "float (32 or 64 supported)"
            raise self._fail(f"unsupported bit depth: {bits}-bit {kind}; {_sox_hint(self.path)}")
        remedy = "the header is damaged"
        frame_bytes = channels * (bits // 8)
        implied_rate_hz = byte_rate // frame_bytes if frame_bytes and byte_rate % frame_bytes == 0 else 0
        if (
            not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ
            and MIN_SAMPLE_RATE_HZ <= implied_rate_hz <= MAX_SAMPLE_RATE_HZ
        ):
            # Only the rate field is damaged: the byte rate still tells the real rate.
            remedy += f" (its byte rate says {implied_rate_hz} Hz, so the rate field alone is wrong)"
        elif channels > MAX_CHANNELS:
            remedy += f", or keep one channel with: sox {self.path} out.wav remix 1"
        check_stream_format(self.path, sample_rate_hz, channels, remedy)
        self.sample_format, self._dtype = supported
        self.bits_per_sample = bits
        self.channels = channels
        self.sample_rate_hz = sample_rate_hz
        self._frame_bytes = channels * (bits // 8)
        if block_align != self._frame_bytes:
            # Some writers get block_align wrong; the sample size and channel
            # count are what decide the layout.
            logger.warning(
                "%s: header block_align is %s but %s channels of %s-bit samples take %s bytes; using %s",
                self.path,
                block_align,
                channels,
                bits,
                self._frame_bytes,
                self._frame_bytes,
            )

    # -- reading ---------------------------------------------------------

    def read(self, n_frames: int | None = None) -> np.ndarray:
        """Read the next frames, scaled so that full scale is 1.0.

        Args:
            n_frames: Maximum number of frames to read; None reads all that
                remain.

        Returns:
            float32 array of shape (k, channels) with k <= n_frames; k == 0 at
            the end of the data. Unsigned 8-bit is mapped as (x - 128) / 128,
            signed n-bit as x / 2**(n - 1); float samples pass through.

        Raises:
            AudioError: The file cannot be read (I/O error).
        """
        if self._file is None:
            raise ValueError(f"{self.path}: read from a closed WavReader")
        remaining = self.n_frames - self._next_frame
        k = remaining if n_frames is None else max(0, min(int(n_frames), remaining))
        if k == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        raw = self._read_at(self._data_offset + self._next_frame * self._frame_bytes, k * self._frame_bytes)
        # The file may have shrunk since it was opened: keep whole frames only.
        k = len(raw) // self._frame_bytes
        raw = raw[: k * self._frame_bytes]
        first = self._next_frame
        self._next_frame += k
        frames = self._decode(raw).reshape(k, self.channels)
        if self.sample_format in ("float32", "float64") and k:
            self._count_nonfinite(frames, first)
        return frames

    def _count_nonfinite(self, frames: np.ndarray, first_frame: int) -> None:
        """Count samples that are NaN, infinite or beyond MAX_SAMPLE_MAGNITUDE (PCM cannot hold any)."""
        # Two reductions on the common clean block; NaN propagates through min/max and fails both tests.
        if -MAX_SAMPLE_MAGNITUDE <= frames.min() and frames.max() <= MAX_SAMPLE_MAGNITUDE:
            return
        bad = ~(np.abs(frames) <= MAX_SAMPLE_MAGNITUDE)
        self.nonfinite_samples += int(np.count_nonzero(bad))
        if self.first_nonfinite_frame is None:
            self.first_nonfinite_frame = first_frame + int(np.flatnonzero(bad.any(axis=1))[0])

    def seek(self, frame: int) -> None:
        """Position the next read() at sample frame `frame` (0-based), without decoding what lies before.

        Raises:
            ValueError: frame is outside 0..n_frames.
        """
        if not 0 <= frame <= self.n_frames:
            raise ValueError(f"{self.path}: frame {frame} outside 0..{self.n_frames}")
        self._next_frame = int(frame)

    def tell(self) -> int:
        """The frame the next read() starts at."""
        return self._next_frame

    def _decode(self, raw: bytes) -> np.ndarray:
        """Little-endian sample bytes -> float32, 1-D."""
        fmt = self.sample_format
        if fmt == "pcm_u8":
            return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        if fmt == "pcm_s24":
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
            # Sign-extend via the top byte read as int8.
            value = (
                b[:, 0].astype(np.int32)
                | (b[:, 1].astype(np.int32) << 8)
                | (b[:, 2].view(np.int8).astype(np.int32) << 16)
            )
            return value.astype(np.float32) / np.float32(8388608.0)
        samples = np.frombuffer(raw, dtype=self._dtype)
        if fmt == "pcm_s16":  # one pass: 2**-15 is exact, so this equals dividing by 32768
            return np.multiply(samples, np.float32(1.0 / 32768.0), dtype=np.float32)
        if fmt == "pcm_s32":
            # int32 -> float32 rounds to 24 significant bits; dividing by a
            # power of two is then exact, so this equals rounding x / 2**31.
            return samples.astype(np.float32) / np.float32(2147483648.0)
        # float32 copy (writable), or float64 rounded; a float64 beyond float32's range becomes inf
        # (counted by _count_nonfinite), without numpy's overflow warning.
        with np.errstate(over="ignore"):
            return samples.astype(np.float32)

    def close(self) -> None:
        """Close the file. Safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"WavReader({self.path!r}, {self.sample_rate_hz} Hz, {self.channels} ch, "
            f"{self.sample_format}, {self.n_frames} frames)"
        )


def read_wav(path: PathLike) -> tuple[np.ndarray, int]:
    """Read a whole WAV file.

    Args:
        path: The WAV file.

    Returns:
        ``(samples, sample_rate_hz)``: samples are float32 of shape
        (n_frames, channels), full scale 1.0; the sample rate is in hertz.

    Raises:
        AudioError: Anything :class:`WavReader` rejects, or the file holds no
            samples (0 frames).
    """
    with WavReader(path) as reader:
        if reader.n_frames == 0:
            raise AudioError(f"{reader.path}: no audio samples (0 frames); record or choose a non-empty file")
        return reader.read(), reader.sample_rate_hz


def to_mono(samples: np.ndarray, channel: int | None = None) -> np.ndarray:
    """Reduce multichannel audio to one channel.

    Args:
        samples: float array of shape (n, channels), or already (n,).
        channel: None mixes all channels down (their mean); an int picks that
            channel, 0-based.

    Returns:
        float32 array of shape (n,).

    Raises:
        AudioError: ``channel`` is not one of the channels present.
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        n_channels = 1
        if channel is None or channel == 0:
            return x.astype(np.float32, copy=True)
    elif x.ndim == 2:
        n_channels = x.shape[1]
        if n_channels == 0:
            raise AudioError("audio has 0 channels; nothing to convert to mono")
        if n_channels == 1 and (channel is None or channel == 0):
            return x[:, 0].astype(np.float32, copy=True)  # the mean of one channel is that channel
        if channel is None:
            # inf and -inf in one frame mix to NaN, huge values overflow to inf: both are damage the
            # pipeline gates and counts, so numpy's warning about them would only repeat it per block.
            with np.errstate(invalid="ignore", over="ignore"):
                return np.asarray(np.mean(x, axis=1, dtype=np.float32))
    else:
        raise ValueError(f"to_mono expects shape (n,) or (n, channels), got {x.shape}")
    # Negative indices are rejected rather than counted from the end: a
    # configured channel of -1 is more likely a mistake than "the last one".
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_channels:
        raise AudioError(
            f"channel {channel!r} requested but the audio has {n_channels} channel"
            f"{'s' if n_channels != 1 else ''} (valid: 0 to {n_channels - 1}); set a channel in that range"
        )
    return x[:, int(channel)].astype(np.float32, copy=True)


def _encode(block: np.ndarray, sample_format: str) -> bytes:
    """float64 (k, channels) full scale 1.0 -> interleaved little-endian sample bytes."""
    if sample_format == "float32":
        return block.astype("<f4").tobytes()
    # NaN has no integer value; write silence. Infinities clip to full scale.
    block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    if sample_format == "uint8":
        return np.clip(np.round(block * 128.0) + 128.0, 0, 255).astype("u1").tobytes()
    if sample_format == "int16":
        return np.clip(np.round(block * 32768.0), -32768, 32767).astype("<i2").tobytes()
    if sample_format == "int24":
        value = np.clip(np.round(block * 8388608.0), -8388608, 8388607).astype("<i4")
        # Keep the three low bytes of each little-endian int32.
        return value.reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
    if sample_format == "int32":
        return np.clip(np.round(block * 2147483648.0), -2147483648, 2147483647).astype("<i4").tobytes()
    raise AssertionError(sample_format)


def write_wav(path: PathLike, samples: np.ndarray, sample_rate_hz: int, sample_format: str = "int16") -> None:
    """Write float samples to a WAV file, atomically.

    The file is written to ``path + ".tmp"`` in the same folder and then
    renamed over ``path``, so a reader never sees a half-written file.

    Args:
        path: Destination file.
        samples: float array of shape (n,) or (n, channels), full scale 1.0.
            Integer formats round to nearest and clip values outside
            [-1, 1); NaN is written as 0.
        sample_rate_hz: Sample rate in hertz, positive.
        sample_format: "uint8", "int16", "int24", "int32" (PCM) or "float32"
            (IEEE float, written with the 'fact' chunk non-PCM formats need).

    Raises:
        ValueError: Bad ``samples`` shape, ``sample_rate_hz`` or ``sample_format``.
        AudioError: The file cannot be written, or is too large for WAV (4 GB).
    """
    if sample_format not in _WRITE_FORMATS:
        raise ValueError(f"sample_format must be one of {', '.join(_WRITE_FORMATS)}, got {sample_format!r}")
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"samples must have shape (n,) or (n, channels) with channels >= 1, got {np.shape(samples)}")
    if int(sample_rate_hz) != sample_rate_hz or not 0 < sample_rate_hz <= 0xFFFFFFFF:
        raise ValueError(f"sample_rate_hz must be a positive integer, got {sample_rate_hz!r}")
    name = _name(path)
    tag, bits = _WRITE_FORMATS[sample_format]
    n_frames, channels = x.shape
    if channels > 0xFFFF:
        raise ValueError(f"WAV supports at most 65535 channels, got {channels}")
    block_align = channels * bits // 8
    data_bytes = n_frames * block_align
    pad = data_bytes & 1

    if tag == WAVE_FORMAT_PCM:
        fmt = struct.pack(
            "<HHIIHH", tag, channels, int(sample_rate_hz), int(sample_rate_hz) * block_align, block_align, bits
        )
        extra = b""
    else:
        # Non-PCM formats carry cbSize (0 extra bytes) and a 'fact' chunk with the frame count.
        fmt = struct.pack(
            "<HHIIHHH", tag, channels, int(sample_rate_hz), int(sample_rate_hz) * block_align, block_align, bits, 0
        )
        extra = b"fact" + struct.pack("<II", 4, n_frames)
    riff_bytes = 4 + (8 + len(fmt)) + len(extra) + 8 + data_bytes + pad
    if riff_bytes > _MAX_CHUNK_BYTES or n_frames > 0xFFFFFFFF:
        raise AudioError(
            f"{name}: {data_bytes} bytes of audio is too large for a WAV file (4 GB limit); write shorter files"
        )
    header = (
        b"RIFF"
        + struct.pack("<I", riff_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + extra
        + b"data"
        + struct.pack("<I", data_bytes)
    )

    try:
        with atomic_open(name) as f:  # durable before the rename: a power cut cannot leave half a file at `path`
            f.write(header)
            for start in range(0, n_frames, _WRITE_BLOCK_FRAMES):
                block = x[start : start + _WRITE_BLOCK_FRAMES].astype(np.float64, copy=False)
                f.write(_encode(block, sample_format))
            if pad:
                f.write(b"\x00")
    except OSError as e:
        raise AudioError(
            f"{name}: cannot write: {e.strerror or e}; check that the folder exists and is writable".replace("\n", " ")
        ) from None


def describe_wav(path: PathLike) -> dict[str, Any]:
    """Header information of a WAV file, without reading its samples.

    Args:
        path: The WAV file.

    Returns:
        dict with keys path (str, as given), sample_rate_hz (int), channels
        (int), sample_format (str, e.g. "pcm_s16"), bits_per_sample (int),
        n_frames (int) and duration_seconds (float).

    Raises:
        AudioError: Anything :class:`WavReader` rejects.
    """
    with WavReader(path) as reader:
        return {
            "path": reader.path,
            "sample_rate_hz": reader.sample_rate_hz,
            "channels": reader.channels,
            "sample_format": reader.sample_format,
            "bits_per_sample": reader.bits_per_sample,
            "n_frames": reader.n_frames,
            "duration_seconds": reader.duration_seconds,
        }
