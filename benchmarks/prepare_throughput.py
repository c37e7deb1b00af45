"""Data preparation throughput: 12-megapixel colour JPEGs -> 256 × 256 training images, photos per second.

    .venv/bin/python benchmarks/prepare_throughput.py [--photos 40]

Runs :func:`koala.data.prepare` (all cores; JPEGs decoded at a reduced scale with ImageMagick's shrink-on-load,
``read_image(shrink_to=...)``) on generated, distinct 4000 × 3000 colour JPEGs (quality 90) with no embedder.
Target: ≥ 20 photos/s. Computing embeddings is a separate step, timed separately below (EfficientNet-Lite0,
random weights: the same work as the ImageNet weights).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
from pathlib import Path

from _common import PHOTO_SOURCES, detailed_photo, machine

TARGET = 20.0


def make_photos(folder: Path, count: int, height: int = 3000, width: int = 4000) -> list[Path]:
    from PIL import Image

    def one(index: int) -> Path:
        path = folder / f"photo_{index:03d}.jpg"
        photo = detailed_photo(height, width, seed=index, source=PHOTO_SOURCES[index % len(PHOTO_SOURCES)])
        Image.fromarray(photo).save(path, format="JPEG", quality=90)
        return path

    detailed_photo(64, 64)  # warm the imports
    with concurrent.futures.ThreadPoolExecutor() as pool:
        return list(pool.map(one, range(count)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    arguments = parser.parse_args(argv)
    from koala import data

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        folder = Path(folder)
        source = folder / "photos"
        source.mkdir()
        started = time.perf_counter()
        paths = make_photos(source, arguments.photos)
        megabytes = sum(path.stat().st_size for path in paths) / 1e6
        print(f"generated {len(paths)} distinct 4000 × 3000 colour JPEGs ({megabytes:.0f} MB) "
              f"in {time.perf_counter() - started:.0f} s")
        for path in paths:  # read once, so the figure is about decoding, not about a cold disk
            path.read_bytes()
        started = time.perf_counter()
        report = data.prepare(source, folder / "prepared", embedder=None, progress=False, log=lambda message: None)
        seconds = time.perf_counter() - started
        rate = len(paths) / seconds
        print(f"prepare (embedder=None): {report.added} added, {len(report.rejected)} left out, "
              f"{seconds:.2f} s -> {rate:.1f} photos/s (target >= {TARGET:g}: {'met' if rate >= TARGET else 'NOT met'})")

        started = time.perf_counter()
        embedded = data.update_embeddings(folder / "prepared", "efficientnet-lite0", weights=None, progress=False)
        embed_seconds = time.perf_counter() - started
        print(f"embeddings, EfficientNet-Lite0 (separate step, includes building the model): {embedded} images "
              f"in {embed_seconds:.2f} s -> {embedded / embed_seconds:.1f} images/s")
    return {"photos_per_second": rate, "embeddings_per_second": embedded / embed_seconds}


if __name__ == "__main__":
    main()
