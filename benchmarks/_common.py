"""Helpers shared by the benchmarks: generated photos, timing, and a line describing the machine."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def machine() -> str:
    """CPU model, core count, memory, backend and versions: the line every benchmark prints first."""
    import keras
    import psutil

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 1024**3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; Python {platform.python_version()}, "
        f"Keras {keras.__version__} ({keras.backend.backend()}), NumPy {np.__version__}; "
        f"load average {load:.1f} at the start (other work on the machine skews absolute figures)"
    )


def median_seconds(function, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def median_cpu(function, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of ``function()`` over ``repeats`` calls after one warm-up call: this process's (all its
    threads, ``time.process_time``), and with its child processes' (jpegtran, say), which that does not count."""
    import resource

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    function()
    own, total = [], []
    for _ in range(repeats):
        started, started_children = time.process_time(), children()
        function()
        own.append(time.process_time() - started)
        total.append(own[-1] + children() - started_children)
    return statistics.median(own), statistics.median(total)


def add_scan_arguments(parser, repeats: int = 5) -> None:
    """``--repeats`` and the generated scan's ``--width`` and ``--height`` (a 12 MP 4000 × 3000 by default)."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)


def detailed_photo(height: int, width: int, seed: int = 0, source: str = "astronaut") -> np.ndarray:
    """A real-looking uint8 RGB photo of any size: a scikit-image photo enlarged, with film-grain noise
    and a little fine texture (so JPEG sizes and decode times are like a real scan's, not a flat image's)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photo = getattr(skimage.data, source)()
    # a random crop with the target's aspect ratio, so that photos made from one source differ
    aspect = width / height
    crop_height = min(photo.shape[0], int(photo.shape[1] / aspect))
    crop_height = int(crop_height * rng.uniform(0.75, 1.0))
    crop_width = int(crop_height * aspect)
    top = rng.integers(0, photo.shape[0] - crop_height + 1)
    left = rng.integers(0, photo.shape[1] - crop_width + 1)
    crop = photo[top : top + crop_height, left : left + crop_width]
    large = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    shift = rng.integers(0, 97, size=2)
    large += np.roll(_detail(height, width), tuple(shift), axis=(0, 1))[..., None]
    return np.clip(large, 0, 255).astype(np.uint8)


_DETAIL: dict[tuple[int, int], np.ndarray] = {}


def _detail(height: int, width: int) -> np.ndarray:
    """Film grain and a fine texture (float32, about ±10 levels), made once per size."""
    if (height, width) not in _DETAIL:
        rng = np.random.default_rng(1)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        texture = 4.0 * np.sin(x / 4.3) * np.sin(y / 6.1)
        _DETAIL[(height, width)] = texture + rng.normal(0.0, 5.0, size=(height, width)).astype(np.float32)
    return _DETAIL[(height, width)]


PHOTO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
"""scikit-image's bundled colour photos (no download needed)."""


def write_grey_jpeg(path: Path, height: int = 3000, width: int = 4000, quality: int = 90, seed: int = 0) -> Path:
    """A grey (one-channel) JPEG like a scanned black-and-white print."""
    from PIL import Image

    grey = Image.fromarray(detailed_photo(height, width, seed)).convert("L")
    grey.save(path, format="JPEG", quality=quality)
    return path


def untrained_model(folder: Path, fusion: bool, embedder: str = "efficientnet-lite0",
                    architecture: str = "koalarization") -> Path:
    """An untrained head saved as a model folder (fusion: with ``embedder``, random weights)."""
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.train import save_head

    folder.mkdir(parents=True, exist_ok=True)
    if fusion:
        config = ColorizerConfig(fusion=True, embedder=embedder, embedder_weights="", architecture=architecture)
    else:
        config = ColorizerConfig(fusion=False, embedder="", embedder_weights="", architecture=architecture)
    save_head(build_colorizer(config), config, folder / "model.keras")
    config.save(folder / "config.json")
    return folder
