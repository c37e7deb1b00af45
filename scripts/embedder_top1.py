#!/usr/bin/env python
"""Top-1 accuracy of the EfficientNet-Lite0 classifier on ImageNet sample photos.

Each photo is read with Pillow, its short side resized to 256 pixels (bicubic)
and its centre 224 x 224 cropped. It is classified twice: in colour, and as
grey (Pillow's ITU-R 601-2 luma) replicated to three channels. The true class
of a photo is the position of its WordNet synset (such as ``n01440764``, found
in the file name) in the sorted list of all the synsets of the folder's file
names, which is the usual ImageNet-1k class order when the folder holds one
photo per class.

Usage:
    python scripts/embedder_top1.py [--folder ../shared/data/imagenet-samples]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from koala.efficientnet_lite import INPUT_SIZE, build_efficientnet_lite0, preprocess_input  # noqa: E402

SYNSET_PATTERN = re.compile(r"n\d{8}")
SHORT_SIDE = 256
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def load_centre_crop(path: Path) -> Image.Image:
    """Read an image as RGB, resize its short side to 256 and crop the centre 224."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    width, height = image.size
    scale = SHORT_SIDE / min(width, height)
    size = (max(SHORT_SIDE, round(width * scale)), max(SHORT_SIDE, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left = (size[0] - INPUT_SIZE) // 2
    top = (size[1] - INPUT_SIZE) // 2
    return image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))


def photos_and_labels(folder: Path) -> tuple[list[Path], numpy.ndarray]:
    """List the photos and their class indices (synset position in sorted order)."""
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    synsets = []
    for photo in photos:
        match = SYNSET_PATTERN.search(photo.name)
        if match is None:
            raise SystemExit(f"no synset (nXXXXXXXX) in the file name {photo.name}")
        synsets.append(match.group(0))
    class_of_synset = {synset: index for index, synset in enumerate(sorted(set(synsets)))}
    return photos, numpy.array([class_of_synset[s] for s in synsets])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path,
                        default=Path(__file__).resolve().parent.parent.parent
                        / "shared" / "data" / "imagenet-samples")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    arguments = parser.parse_args(argv)

    photos, labels = photos_and_labels(arguments.folder)
    class_count = len(set(labels.tolist()))
    if arguments.limit:
        photos, labels = photos[: arguments.limit], labels[: arguments.limit]
    if class_count != 1000:
        print(f"warning: {class_count} distinct synsets, not 1000; class indices may be off")

    model = build_efficientnet_lite0(weights="imagenet", classifier_activation=None)
    warm_up = numpy.zeros((arguments.batch_size, INPUT_SIZE, INPUT_SIZE, 3), numpy.float32)
    model.predict_on_batch(warm_up)  # so that tracing/compilation is not timed

    predictions = {"colour": [], "grey": []}
    reading_seconds = 0.0
    inference_seconds = {"colour": 0.0, "grey": 0.0}
    for start in range(0, len(photos), arguments.batch_size):
        began = time.perf_counter()
        crops = [load_centre_crop(p) for p in photos[start : start + arguments.batch_size]]
        colour = numpy.stack([numpy.asarray(c) for c in crops])
        grey = numpy.stack([numpy.asarray(c.convert("L")) for c in crops])
        grey = numpy.repeat(grey[..., None], 3, axis=-1)
        reading_seconds += time.perf_counter() - began
        for kind, batch in (("colour", colour), ("grey", grey)):
            began = time.perf_counter()
            logits = model.predict_on_batch(preprocess_input(batch))
            inference_seconds[kind] += time.perf_counter() - began
            predictions[kind].append(numpy.asarray(logits).argmax(axis=-1))

    count = len(photos)
    print(f"{count} photos from {arguments.folder}")
    for kind in ("colour", "grey"):
        accuracy = float((numpy.concatenate(predictions[kind]) == labels).mean())
        print(f"top-1 {kind:6s}: {accuracy:.3f}   "
              f"({1000 * inference_seconds[kind] / count:.1f} ms per image inference, "
              f"batch {arguments.batch_size})")
    print(f"reading + resizing: {1000 * reading_seconds / count:.1f} ms per image")


if __name__ == "__main__":
    main()
