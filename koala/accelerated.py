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

The head is the same :func:`koala.model.build_colorizer` model; only the wrapper that feeds it differs.
"""

from __future__ import annotations

import json
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
    loss = losses.make_loss(config.loss, class_weights)
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


def model_flops_per_image(head, image_size: int) -> float:
    """Forward FLOPs (2 × multiply-adds) of the head's convolutions for one image."""
    total = 0.0
    for layer in head.layers:
        if layer.__class__.__name__ == "Conv2D":
            _, height, width, filters = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            channels = layer.input.shape[-1]
            total += 2.0 * height * width * filters * kernel_height * kernel_width * channels
    return total


def train_in_memory(
    config: ColorizerConfig,
    *,
    seconds: float | None = None,
    mixed_precision: bool = False,
    distribute: bool = False,
    log=print,
) -> dict:
    """Train ``config`` with the in-memory pipeline; stop after ``config.epochs`` or ``seconds``.

    Writes ``model.keras`` (the head), ``config.json`` and ``history.csv`` to ``config.run_dir`` and
    returns a summary (images/s, epochs, history, model FLOP utilisation inputs).
    """
    import keras

    from koala.model import build_colorizer
    from koala.train import class_weights_for, save_head

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if distribute:
        devices = keras.distribution.list_devices()
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
        head = build_colorizer(config)
        if config.init_from:
            from koala.train import load_head

            head.set_weights(load_head(config.init_from)[0].get_weights())
        class_weights = None
        if config.loss == "classification":
            train_view = data.ColorDataset(config.data, "train")
            class_weights = class_weights_for(train_view, run_dir, log)
        trainer = build_trainer(head, config, class_weights, augment=config.augment)
        trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=True)

        def inputs(photo_array, embedding_array):
            values = {"rgb": photo_array}
            values["embedding"] = (
                embedding_array.astype(np.float32) if embedding_array is not None
                else np.zeros((len(photo_array), 1), np.float32)
            )
            return values

        x = inputs(photos, embeddings)
        validation_data = (inputs(validation[0], validation[1]),) if validation else None
        timer = _EpochTimer(seconds, len(ids), log)
        history = trainer.fit(
            x, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=2,
            validation_data=validation_data, callbacks=[timer],
        ).history
        rows = [
            {"epoch": index + 1, **{key: float(values[index]) for key, values in history.items()},
             "seconds": timer.durations[index]}
            for index in range(len(timer.durations))
        ]
        config = config.replace(epochs=len(rows))
        config.save(run_dir / "config.json")
        keras.mixed_precision.set_global_policy("float32")
        save_head(head, config, run_dir / "model.keras")
        from koala.train import _history_csv
        from koala.images import write_bytes_atomic

        write_bytes_atomic(run_dir / "history.csv", _history_csv(rows))
        flops = model_flops_per_image(head, config.image_size)
        summary = {
            "epochs": len(rows),
            "train_images": len(ids),
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
    """Times epochs and stops when the time budget is spent. The budget starts after the first epoch,
    which includes compilation (so recipes that compile slowly are not cut short)."""

    def __init__(self, seconds: float | None, images_per_epoch: int, log):
        super().__init__()
        self.seconds = seconds
        self.images_per_epoch = images_per_epoch
        self.durations: list[float] = []
        self.log = log
        self.started = time.time()
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(round(time.time() - self.epoch_started, 3))
        if epoch == 0:
            self.started = time.time()
        elif self.seconds is not None and time.time() - self.started > self.seconds:
            self.model.stop_training = True

    def images_per_second(self) -> float:
        steady = self.durations[1:] if len(self.durations) > 1 else self.durations
        return self.images_per_epoch * len(steady) / max(sum(steady), 1e-9)
