"""A tiny offline photo set: crops of the colour photos bundled with scikit-image, for trying the pipeline.

The notebooks' quick mode and CI use it, so they run with no download at all::

    from koala.samples import write_sample_photos
    paths = write_sample_photos("data/sample-photos")    # about 24 colour JPEGs, a few hundred pixels each
    koala.data.prepare("data/sample-photos", "data/prepared/sample")

The crops overlap and come from six photos, so the training, validation and test splits share content:
the set shows that the steps run and what their outputs look like, not how good a model is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right")
"""scikit-image's bundled colour photographs (public domain or CC0; see ``skimage.data``)."""

MAX_CANDIDATES = 400


def sample_photo(name: str) -> np.ndarray:
    """One of :data:`SAMPLE_PHOTOS` as uint8 RGB (read from scikit-image's installed files, no download)."""
    from skimage import data as skimage_data

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)}")
    if name.startswith("motorcycle_"):
        left, right, _ = skimage_data.stereo_motorcycle()
        return np.ascontiguousarray(left if name == "motorcycle_left" else right)
    return np.ascontiguousarray(getattr(skimage_data, name)()[..., :3])


def write_sample_photos(folder: str | Path, count: int = 24, side: int = 192, seed: int = 0) -> list[Path]:
    """Write ``count`` square crops of the bundled photos as JPEGs, with at least one in every split.

    ``koala prepare`` splits by content hash (about 90 / 5 / 5 %), so a couple of dozen images can easily
    leave the validation or test split empty; crops are added (beyond ``count`` if need be) until each
    split has one. The same arguments give the same crops; files are named ``sample-NNN.jpg`` and are
    overwritten by a second call.

    Args:
        folder: where to write (created if needed).
        count: crops to write at least.
        side: side of each crop in pixels, before it is scaled down to ``side`` (crops are taken at
            40-90 % of the photo's shorter side).
        seed: chooses the crops.

    Returns:
        The paths written, in order.
    """
    import hashlib
    import io

    from PIL import Image

    from koala.data import SPLITS, split_for
    from koala.outputs import write_bytes_atomic

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos = [sample_photo(name) for name in SAMPLE_PHOTOS]
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    splits_seen: set[str] = set()
    for index in range(MAX_CANDIDATES):
        if len(paths) >= count and splits_seen == set(SPLITS):
            break
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        crop_side = int(min(height, width) * rng.uniform(0.4, 0.9))
        top = int(rng.integers(0, height - crop_side + 1))
        left = int(rng.integers(0, width - crop_side + 1))
        crop = Image.fromarray(photo[top : top + crop_side, left : left + crop_side])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = crop.resize((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=90)
        encoded = buffer.getvalue()
        split = split_for(hashlib.sha256(encoded).hexdigest()[:16])
        if len(paths) >= count and split in splits_seen:
            continue  # beyond the count, only crops that fill an empty split are worth writing
        path = folder / f"sample-{len(paths) + 1:03d}.jpg"
        write_bytes_atomic(path, encoded)
        paths.append(path)
        splits_seen.add(split)
    return paths
