"""Training throughput on this machine (images/s): the streaming trainer and the in-memory trainer.

    .venv/bin/python benchmarks/training_throughput.py [--photos 72 --epochs 3]

Both train the encoder-decoder (fusion=False) at 256 px, batch 8, on a prepared set generated here, for a few
tiny epochs; the figure is the mean over the epochs after the first (which includes tracing/compilation).
Streaming (:func:`koala.train.train`): JPEGs decoded, augmented and converted to Lab on the CPU batch by batch;
an epoch's time includes its (small) validation pass. In-memory (:func:`koala.accelerated.train_in_memory`):
the split held as uint8, augmentation and Lab inside the compiled step. The GPU figures are measured
separately (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from _common import PHOTO_SOURCES, detailed_photo, machine


def make_prepared_set(folder: Path, photos: int) -> Path:
    from PIL import Image

    from koala import data

    source = folder / "photos"
    source.mkdir(parents=True)
    for index in range(photos):
        photo = detailed_photo(300, 400, seed=index, source=PHOTO_SOURCES[index % len(PHOTO_SOURCES)])
        Image.fromarray(photo).save(source / f"photo_{index:03d}.jpg", quality=90)
    data.prepare(source, folder / "prepared", embedder=None, progress=False, log=lambda message: None)
    return folder / "prepared"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=72)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    arguments = parser.parse_args(argv)
    from koala import data
    from koala.accelerated import train_in_memory
    from koala.config import ColorizerConfig
    from koala.train import train

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        folder = Path(folder)
        prepared = make_prepared_set(folder, arguments.photos)
        train_count = sum(row["split"] == "train" for row in data.read_manifest(prepared))
        print(f"prepared set: {train_count} training images at 256 × 256; batch {arguments.batch_size}, "
              f"{arguments.epochs} epochs, fusion=False")
        config = ColorizerConfig(
            fusion=False, embedder="", embedder_weights="", data=str(prepared), epochs=arguments.epochs,
            batch_size=arguments.batch_size,
        )
        train(config.replace(run_dir=str(folder / "streaming")), verbose=0, log=lambda message: None)
        with open(folder / "streaming" / "history.csv", newline="") as handle:
            seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
        steady = seconds[1:] or seconds
        streaming = train_count * len(steady) / sum(steady)
        print(f"streaming (koala.train.train):            {streaming:5.1f} images/s "
              f"(epoch seconds: {', '.join(f'{value:.1f}' for value in seconds)})")
        summary = train_in_memory(config.replace(run_dir=str(folder / "in-memory")), log=lambda message: None)
        print(f"in memory (koala.accelerated.train_in_memory): {summary['images_per_second']:5.1f} images/s "
              f"({summary['train_tflops'] * 1000:.0f} GFLOP/s of training compute)")
    return {"streaming": streaming, "in_memory": summary["images_per_second"]}


if __name__ == "__main__":
    main()
