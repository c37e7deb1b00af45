"""Peak memory (RSS) of prepare + one training epoch on 1,000 and on 10,000 photos: it must not grow with the set.

    .venv/bin/python benchmarks/memory.py [--counts 1000 10000]

Each run is a fresh Python process (so its peak RSS, ``getrusage(RUSAGE_SELF).ru_maxrss``, is its own) that
prepares a folder of generated 300 × 200 colour JPEGs (no embedder) and then trains the encoder-decoder for one
epoch from the streaming dataset. To keep the whole benchmark under ten minutes the images are prepared at
64 × 64 (``--size``) and the epoch draws 512 images (``samples_per_epoch``), so its step count is the same for
both sizes while the dataset (manifest, file lists, validation split) grows tenfold. Target: ratio ≤ 1.2.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PHOTO_SOURCES, ROOT, detailed_photo, machine

TARGET = 1.2

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
source, destination, run_dir, size, samples = sys.argv[1:6]
from koala import data
from koala.config import ColorizerConfig
from koala.train import train

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

started = time.perf_counter()
report = data.prepare(source, destination, embedder=None, size=int(size), progress=False, log=lambda m: None)
prepared_seconds = time.perf_counter() - started
after_prepare = peak_mb()
config = ColorizerConfig(fusion=False, embedder="", embedder_weights="", data=destination, run_dir=run_dir,
                         epochs=1, batch_size=16, image_size=int(size), samples_per_epoch=int(samples))
started = time.perf_counter()
train(config, verbose=0, log=lambda m: None)
print(json.dumps({"added": report.added, "rejected": len(report.rejected), "prepare_seconds": prepared_seconds,
                  "train_seconds": time.perf_counter() - started, "peak_after_prepare_mb": after_prepare,
                  "peak_mb": peak_mb()}))
"""


def make_photos(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> Path:
        path = folder / f"photo_{index:05d}.jpg"
        photo = detailed_photo(200, 300, seed=index, source=PHOTO_SOURCES[index % len(PHOTO_SOURCES)])
        photo[index % 200, : 1 + index % 300, index % 3] ^= 0x40  # a mark of its own: no two files alike
        Image.fromarray(photo).save(path, quality=90)
        return path

    detailed_photo(200, 300)
    with concurrent.futures.ThreadPoolExecutor() as pool:
        return list(pool.map(one, range(count)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples-per-epoch", type=int, default=512)
    arguments = parser.parse_args(argv)
    print(f"machine: {machine()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        folder = Path(folder)
        started = time.perf_counter()
        photos = make_photos(folder / "all", max(arguments.counts))
        print(f"generated {len(photos)} distinct 300 × 200 colour JPEGs in {time.perf_counter() - started:.0f} s")
        for count in arguments.counts:
            source = folder / f"photos-{count}"
            source.mkdir()
            for path in photos[:count]:
                os.link(path, source / path.name)
            output = subprocess.run(
                [sys.executable, "-c", CHILD, str(source), str(folder / f"prepared-{count}"), str(folder / f"run-{count}"),
                 str(arguments.size), str(arguments.samples_per_epoch)],
                cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, check=True,
            ).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            results[count] = figures
            print(f"{count:6d} photos: prepare {figures['prepare_seconds']:.0f} s ({figures['added']} added), "
                  f"one epoch {figures['train_seconds']:.0f} s; peak RSS after prepare {figures['peak_after_prepare_mb']:.0f} MB, "
                  f"after the epoch {figures['peak_mb']:.0f} MB")
    smallest, largest = min(results), max(results)
    ratio = results[largest]["peak_mb"] / results[smallest]["peak_mb"]
    print(f"peak RSS ratio, {largest} vs {smallest} photos: {ratio:.2f} "
          f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    results["ratio"] = ratio
    return results


if __name__ == "__main__":
    main()
