"""The frozen encoder's features of a prepared set, computed once, and batches of them for training.

A pretrained encoder that does not train gives each photo the same features in every epoch, so they are
computed once per prepared photo (like the classifier embeddings) and the decoder trains on them: a
training step no longer pays for the encoder. The cache lives in the prepared set::

    features-lite0-unet-256/
        features-4.npy    float16 (N, 64, 64, 24)    Lite0 stage 2 (1/4 of the side)
        features-8.npy    float16 (N, 32, 32, 40)    Lite0 stage 3 (1/8)
        features-16.npy   float16 (N, 16, 16, 112)   Lite0 stage 5 (1/16)
        ab.npy            float16 (N, 64, 64, 2)     the true ab, scaled, averaged over 4 x 4 pixels
        ids               one image id per line, row i of every array
        info.json         encoder, weights and size that produced them

For 256-px photos that is 336 kB a photo (3.8 GB for 11,000 photos), read through memory maps, so memory
does not grow with the set. Arrays are written under temporary names and renamed when complete. When
photos are added to (or removed from) the prepared set, the cache is rewritten for the new list of ids, but
the rows of photos it already held are copied rather than computed again; a cache made by another encoder
(``info.json`` differs) is computed again from scratch.

Augmentation on cached features: a horizontal flip of the features and the target together (the decoder
learns to colour mirrored feature maps, which a mirrored photo's features closely resemble). Random crops
would need the encoder again and are not done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from koala import color, data, lite0_unet
from koala.config import ColorizerConfig

FACTORS = (4, 8, 16)


def cache_folder(prepared: str | Path, image_size: int) -> Path:
    return Path(prepared) / f"features-{lite0_unet.ARCHITECTURE}-{image_size}"


def _info(config: ColorizerConfig) -> dict:
    return {"architecture": lite0_unet.ARCHITECTURE, "encoder_weights": config.encoder_weights or None,
            "image_size": config.image_size, "frozen_stages": lite0_unet.FROZEN_STAGES}


def _target_ab(rgb: np.ndarray) -> np.ndarray:
    """Scaled ab of a prepared photo, averaged over OUTPUT_FACTOR x OUTPUT_FACTOR blocks."""
    _, ab = color.preprocess(rgb)
    factor = lite0_unet.OUTPUT_FACTOR
    height, width = ab.shape[0] // factor, ab.shape[1] // factor
    return ab[: height * factor, : width * factor].reshape(height, factor, width, factor, 2).mean(axis=(1, 3))


def _complete_arrays(folder: Path, rows: int, row_shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The arrays of a finished cache of ``rows`` photos (memory-mapped), or {} if any is missing or misshapen."""
    arrays = {}
    for name, shape in row_shapes.items():
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return {}
        if array.shape != (rows,) + shape or array.dtype != np.float16:
            return {}
        arrays[name] = array
    return arrays


def update_features(prepared: str | Path, config: ColorizerConfig, batch_size: int = 32, progress: bool = True,
                    log=print) -> Path:
    """Compute the encoder features of every photo of a prepared set that the cache does not hold yet.

    Returns:
        The cache folder.
    """
    from tqdm import tqdm

    prepared = Path(prepared)
    folder = cache_folder(prepared, config.image_size)
    ids = [row["id"] for row in data.read_manifest(prepared)]
    if not ids:
        raise ValueError(f"{prepared}: no prepared photos (run koala prepare first)")
    info = _info(config)
    ids_path, info_path = folder / "ids", folder / "info.json"
    shapes = lite0_unet.feature_shapes(config.image_size)
    size = config.image_size // lite0_unet.OUTPUT_FACTOR
    row_shapes = {f"features-{factor}": tuple(shapes[factor]) for factor in FACTORS} | {"ab": (size, size, 2)}
    previous_ids, previous = [], {}
    if ids_path.exists() and info_path.exists() and json.loads(info_path.read_text()) == info:
        previous_ids = ids_path.read_text().split()
        if previous_ids == ids:
            return folder
        previous = _complete_arrays(folder, len(previous_ids), row_shapes)
    previous_rows = {image_id: row for row, image_id in enumerate(previous_ids)} if previous else {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ids", "info.json"):  # the cache is invalid from here until it is complete again
        (folder / name).unlink(missing_ok=True)
    kept = [(row, previous_rows[image_id]) for row, image_id in enumerate(ids) if image_id in previous_rows]
    missing = [(row, image_id) for row, image_id in enumerate(ids) if image_id not in previous_rows]
    if missing:
        reused = f", {len(kept)} copied from the previous cache" if kept else ""
        log(f"computing the frozen encoder's features of {len(missing)} photos once{reused} (cached in {folder})")
    else:
        log(f"rewriting {folder} for the prepared set's {len(ids)} photos, all copied from the previous cache")
    arrays, temporaries = {}, {}
    for name, shape in row_shapes.items():
        temporaries[name] = folder / f".{name}.npy.part"
        arrays[name] = np.lib.format.open_memmap(temporaries[name], mode="w+", dtype=np.float16,
                                                 shape=(len(ids),) + shape)
    try:
        for start in range(0, len(kept), 256):
            rows, old_rows = map(np.array, zip(*kept[start : start + 256]))
            for name, array in arrays.items():
                array[rows] = previous[name][old_rows]
        previous.clear()
        if missing:
            model = lite0_unet.build_lite0_unet(config.replace(fusion=False, loss="mse"),
                                                weights=config.encoder_weights or None)
            encoder = model.get_layer(lite0_unet.ENCODER_NAME)
        for start in tqdm(range(0, len(missing), batch_size), desc="encoder features", unit="batch",
                          disable=not progress):
            rows, chunk = zip(*missing[start : start + batch_size])
            rows = np.array(rows)
            rgb = [data.load_prepared_image(prepared, image_id) for image_id in chunk]
            lightness = np.stack([color.preprocess(item)[0] for item in rgb])
            features = encoder.predict_on_batch(lightness)
            for factor, values in zip(FACTORS, features):
                arrays[f"features-{factor}"][rows] = np.asarray(values, dtype=np.float16)
            arrays["ab"][rows] = np.stack([_target_ab(item) for item in rgb]).astype(np.float16)
        for array in arrays.values():
            array.flush()
        arrays.clear()  # closes the memory maps before the files are renamed
        for name, temporary in temporaries.items():
            os.replace(temporary, folder / f"{name}.npy")
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    from koala.outputs import write_bytes_atomic

    write_bytes_atomic(ids_path, ("\n".join(ids) + "\n").encode())
    write_bytes_atomic(info_path, json.dumps(info).encode())
    return folder


def _py_dataset_base():
    import keras

    return keras.utils.PyDataset


class FeatureDataset(_py_dataset_base()):
    """Batches ``((features_4, features_8, features_16[, embedding]), ab)`` of one split, from the cache.

    Like :class:`koala.data.ColorDataset`, a batch is a function of (seed, epoch, index) alone, so a resumed
    run gets exactly the batches an uninterrupted one would have had.
    """

    def __init__(self, prepared: str | Path, split: str, config: ColorizerConfig, *, batch_size: int = 32,
                 shuffle: bool = False, augment_features: bool = False, seed: int = 0, samples_per_epoch: int = 0,
                 **kwargs):
        super().__init__(workers=1, use_multiprocessing=False, **kwargs)
        self.prepared = Path(prepared)
        folder = cache_folder(prepared, config.image_size)
        if not (folder / "ids").exists():
            raise FileNotFoundError(f"{folder}: no encoder feature cache (koala train computes it)")
        rows = {image_id: index for index, image_id in enumerate((folder / "ids").read_text().split())}
        split_ids = [row["id"] for row in data.read_manifest(prepared) if row["split"] == split]
        self.rows = np.array([rows[image_id] for image_id in split_ids], dtype=np.int64)
        self.ids = split_ids
        self.arrays = [np.load(folder / f"features-{factor}.npy", mmap_mode="r") for factor in FACTORS]
        self.ab = np.load(folder / "ab.npy", mmap_mode="r")
        self.embeddings = None
        if config.fusion:
            embedding_rows = data.load_embeddings(prepared, config.embedder)
            if embedding_rows is None:
                raise FileNotFoundError(f"{prepared}: no cached {config.embedder} embeddings; run koala prepare")
            array = np.load(data.embedding_paths(prepared, config.embedder)[0], mmap_mode="r")
            self.embeddings = (array, np.array([embedding_rows[image_id] for image_id in split_ids], dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment_features = augment_features
        self.seed = seed
        self.samples_per_epoch = samples_per_epoch

    @property
    def batches_per_epoch(self) -> int:
        count = self.samples_per_epoch or len(self.rows)
        return (count + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def order_for(self, epoch: int) -> np.ndarray:
        """The order of the split's photos in ``epoch`` (:func:`koala.data.epoch_order`)."""
        return data.epoch_order(len(self.rows), epoch, self.seed, self.shuffle, self.samples_per_epoch)

    def load_batch(self, index: int, epoch: int = 0):
        positions = np.sort(self.order_for(epoch)[index * self.batch_size : (index + 1) * self.batch_size])
        rows = self.rows[positions]
        inputs = [np.asarray(array[rows], dtype=np.float32) for array in self.arrays]
        target = np.asarray(self.ab[rows], dtype=np.float32)
        if self.embeddings is not None:
            array, embedding_rows = self.embeddings
            inputs.append(np.asarray(array[embedding_rows[positions]], dtype=np.float32))
        if self.augment_features:
            flip = np.random.default_rng([self.seed, epoch, index, 11]).random(len(rows)) < 0.5
            for spatial in inputs[: len(FACTORS)] + [target]:
                spatial[flip] = spatial[flip][:, :, ::-1]
        return tuple(inputs), target

    def batches(self, first_epoch: int, last_epoch: int):
        for epoch in range(first_epoch, last_epoch):
            for index in range(self.batches_per_epoch):
                yield self.load_batch(index, epoch)

    def __getitem__(self, index: int):
        return self.load_batch(index)
