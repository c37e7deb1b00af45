"""Preparing a folder of photos for training, and streaming the prepared set to ``model.fit``.

A prepared set is a folder::

    images/<id>.jpg                  256 × 256 sRGB JPEGs (id = first 16 hex digits of the source's SHA-256)
    manifest.csv                     id, split, source, width, height   (one row per usable photo)
    rejected.csv                     source, reason                     (grey, broken, duplicate, ...)
    embeddings-<embedder>.npy        float16 (N, 1000), row i belongs to the i-th id in the .ids file
    embeddings-<embedder>.ids        one id per line
    embeddings-<embedder>.json       which weights produced them

Preparing again is incremental: known photos (by content) are not decoded again and embeddings are
only computed for new images. Originals are only ever read.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from koala import color, images, outputs

SPLITS = ("train", "validation", "test")
MANIFEST_FIELDS = ("id", "split", "source", "width", "height")
MONOCHROME_SPREAD = 8.0
"""A photo is monochrome (grey, or toned like sepia) when 99.5 % of its pixels lie within this ab distance
of its median colour, or (toned prints, whose chroma follows the lightness) of the line through grey and it. Real colour photos in our samples start at about 12; a sepia JPEG stays under 5."""


TONE_SPREAD = 3.0
"""... and a warm photo is a toned print when 99.5 % of its pixels stay within this distance of the line from
grey through its median colour. A synthetic sepia scan measures 2.6; warm colour photos (a church, a school
bus, corn) 3.2 to 7.5 in our samples: a strict limit, so that colour photos are not thrown away."""

SEPIA_HUES = (20.0, 110.0)
"""Hue angles (degrees in the ab plane) of the tones that toned prints take: red-brown to yellow."""


@dataclasses.dataclass
class PrepareReport:
    added: int = 0
    known: int = 0
    rejected: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    embedded: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        split_counts = ", ".join(f"{name} {self.counts.get(name, 0)}" for name in SPLITS)
        return (
            f"{self.added} new, {self.known} already prepared, {len(self.rejected)} left out; "
            f"split: {split_counts}; {self.embedded} embeddings computed"
        )


def split_for(image_id: str, fractions: tuple[float, float] = (0.90, 0.05)) -> str:
    """Deterministic split from the content hash: about 90 % train, 5 % validation, 5 % test."""
    position = int(image_id[:8], 16) / 0x1_0000_0000
    if position < fractions[0]:
        return "train"
    if position < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def monochrome_reason(rgb: np.ndarray) -> str | None:
    """Why a photo is unfit as a colour target (grey or a single tone, e.g. sepia), or None if it has colour."""
    ab = color.rgb_to_lab(rgb)[..., 1:].reshape(-1, 2)
    centre = np.median(ab, axis=0)
    spread = np.percentile(np.hypot(ab[:, 0] - centre[0], ab[:, 1] - centre[1]), 99.5)
    chroma = float(np.hypot(*centre))
    if spread >= MONOCHROME_SPREAD:
        # A toned print (sepia) keeps one hue while its chroma follows the lightness: its ab values spread
        # far along the half-line from grey through its median colour, but not across it nor past grey.
        if chroma < 3.0:
            return None
        # Only warm tones (sepia, brown) are treated as toning: a blue-sky or green-water photo also has
        # one hue whose chroma follows lightness, and is a colour photo.
        hue = np.degrees(np.arctan2(centre[1], centre[0]))
        if not (SEPIA_HUES[0] <= hue <= SEPIA_HUES[1]) or np.percentile(np.hypot(ab[:, 0], ab[:, 1]), 99.5) > 45:
            return None
        across = np.abs(ab[:, 0] * centre[1] - ab[:, 1] * centre[0]) / chroma
        along = (ab[:, 0] * centre[0] + ab[:, 1] * centre[1]) / chroma
        if np.percentile(across, 99.5) >= TONE_SPREAD or np.percentile(along, 0.5) <= -MONOCHROME_SPREAD:
            return None
    elif chroma < 3.0:
        return "greyscale or nearly greyscale (no colour to learn from)"
    return "monochrome: a single tone, e.g. sepia (no colour to learn from)"


def read_manifest(prepared: str | Path) -> list[dict]:
    path = Path(prepared) / "manifest.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_manifest(prepared: str | Path, rows: list[dict]) -> None:
    """Write ``manifest.csv`` (atomically) from rows like :func:`read_manifest`'s, e.g. with splits changed."""
    _write_csv(Path(prepared) / "manifest.csv", MANIFEST_FIELDS, rows)


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    outputs.write_bytes_atomic(path, buffer.getvalue().encode())


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prepare_one(path: Path, target: Path, size: int, quality: int = 95) -> tuple[int, int]:
    """Read, check and write one photo; returns its original (width, height). Raises ImageError."""
    rgb = images.read_image(path, shrink_to=2 * size)
    original = _original_size(path, rgb)
    square = images.resize_and_crop(rgb, size)
    reason = monochrome_reason(square)
    if reason:
        raise images.ImageError(path, reason)
    outputs.write_image(target, square, quality=quality)
    return original


def _original_size(path: Path, decoded: np.ndarray) -> tuple[int, int]:
    # jpeg:size decodes at a reduced scale; ask the header for the real (upright) size.
    try:
        return images.image_size(path)
    except images.ImageError:
        return decoded.shape[1], decoded.shape[0]


def prepare(
    source: str | Path,
    destination: str | Path,
    *,
    embedder: str | None = "efficientnet-lite0",
    embedder_weights: str | None = "imagenet",
    size: int = color.IMAGE_SIZE,
    quality: int = 95,
    workers: int | None = None,
    progress: bool = True,
    log=print,
) -> PrepareReport:
    """Prepare (or update) a training set from a folder tree of photos.

    Args:
        source: a folder (searched recursively) or a single photo.
        destination: the prepared set's folder (created if needed).
        embedder: name of the embedder whose embeddings to cache, or None for none.
        embedder_weights: passed to the embedder (``None`` only for tests).
        size: side of the square training images.
        workers: parallel decoders (default: all cores).
        quality: JPEG quality of the prepared images (90 makes a set about a third smaller).

    Returns:
        A :class:`PrepareReport`; rejected files are also listed in ``rejected.csv``.
    """
    from tqdm import tqdm

    source, destination = Path(source), Path(destination)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if destination.resolve() == source.resolve() or source.resolve() in destination.resolve().parents:
        raise ValueError(f"{destination}: the prepared set must not be inside the source folder")
    (destination / "images").mkdir(parents=True, exist_ok=True)
    for partial in (destination / "images").glob(".*.part"):  # left by a run killed while writing
        partial.unlink(missing_ok=True)
    images.configure_imagemagick()
    report = PrepareReport()

    rows = {row["id"]: row for row in read_manifest(destination)}
    known_sources = {row["source"]: row["id"] for row in rows.values()}
    files = images.find_images([source])

    todo: list[tuple[Path, str, str]] = []
    seen: dict[str, str] = {row_id: row["source"] for row_id, row in rows.items()}
    for path, relative in files:
        relative_name = str(relative) if source.is_dir() else path.name
        try:
            image_id = _hash_file(path)[:16]
        except OSError as error:
            report.rejected.append((relative_name, f"cannot read ({error.strerror or error})"))
            continue
        if image_id in seen:
            if seen[image_id] == relative_name or known_sources.get(relative_name) == image_id:
                report.known += 1
            else:
                report.rejected.append((relative_name, f"duplicate of {seen[image_id]}"))
            continue
        seen[image_id] = relative_name
        todo.append((path, relative_name, image_id))

    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_prepare_one, path, destination / "images" / f"{image_id}.jpg", size, quality): (relative, image_id)
            for path, relative, image_id in todo
        }
        bar = tqdm(total=len(futures), desc="prepare", unit="photo", disable=not progress)
        for future in concurrent.futures.as_completed(futures):
            relative, image_id = futures[future]
            bar.update(1)
            try:
                width, height = future.result()
            except images.ImageError as error:
                report.rejected.append((relative, error.reason))
                continue
            rows[image_id] = {
                "id": image_id,
                "split": split_for(image_id),
                "source": relative,
                "width": width,
                "height": height,
            }
            report.added += 1
        bar.close()

    ordered = sorted(rows.values(), key=lambda row: row["id"])
    write_manifest(destination, ordered)
    previous_rejects = _read_rejected(destination)
    rejected = {name: reason for name, reason in previous_rejects}
    rejected.update(dict(report.rejected))
    for row in ordered:
        rejected.pop(row["source"], None)
    _write_csv(destination / "rejected.csv", ("source", "reason"),
               [{"source": name, "reason": reason} for name, reason in sorted(rejected.items())])
    for name, reason in report.rejected:
        log(f"left out: {name}: {reason}")
    report.counts = {name: sum(row["split"] == name for row in ordered) for name in SPLITS}

    if embedder:
        report.embedded = update_embeddings(destination, embedder, embedder_weights, progress=progress)
    log(f"prepared {destination}: {report.summary()}")
    return report


def _read_rejected(destination: Path) -> list[tuple[str, str]]:
    path = destination / "rejected.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["source"], row["reason"]) for row in csv.DictReader(handle)]


def load_prepared_image(prepared: str | Path, image_id: str) -> np.ndarray:
    """A prepared 256 × 256 image (our own JPEG, read with Pillow for speed) as uint8 RGB."""
    from PIL import Image

    with Image.open(Path(prepared) / "images" / f"{image_id}.jpg") as image:
        return np.asarray(image.convert("RGB"))


def embedding_paths(prepared: str | Path, embedder: str) -> tuple[Path, Path, Path]:
    base = Path(prepared) / f"embeddings-{embedder}"
    return base.with_suffix(".npy"), base.with_suffix(".ids"), base.with_suffix(".json")


def load_embeddings(prepared: str | Path, embedder: str) -> dict[str, int] | None:
    """Map id -> row of the cached embedding array, or None if there is no cache."""
    _, ids_path, _ = embedding_paths(prepared, embedder)
    if not ids_path.exists():
        return None
    return {line: index for index, line in enumerate(ids_path.read_text().split())}


def update_embeddings(
    prepared: str | Path,
    embedder: str,
    weights: str | None = "imagenet",
    batch_size: int = 32,
    progress: bool = True,
) -> int:
    """Compute embeddings for prepared images that have none yet; returns how many were computed."""
    from tqdm import tqdm

    from koala.embedding import get_embedder

    prepared = Path(prepared)
    array_path, ids_path, info_path = embedding_paths(prepared, embedder)
    info = {"embedder": embedder, "weights": weights}
    ids = [row["id"] for row in read_manifest(prepared)]
    existing: dict[str, np.ndarray] = {}
    if array_path.exists() and ids_path.exists() and info_path.exists():
        if json.loads(info_path.read_text()) == info:
            old = np.load(array_path)
            for index, image_id in enumerate(ids_path.read_text().split()):
                existing[image_id] = old[index]
    missing = [image_id for image_id in ids if image_id not in existing]
    if not missing and len(existing) == len(ids) and array_path.exists():
        return 0
    model = get_embedder(embedder, weights) if missing else None
    for start in tqdm(range(0, len(missing), batch_size), desc=f"embed ({embedder})", disable=not progress):
        chunk = missing[start : start + batch_size]
        lightness = np.stack([color.rgb_to_lightness(load_prepared_image(prepared, i)) for i in chunk])
        vectors = model.embed_lightness(lightness, batch_size=batch_size).astype(np.float16)
        existing.update(zip(chunk, vectors))
    array = np.stack([existing[i] for i in ids]) if ids else np.zeros((0, 1000), np.float16)
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float16))
    outputs.write_bytes_atomic(array_path, buffer.getvalue())
    outputs.write_bytes_atomic(ids_path, ("\n".join(ids) + "\n").encode())
    outputs.write_bytes_atomic(info_path, json.dumps(info).encode())
    return len(missing)


def augment(rgb: np.ndarray, rng: np.random.Generator, min_scale: float = 0.6) -> np.ndarray:
    """A random horizontal flip and a random square crop (60-100 % of the side) resized back."""
    from PIL import Image

    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    size = rgb.shape[0]
    scale = rng.uniform(min_scale, 1.0)
    side = max(8, int(round(size * scale)))
    if side < size:
        top, left = rng.integers(0, size - side + 1, size=2)
        crop = np.ascontiguousarray(rgb[top : top + side, left : left + side])
        rgb = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(rgb)


def _py_dataset_base():
    import keras

    return keras.utils.PyDataset


def epoch_order(count: int, epoch: int, seed: int, shuffle: bool, samples_per_epoch: int = 0) -> np.ndarray:
    """Positions in a split of ``count`` photos, in the order ``epoch`` takes them; a function of (seed, epoch)
    alone, so a resumed run gets the batches an uninterrupted one would have had. In order without ``shuffle``;
    else a permutation, or with ``samples_per_epoch`` that many photos drawn with replacement."""
    drawn = samples_per_epoch or count
    if not shuffle:
        return np.arange(drawn) % max(1, count)
    generator = np.random.default_rng([seed, epoch])
    return generator.integers(0, count, size=drawn) if samples_per_epoch else generator.permutation(count)


class ColorDataset(_py_dataset_base()):
    """Stream batches of a prepared split from disk: ``((lightness, embedding), ab)`` or ``(lightness, ab)``.

    Each epoch draws its own order from (seed, epoch). Keras' PyDataset hooks do not say reliably which
    epoch a batch is fetched for (iterators for the next epoch are created and prefetched before it
    starts), so training feeds :meth:`batches`, a plain generator over all remaining epochs.

    Memory does not grow with the dataset: only the manifest rows and the (memory-mapped) embedding
    cache are held, and images are decoded batch by batch.
    """

    def __init__(
        self,
        prepared: str | Path,
        split: str = "train",
        *,
        batch_size: int = 16,
        embedder: str | None = None,
        augment_images: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        samples_per_epoch: int = 0,
        workers: int = 1,
        **kwargs,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.prepared = Path(prepared)
        self.ids = [row["id"] for row in read_manifest(prepared) if row["split"] == split]
        self.batch_size = batch_size
        self.augment_images = augment_images
        self.shuffle = shuffle
        self.seed = seed
        self.samples_per_epoch = samples_per_epoch
        self.embedder = embedder
        self.embeddings = None
        self.embedding_rows: dict[str, int] = {}
        if embedder:
            rows = load_embeddings(prepared, embedder)
            if rows is None:
                raise FileNotFoundError(
                    f"{self.prepared}: no cached {embedder} embeddings; run `koala prepare` with --embedder {embedder}"
                )
            missing = [image_id for image_id in self.ids if image_id not in rows]
            if missing:
                raise ValueError(f"{self.prepared}: {len(missing)} images have no {embedder} embedding; prepare again")
            self.embedding_rows = rows
            self.embeddings = np.load(embedding_paths(prepared, embedder)[0], mmap_mode="r")
        self._orders: dict[int, np.ndarray] = {}

    def order_for(self, epoch: int) -> np.ndarray:
        """The order of images in ``epoch``: a function of (seed, epoch) alone (:func:`epoch_order`)."""
        if epoch not in self._orders:
            order = epoch_order(len(self.ids), epoch, self.seed, self.shuffle, self.samples_per_epoch)
            self._orders = {key: value for key, value in self._orders.items() if key >= epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    @property
    def batches_per_epoch(self) -> int:
        count = self.samples_per_epoch or len(self.ids)
        return (count + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batches(self, first_epoch: int, last_epoch: int):
        """Yield every batch of epochs ``first_epoch`` .. ``last_epoch - 1`` in order (for ``model.fit``
        with ``steps_per_epoch=batches_per_epoch``): a resumed run gets exactly the batches that an
        uninterrupted run would have had, whatever Keras prefetches."""
        for epoch in range(first_epoch, last_epoch):
            for index in range(self.batches_per_epoch):
                lightness, embedding, ab = self.load_batch(index, epoch)
                yield (lightness, ab) if embedding is None else ((lightness, embedding), ab)

    def load_batch(self, index: int, epoch: int = 0):
        """Batch ``index`` of ``epoch`` as float32 (lightness, embedding or None, ab).

        What a batch holds depends only on (seed, epoch, index). ``dataset[index]`` (validation, as a
        Keras PyDataset) serves epoch 0.
        """
        positions = self.order_for(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, index, 7])
        lightness, ab, embedding = [], [], []
        for item in positions:
            image_id = self.ids[item]
            rgb = load_prepared_image(self.prepared, image_id)
            if self.augment_images:
                rgb = augment(rgb, rng)
            l_norm, ab_norm = color.preprocess(rgb)
            lightness.append(l_norm)
            ab.append(ab_norm)
            if self.embeddings is not None:
                embedding.append(np.asarray(self.embeddings[self.embedding_rows[image_id]], dtype=np.float32))
        lightness_batch, ab_batch = np.stack(lightness), np.stack(ab)
        embedding_batch = np.stack(embedding) if embedding else None
        return lightness_batch, embedding_batch, ab_batch

    def __getitem__(self, index: int):
        lightness, embedding, ab = self.load_batch(index)
        if embedding is None:
            return lightness, ab
        return (lightness, embedding), ab
