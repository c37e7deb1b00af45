"""Training on an accelerator: the prepared split held in memory, augmentation and Lab on the device.

:func:`koala.train.train` streams JPEGs from disk and prepares each batch on the CPU, which suits a
laptop or Colab but cannot keep a modern GPU fed (one H100 step on a batch of 256 takes a fraction
of the time the CPU needs to decode and convert it). Here instead:

* the split's 256 × 256 uint8 photos and cached embeddings are loaded once (1,000 photos: 200 MB);
* each batch goes to the device as uint8 (a quarter of float32's bytes);
* flips, multi-scale random crops (zoom up to 2× and shifts), the sRGB → Lab conversion and the
  loss all run inside the jit-compiled training step (``keras.ops`` and Keras preprocessing layers
  only, so any backend works: JAX on the lent GPU machine, TensorFlow or PyTorch elsewhere);
* mixed precision (bfloat16 compute, float32 weights) when asked.

The head is the same :func:`koala.architectures.build_colorizer` model; only the wrapper that feeds it differs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from koala import color, data, losses
from koala.config import ColorizerConfig


def load_split(prepared: str | Path, split: str, embedder: str | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 photos (N, S, S, 3), float16 embeddings (N, 1000) or None, ids) of one split, in manifest order."""
    ids = [row["id"] for row in data.read_manifest(prepared) if row["split"] == split]
    if not ids:
        raise ValueError(f"{prepared}: the {split} split is empty")
    photos = np.stack([data.load_prepared_image(prepared, image_id) for image_id in ids])
    embeddings = None
    if embedder:
        rows = data.load_embeddings(prepared, embedder)
        if rows is None:
            raise FileNotFoundError(f"{prepared}: no cached {embedder} embeddings")
        table = np.load(data.embedding_paths(prepared, embedder)[0])
        embeddings = np.stack([table[rows[image_id]] for image_id in ids]).astype(np.float16)
    return photos, embeddings, ids


def _layers():
    import keras

    return keras, keras.layers, keras.ops


def _lab_layer_class():
    keras, layers, ops = _layers()

    @keras.saving.register_keras_serializable(package="koala")
    class RgbToScaledLab(layers.Layer):
        """sRGB 0..255 (float) -> [L scaled to [-1, 1], ab scaled by AB_SCALE], with keras.ops (the same
        formulas as :mod:`koala.color`)."""

        def __init__(self, **kwargs):
            kwargs.setdefault("dtype", "float32")
            super().__init__(**kwargs)

        def call(self, rgb):
            rgb = ops.clip(ops.cast(rgb, "float32") / 255.0, 0.0, 1.0)
            linear = ops.where(rgb > 0.04045, ops.power((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)
            xyz = ops.matmul(linear, ops.convert_to_tensor(color.XYZ_FROM_RGB.T, dtype="float32"))
            xyz = xyz / ops.convert_to_tensor(color.D65_WHITE, dtype="float32")
            safe = ops.maximum(xyz, 1e-8)
            f = ops.where(xyz > 0.008856, ops.power(safe, 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
            lightness = 116.0 * f[..., 1:2] - 16.0
            a = 500.0 * (f[..., 0:1] - f[..., 1:2])
            b = 200.0 * (f[..., 1:2] - f[..., 2:3])
            l_norm = lightness / (color.L_MAX / 2.0) - 1.0
            ab = ops.clip(ops.concatenate([a, b], axis=-1) / color.AB_SCALE, -1.0, 1.0)
            return ops.concatenate([l_norm, ab], axis=-1)

    return RgbToScaledLab


def build_trainer(head, config: ColorizerConfig, class_weights: np.ndarray | None = None, augment: bool = True):
    """Wrap ``head`` in a model that takes ``{"rgb": uint8, "embedding": ...}`` and computes its own loss."""
    keras, layers, ops = _layers()
    lab_layer = _lab_layer_class()
    loss = losses.make_loss(config.loss, class_weights, config.colorful_weight)
    loss_function = losses.mse_loss if loss == "mse" else loss

    class ColorizerTrainer(keras.Model):
        def __init__(self):
            super().__init__(name="colorizer_trainer")
            self.head = head
            self.flip = layers.RandomFlip("horizontal", seed=config.seed, dtype="float32")
            # multi-scale random crops: zoom in by up to 2x, then shift by up to 15 % of the side
            self.zoom = layers.RandomZoom((-0.5, 0.0), fill_mode="reflect", seed=config.seed + 1, dtype="float32")
            self.shift = layers.RandomTranslation(0.15, 0.15, fill_mode="reflect", seed=config.seed + 2, dtype="float32")
            if keras.backend.backend() == "jax":
                # Keras marks these two "not XLA-compatible" (TensorFlow's image op is not), which silently
                # turns jit_compile off for the whole step: op-by-op execution, and on several devices a
                # deadlock in the first gradient all-reduce. Under JAX they compile.
                self.zoom.supports_jit = self.shift.supports_jit = True
            self.to_lab = lab_layer()

        def call(self, inputs, training=False):
            rgb = ops.cast(inputs["rgb"], "float32")
            if augment and training:
                rgb = self.shift(self.zoom(self.flip(rgb, training=True), training=True), training=True)
            lab = self.to_lab(rgb)
            lightness, ab = lab[..., :1], lab[..., 1:]
            embedding = ops.cast(ops.convert_to_tensor(inputs["embedding"]), "float32")
            head_inputs = [lightness, embedding] if config.fusion else lightness
            return {"prediction": self.head(head_inputs, training=training), "target": ab}

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            target = ops.stop_gradient(y_pred["target"])
            return ops.mean(loss_function(target, y_pred["prediction"]))

    return ColorizerTrainer()


def _whole_batches(photos: np.ndarray, embeddings: np.ndarray | None, batch_size: int, seed: int, log):
    """Top the split up to a whole number of batches with copies of randomly chosen photos, so that every
    step has the same shape: a last, smaller batch would make XLA compile the whole step a second time."""
    remainder = len(photos) % batch_size
    if remainder == 0 or len(photos) < batch_size:
        return photos, embeddings
    extra = np.random.default_rng(seed).choice(len(photos), batch_size - remainder, replace=False)
    log(f"repeating {len(extra)} photos to make whole batches of {batch_size}")
    photos = np.concatenate([photos, photos[extra]])
    if embeddings is not None:
        embeddings = np.concatenate([embeddings, embeddings[extra]])
    return photos, embeddings


def _repeat_whole_split(photos: np.ndarray, embeddings: np.ndarray | None, multiple: int):
    """Repeat the whole split until its length is a multiple of ``multiple`` (the device count), so that every
    batch, the last one included, divides evenly over the devices. Each photo appears the same number of times,
    so the mean loss over the split does not change (Keras weighs each batch by its size)."""
    copies = multiple // math.gcd(len(photos), multiple)
    if copies == 1:
        return photos, embeddings
    photos = np.concatenate([photos] * copies)
    if embeddings is not None:
        embeddings = np.concatenate([embeddings] * copies)
    return photos, embeddings


def model_flops_per_image(head, image_size: int | None = None) -> float:
    """Forward FLOPs (2 × multiply-adds) of one image through the head's convolutions and dense layers,
    nested models included (``image_size`` is read from the model; the argument is kept for callers)."""
    total = 0.0
    for layer in head.layers:
        kind = layer.__class__.__name__
        if hasattr(layer, "layers") and kind in ("Functional", "Model", "Sequential"):
            total += model_flops_per_image(layer)
        elif kind == "Conv2D":
            _, height, width, filters = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            channels = layer.input.shape[-1]
            total += 2.0 * height * width * filters * kernel_height * kernel_width * channels
        elif kind == "DepthwiseConv2D":
            _, height, width, channels = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            total += 2.0 * height * width * channels * kernel_height * kernel_width
        elif kind == "Dense":
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def train_in_memory(
    config: ColorizerConfig,
    *,
    seconds: float | None = None,
    deadline: float | None = None,
    cosine: bool = False,
    validate_every: int = 1,
    mixed_precision: bool = False,
    distribute: bool = False,
    log=print,
) -> dict:
    """Train ``config`` with the in-memory pipeline; stop after ``config.epochs``, after ``seconds`` of
    training (counted from the end of the first, compiling epoch) or at the wall-clock time ``deadline``
    (``time.time()`` seconds), whichever comes first.

    ``cosine``: the learning rate follows a cosine from ``config.learning_rate`` down to 5 % of it over
    the time budget or ``config.epochs``, whichever runs out first (in time as well as epochs, since the
    number of steps a time budget buys is not known in advance). ``validate_every``: validate on every n-th epoch only.

    Writes ``model.keras`` (the head), ``config.json`` and ``history.csv`` to ``config.run_dir`` and
    returns a summary (images/s, epochs, history, model FLOP utilisation inputs).
    """
    import keras

    from koala.architectures import build_colorizer
    from koala.train import class_weights_for, save_head

    if config.architecture != "koalarization":
        raise ValueError(f"the in-memory trainer trains the tutorial architecture; {config.architecture} trains "
                         "on its cached encoder features with koala train (no --in-memory)")
    devices = keras.distribution.list_devices() if distribute else []
    if distribute and config.batch_size % len(devices):
        raise ValueError(
            f"the batch size ({config.batch_size}) must be a multiple of the number of devices ({len(devices)}) "
            "to spread each batch over them"
        )
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if distribute:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        log(f"data-parallel over {len(devices)} devices: {devices}")
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        embedder = config.embedder if config.fusion else None
        photos, embeddings, ids = load_split(config.data, "train", embedder)
        try:
            validation = load_split(config.data, "validation", embedder)
        except ValueError:
            validation = None
        log(f"loaded {len(ids)} training photos ({photos.nbytes / 1e6:.0f} MB) into memory")
        photos, embeddings = _whole_batches(photos, embeddings, config.batch_size, config.seed, log)
        if distribute:  # a split smaller than a batch (then its only batch), or a validation split of any size
            photos, embeddings = _repeat_whole_split(photos, embeddings, len(devices))
            if validation:
                validation = (*_repeat_whole_split(validation[0], validation[1], len(devices)), validation[2])
        head = build_colorizer(config)
        if config.init_from:
            from koala.train import load_head

            head.set_weights(load_head(config.init_from)[0].get_weights())
        class_weights = None
        if config.loss == "classification":
            train_view = data.ColorDataset(config.data, "train")
            class_weights = class_weights_for(train_view, run_dir, log, config.rebalance)
        trainer = build_trainer(head, config, class_weights, augment=config.augment)
        trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=True)
        log(f"jit_compile={trainer.jit_compile}, dtype policy {keras.mixed_precision.global_policy().name}, "
            f"batch {config.batch_size}")

        def inputs(photo_array, embedding_array):
            values = {"rgb": photo_array}
            values["embedding"] = (
                embedding_array.astype(np.float32) if embedding_array is not None
                else np.zeros((len(photo_array), 1), np.float32)
            )
            return values

        x = inputs(photos, embeddings)
        validation_data = (inputs(validation[0], validation[1]),) if validation else None
        timer = _EpochTimer(seconds, len(photos), log, deadline=deadline,
                            base_learning_rate=config.learning_rate if cosine else None,
                            total_epochs=config.epochs)
        trainer.fit(
            x, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=2,
            validation_data=validation_data, validation_freq=max(1, validate_every), callbacks=[timer],
        )
        rows = [{"epoch": index + 1, **row} for index, row in enumerate(timer.rows)]
        config = config.replace(epochs=len(rows))
        config.save(run_dir / "config.json")
        keras.mixed_precision.set_global_policy("float32")
        save_head(head, config, run_dir / "model.keras")
        from koala.outputs import write_bytes_atomic
        from koala.train import _history_csv

        write_bytes_atomic(run_dir / "history.csv", _history_csv(rows))
        flops = model_flops_per_image(head, config.image_size)
        summary = {
            "epochs": len(rows),
            "train_images": len(ids),
            "images_per_epoch": len(photos),
            "images_per_second": timer.images_per_second(),
            "forward_gflop_per_image": flops / 1e9,
            "train_tflops": 3 * flops * timer.images_per_second() / 1e12,
            "seconds": sum(timer.durations),
            "final_loss": rows[-1]["loss"] if rows else None,
            "final_val_loss": rows[-1].get("val_loss") if rows else None,
        }
        write_bytes_atomic(run_dir / "summary.json", json.dumps(summary, indent=1).encode())
        return summary
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if distribute:
            keras.distribution.set_distribution(None)


def _callback_base():
    import keras

    return keras.callbacks.Callback


class _EpochTimer(_callback_base()):
    """Times epochs, records each epoch's logs, optionally anneals the learning rate over the time
    budget, and stops when the budget is spent. The budget starts after the first epoch, which includes
    compilation (so recipes that compile slowly are not cut short)."""

    def __init__(self, seconds: float | None, images_per_epoch: int, log, deadline: float | None = None,
                 base_learning_rate: float | None = None, floor: float = 0.05, total_epochs: int | None = None):
        super().__init__()
        self.total_epochs = total_epochs
        self.seconds = seconds
        self.deadline = deadline
        self.base_learning_rate = base_learning_rate
        self.floor = floor
        self.images_per_epoch = images_per_epoch
        self.rows: list[dict] = []
        self.log = log
        self.started = time.time()
        self.end: float | None = deadline
        self.epoch_started = 0.0
        self.learning_rate = base_learning_rate

    @property
    def durations(self) -> list[float]:
        return [row["seconds"] for row in self.rows]

    def _set_learning_rate(self, epoch: int) -> None:
        if self.base_learning_rate is None or (self.end is None and not self.total_epochs) or epoch == 0:
            return
        fraction = 0.0 if self.end is None else (time.time() - self.started) / max(self.end - self.started, 1e-9)
        if self.total_epochs:
            fraction = max(fraction, epoch / self.total_epochs)
        fraction = min(1.0, max(0.0, fraction))
        scale = self.floor + (1.0 - self.floor) * 0.5 * (1.0 + np.cos(np.pi * fraction))
        self.learning_rate = self.base_learning_rate * float(scale)
        self.model.optimizer.learning_rate = self.learning_rate

    def on_epoch_begin(self, epoch, logs=None):
        self._set_learning_rate(epoch)
        self.epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        row = {key: float(value) for key, value in (logs or {}).items()}
        row.update(seconds=round(now - self.epoch_started, 3), ended_at=round(now, 3),
                   validated=int("val_loss" in row))
        if self.learning_rate is not None:
            row["learning_rate"] = self.learning_rate
        self.rows.append(row)
        if epoch == 0:
            self.started = now
            if self.seconds is not None:
                self.end = min(self.end, now + self.seconds) if self.end is not None else now + self.seconds
        elif self.end is not None and now >= self.end:
            self.model.stop_training = True
        if self.deadline is not None and now >= self.deadline:
            self.model.stop_training = True

    def images_per_second(self) -> float:
        """Steady training throughput: epochs after the first, without a validation pass."""
        steady = [row["seconds"] for row in self.rows[1:] if not row["validated"]]
        if not steady:
            steady = [row["seconds"] for row in (self.rows[1:] or self.rows)]
        return self.images_per_epoch * len(steady) / max(sum(steady), 1e-9)
