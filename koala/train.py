"""Training: ``model.fit`` on a prepared set, with checkpoints that survive being killed.

A run folder holds everything needed to continue or reproduce the run::

    config.json                    the ColorizerConfig
    state.json                     completed epochs, their history, and the checkpoint they produced
    checkpoints/epoch-NNN.keras    head + optimizer after epoch NNN (the last two are kept)
    model.keras                    the head alone, after the last completed epoch (what ``colorize`` loads)
    history.csv                    one row per completed epoch (loss, val_loss, colourfulness, ...)
    samples/epoch-NNN.png          grey / predicted / true for a few validation images
    logs/                          TensorBoard (when TensorFlow is installed)

Every file is written atomically and ``state.json`` is written last, so a run killed at any moment
(even ``kill -9``) restarts from its last completed epoch when ``train`` is called again with the
same run folder. A NaN loss stops the run without touching the last good checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from koala import color, data, outputs
from koala.config import ColorizerConfig

KEEP_CHECKPOINTS = 2
SAMPLE_COUNT = 4


class TrainingStoppedOnNaN(RuntimeError):
    """The loss became NaN or infinite; the run folder still holds the last good epoch."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    epochs_completed: int
    history: list[dict]
    stopped_on_nan: bool = False


def load_state(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"epoch": 0, "history": [], "checkpoint": None}


def _save_model_atomic(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _remove_partial_files(run_dir: Path) -> None:
    """Delete the temporary files of a run killed while saving (every save is a temporary file + rename)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        for pattern in (".tmp-*", ".*.part"):
            for partial in folder.glob(pattern):
                try:
                    partial.unlink()
                except OSError:
                    pass


def save_head(model, config: ColorizerConfig, path: str | Path, head=None) -> None:
    """Save the head alone (no optimizer state), as ``colorize`` and the service load it.

    ``model`` is the trained model: the whole head, or, for ``lite0-unet``, its decoder (then ``head``, a
    built head whose frozen encoder holds the pretrained weights, receives the decoder's weights)."""
    import keras

    from koala.architectures import build_colorizer

    path = Path(path)
    if head is None:
        head = build_colorizer(config)
    from koala.lite0_unet import DECODER_NAME

    if model.name == DECODER_NAME:
        head.get_layer(DECODER_NAME).set_weights(model.get_weights())
    else:
        head.set_weights(model.get_weights())
    if any(getattr(layer, "optimizer", None) is not None for layer in head.layers):
        # lite0-unet's head holds the very decoder the run compiles and trains: saved as it is, the file would
        # carry that optimizer's state too (Adam's two moments: 41 MB where the weights are 16). A clone has the
        # same layers and weights and no compiled state.
        lean = keras.models.clone_model(head)
        lean.set_weights(head.get_weights())
        head = lean
    _save_model_atomic(head, path)


def load_head(model_path: str | Path):
    """(model, config) from a model folder (``model.keras`` + ``config.json``) or a ``.keras`` file."""
    import keras

    from koala import fusion  # noqa: F401  (registers FusionLayer)
    from koala import lite0_unet  # noqa: F401  (registers LightnessToGrey)

    path = Path(model_path)
    if path.is_dir():
        file, config_path = path / "model.keras", path / "config.json"
    else:
        file = path
        config_path = path.parent / "config.json"
        if not config_path.exists() and path.parent.name == "checkpoints":
            config_path = path.parent.parent / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file}: no model here (expected a folder with model.keras and config.json)")
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: the model's config.json is missing")
    config = ColorizerConfig.load(config_path)
    loaded = keras.saving.load_model(str(file), compile=False)
    return loaded, config


def _history_csv(rows: list[dict]) -> bytes:
    fields: list[str] = []
    for row in rows:
        fields.extend(key for key in row if key not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _make_callbacks(config, run_dir, sample_batch, head, log):
    """``sample_batch``: (lightness, embedding, ab) of a few validation photos, or None; ``head``: for a
    model trained on cached features, the whole head that its weights go into (else None)."""
    import keras

    from koala import metrics, plots

    class StopOnNaN(keras.callbacks.Callback):
        """Stop at the first NaN/inf loss *without* a graceful end that could clean up checkpoints."""

        def __init__(self):
            super().__init__()
            self.stopped = None

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.stopped = batch
                self.model.stop_training = True

    class RunState(keras.callbacks.Callback):
        """After each good epoch: sample grid, colourfulness, checkpoint, model, history, state (last)."""

        def __init__(self, nan_guard: StopOnNaN, state: dict):
            super().__init__()
            self.nan_guard = nan_guard
            self.state = state
            self.epoch_started = time.time()
            self.sample = sample_batch
            self.head = head

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            if self.nan_guard.stopped is not None:
                return
            number = epoch + 1
            row = {"epoch": number}
            row.update({key: float(value) for key, value in logs.items()})
            row.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            row["seconds"] = round(time.time() - self.epoch_started, 2)
            if self.sample is not None:
                row.update(self._samples(number))
            checkpoint = run_dir / "checkpoints" / f"epoch-{number:03d}.keras"
            _save_model_atomic(self.model, checkpoint)
            save_head(self.model, config, run_dir / "model.keras", head=self.head)
            history = [item for item in self.state["history"] if item["epoch"] < number] + [row]
            outputs.write_bytes_atomic(run_dir / "history.csv", _history_csv(history))
            self.state.update({"epoch": number, "history": history, "checkpoint": str(checkpoint.relative_to(run_dir))})
            outputs.write_bytes_atomic(run_dir / "state.json", json.dumps(self.state, indent=1).encode())
            for old in sorted((run_dir / "checkpoints").glob("epoch-*.keras"))[:-KEEP_CHECKPOINTS]:
                old.unlink()

        def _samples(self, number: int) -> dict:
            lightness, embedding, ab = self.sample
            inputs = [lightness, embedding] if config.fusion else lightness
            if self.head is not None:
                from koala.lite0_unet import DECODER_NAME

                self.head.get_layer(DECODER_NAME).set_weights(self.model.get_weights())
            predictor = self.head if self.head is not None else self.model
            predicted_ab = ab_from_output(predictor.predict_on_batch(inputs), config, lightness.shape[1:3])
            predicted = [color.postprocess(lightness[i], predicted_ab[i]) for i in range(len(lightness))]
            truth = [color.postprocess(lightness[i], ab[i]) for i in range(len(lightness))]
            predicted_colour = float(np.mean([metrics.colorfulness(image) for image in predicted]))
            true_colour = float(np.mean([metrics.colorfulness(image) for image in truth]))
            ratio = predicted_colour / true_colour if true_colour > 0 else float("nan")
            if ratio < config.collapse_fraction:
                log(
                    f"warning: colour collapse? epoch {number}: validation predictions have colourfulness "
                    f"{predicted_colour:.1f}, {ratio:.2f} × the true photos' {true_colour:.1f} "
                    f"(warning threshold {config.collapse_fraction:.2f} ×)"
                )
            else:
                log(f"epoch {number}: colourfulness {predicted_colour:.1f} ({ratio:.2f} × the true photos')")
            count = min(SAMPLE_COUNT, len(lightness))
            grey = [color.grey_to_rgb(color.denormalize_lightness(lightness[i])[..., 0]) for i in range(count)]
            figure = plots.sample_grid(grey, predicted[:count], truth[:count], title=f"epoch {number}")
            plots.save_figure(figure, run_dir / "samples" / f"epoch-{number:03d}.png", dpi=60)
            return {
                "val_colorfulness": predicted_colour,
                "val_true_colorfulness": true_colour,
                "val_colorfulness_ratio": ratio,
            }

    return StopOnNaN, RunState


def train(config: ColorizerConfig, *, verbose: int | str = "auto", log=print) -> TrainResult:
    """Train (or continue training) a colouriser as described by ``config``.

    ``config.data`` is a prepared set (``koala prepare``) and ``config.run_dir`` the run folder. If the
    folder already holds a run, training continues after its last completed epoch; the model settings
    must then match the saved ``config.json``.

    Raises:
        TrainingStoppedOnNaN: the loss diverged; the last good epoch is kept in the run folder.
    """
    import keras

    from koala.architectures import build_colorizer, model_inputs  # noqa: F401

    if not config.data:
        raise ValueError("config.data must name a prepared set (koala prepare SRC DEST)")
    if not config.run_dir:
        raise ValueError("config.run_dir must name the run folder")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_partial_files(run_dir)
    state = load_state(run_dir)
    saved_config_path = run_dir / "config.json"
    if saved_config_path.exists() and state["epoch"] > 0:
        saved = ColorizerConfig.load(saved_config_path)
        for field in ("architecture", "fusion", "embedder", "loss", "image_size", "embedding_dim"):
            if getattr(saved, field) != getattr(config, field):
                raise ValueError(
                    f"{run_dir}: this run was started with {field}={getattr(saved, field)!r}; "
                    f"use a new run folder for {field}={getattr(config, field)!r}"
                )
    config.save(saved_config_path)
    keras.utils.set_random_seed(config.seed)

    initial_epoch = int(state["epoch"])
    if initial_epoch >= config.epochs:
        log(f"{run_dir}: already trained for {initial_epoch} epochs (asked for {config.epochs}); nothing to do")
        return TrainResult(run_dir, initial_epoch, state["history"])
    embedder = config.embedder if config.fusion else None
    lite0_unet = config.architecture == "lite0-unet"
    if lite0_unet:
        from koala import feature_cache

        feature_cache.update_features(config.data, config, log=log)
        train_data = feature_cache.FeatureDataset(
            config.data, "train", config, batch_size=config.batch_size, shuffle=True,
            augment_features=config.augment, seed=config.seed, samples_per_epoch=config.samples_per_epoch,
        )
        validation = feature_cache.FeatureDataset(config.data, "validation", config, batch_size=config.batch_size)
    else:
        train_data = data.ColorDataset(
            config.data, "train", batch_size=config.batch_size, embedder=embedder, augment_images=config.augment,
            shuffle=True, seed=config.seed, samples_per_epoch=config.samples_per_epoch,
        )
        validation = data.ColorDataset(config.data, "validation", batch_size=config.batch_size, embedder=embedder)
    if len(train_data.ids) == 0:
        raise ValueError(f"{config.data}: the training split is empty")
    validation = validation if len(validation.ids) else None
    sample_batch = None
    if validation is not None:
        # the sample grid needs photos, which the feature batches of lite0-unet do not hold
        photos = validation if not lite0_unet else data.ColorDataset(
            config.data, "validation", batch_size=config.batch_size, embedder=embedder)
        sample_batch = photos.load_batch(0)
    head = None
    if lite0_unet:
        from koala import lite0_unet as lite0_unet_module

        head = lite0_unet_module.build_lite0_unet(config, weights=config.encoder_weights or None)
    loss = _loss(config, train_data, run_dir, log)
    if initial_epoch > 0:
        checkpoint = run_dir / state["checkpoint"]
        log(f"resuming {run_dir} after epoch {initial_epoch} from {checkpoint}")
        model = keras.saving.load_model(str(checkpoint))
        fine_tuning = lite0_unet and lite0_unet_module.is_fine_tuning(model)
        asked = config.fine_tune_learning_rate if fine_tuning else config.learning_rate
        saved_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        if not np.isclose(saved_rate, asked, rtol=1e-6, atol=0.0):
            # the checkpoint's optimizer keeps its own rate; a resumed command may lower (or raise) it
            model.optimizer.learning_rate = asked
            log(f"learning rate {saved_rate:g} -> {asked:g} from epoch {initial_epoch + 1}")
    else:
        model = head.get_layer(lite0_unet_module.DECODER_NAME) if lite0_unet else build_colorizer(config)
        if config.init_from:
            source, source_config = load_head(config.init_from)
            if (source_config.fusion, source_config.embedder, source_config.architecture) != (
                config.fusion, config.embedder, config.architecture
            ):
                raise ValueError(
                    f"{config.init_from}: cannot fine-tune from a model with architecture="
                    f"{source_config.architecture!r}, fusion={source_config.fusion}, "
                    f"embedder={source_config.embedder!r} into architecture={config.architecture!r}, "
                    f"fusion={config.fusion}, embedder={config.embedder!r}"
                )
            target = head if lite0_unet else model
            if source_config.loss == config.loss or {source_config.loss, config.loss} <= {"mse", "colorful"}:
                target.set_weights(source.get_weights())
                log(f"starting from the weights of {config.init_from}")
            else:  # another output head (e.g. classes from an MSE model): every other layer's weights carry over
                fresh = copy_matching_weights(target, source)
                log(f"starting from the weights of {config.init_from}; new {config.loss} output layers: "
                    f"{', '.join(fresh)}")
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)

    stop_on_nan_class, run_state_class = _make_callbacks(config, run_dir, sample_batch, head, log)
    nan_guard = stop_on_nan_class()
    callbacks = [nan_guard, run_state_class(nan_guard, state)]
    if verbose:  # the progress line first, so that the epoch's own messages follow it, not interrupt it
        callbacks.insert(0, keras.callbacks.ProgbarLogger())
    if _has_tensorflow():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")))
    phases = [(initial_epoch, config.epochs)]
    fine_tune_after = config.fine_tune_after if lite0_unet else 0
    if 0 < fine_tune_after < config.epochs:
        phases = [(first, last) for first, last in [(initial_epoch, min(fine_tune_after, config.epochs)),
                                                    (max(initial_epoch, fine_tune_after), config.epochs)]
                  if first < last]
    for first, last in phases:
        if fine_tune_after and first >= fine_tune_after and not lite0_unet_module.is_fine_tuning(model):
            lite0_unet_module.set_fine_tuning(model, True)
            log(f"epoch {first + 1}: Lite0 stages 6-7 now train too, at learning rate {config.fine_tune_learning_rate}")
            model.compile(optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate), loss=loss)
        model.fit(
            train_data.batches(first, last),
            steps_per_epoch=train_data.batches_per_epoch,
            shuffle=False,  # the generator already draws each epoch's order
            validation_data=validation,
            epochs=last,
            initial_epoch=first,
            callbacks=callbacks,
            verbose=verbose,
        )
        if nan_guard.stopped is not None:
            break
    final_state = load_state(run_dir)
    if nan_guard.stopped is not None:
        raise TrainingStoppedOnNaN(
            f"{run_dir}: the loss became NaN in epoch {final_state['epoch'] + 1} (batch {nan_guard.stopped}); "
            f"training stopped and the last good epoch ({final_state['epoch']}) is kept"
        )
    return TrainResult(run_dir, final_state["epoch"], final_state["history"])


def copy_matching_weights(target, source) -> list[str]:
    """Copy the weights of every layer of ``source`` into the layer of the same name in ``target`` (nested models
    included) where their shapes agree; returns the names of the target's layers with weights that kept their
    own (e.g. a classification output layer where the source had an ab one)."""
    import keras

    sources = {layer.name: layer for layer in source.layers}
    fresh = []
    for layer in target.layers:
        match = sources.get(layer.name)
        if isinstance(layer, keras.Model) and isinstance(match, keras.Model):
            fresh += copy_matching_weights(layer, match)
        elif layer.weights:
            shapes = [tuple(weight.shape) for weight in layer.weights]
            if match is not None and [tuple(weight.shape) for weight in match.weights] == shapes:
                layer.set_weights(match.get_weights())
            else:
                fresh.append(layer.name)
    return fresh


def ab_from_output(
    output, config: ColorizerConfig, size: tuple[int, int], temperature: float | None = None,
    chroma_scale: float | None = None,
) -> np.ndarray:
    """A head's raw output batch as scaled ab (N, height, width, 2) whatever the recipe (classification
    heads are decoded with ``temperature``, default the config's, and resized from their half-size grid),
    multiplied by ``chroma_scale`` (default the config's)."""
    from koala.losses import decode_prediction

    temperature = config.temperature if temperature is None else temperature
    chroma_scale = config.chroma_scale if chroma_scale is None else chroma_scale
    ab = decode_prediction(np.asarray(output, dtype=np.float32), config.loss, temperature)
    if chroma_scale != 1.0:
        ab = ab * np.float32(chroma_scale)
    if ab.shape[1:3] != tuple(size):
        ab = np.stack([color.resize_channels(item, size) for item in ab])
    return ab


CLASS_COUNT_SAMPLE = 4000


def class_weights_for(train_data, run_dir: Path, log=print, mix: float = 0.5, sample: int = CLASS_COUNT_SAMPLE) -> np.ndarray:
    """Class-rebalancing weights from the training split's ab classes, computed once per run
    (``mix``: see :attr:`ColorizerConfig.rebalance`). At most ``sample`` images are read, spread evenly
    over the split: the 313-class histogram is settled long before that, and reading 24k photos took
    over ten minutes on two cores."""
    from koala import losses

    path = run_dir / "class_weights.npy"
    if path.exists():
        return np.load(path)
    ids = list(train_data.ids)
    if len(ids) > sample:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, sample).round().astype(int)]
    log(f"counting ab classes over {len(ids)} of {len(train_data.ids)} training images for class rebalancing")
    ab_images = (color.rgb_to_lab(data.load_prepared_image(train_data.prepared, i))[..., 1:] for i in ids)
    weights = losses.rebalancing_weights(losses.class_counts(ab_images), mix=mix)
    buffer = io.BytesIO()
    np.save(buffer, weights)
    outputs.write_bytes_atomic(path, buffer.getvalue())
    return weights


def _loss(config: ColorizerConfig, train_data=None, run_dir: Path | None = None, log=print):
    from koala import losses

    if config.loss == "classification":
        return losses.make_loss("classification", class_weights_for(train_data, run_dir, log, config.rebalance))
    return losses.make_loss(config.loss, colorful_weight=config.colorful_weight)


def _has_tensorflow() -> bool:
    import importlib.util

    import keras

    return keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard") is not None
