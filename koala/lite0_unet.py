"""The pretrained-encoder colouriser: EfficientNet-Lite0 stages as a U-Net encoder, with fusion.

Reference:
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", 2015 (skip connections from every scale of the encoder into the decoder);
    G. Larsson, M. Maire, G. Shakhnarovich, "Learning Representations for Automatic Colorization", 2016
    (colour from the features of an ImageNet classifier at several scales); F. Baldassarre et al., "Deep
    Koalarization", 2017 (the fusion layer, :mod:`koala.fusion`); M. Tan, Q. V. Le, "EfficientNet", 2019.

Why a pretrained encoder: the tutorial's network learns every feature from the photos it is trained on,
and with thousands of photos (not the 1.3 M of ImageNet) it learns too little of what things are to know
their colours: it falls back on the average colour, which is brown. An ImageNet classifier's features
already tell grass from sky and skin from stone at every scale; the decoder only has to learn their colours.

The network (256 x 256 input)::

    lightness 256x256x1 ── grey sRGB in [-1, 1], x3 ──► Lite0 stem + stages 1-5 (frozen) ──┐
                                     stage 2 ─ 64x64x24 ───────────────────────────────┐  │
                                     stage 3 ─ 32x32x40 ────────────────────────┐      │  │
                                     stage 5 ─ 16x16x112 ──► stages 6-7 ─ 8x8x320 │      │  │
    embedding (classifier, 1000) ──► fusion at 8x8 ─► 1x1 conv 256               │      │  │
        ─► x2, + stage 5 ─► 3x3 conv 128 ─► x2, + stage 3 ─► 3x3 conv 64 ─► x2, + stage 2 ─► 3x3 conv 32
        ─► ab 64x64x2 (tanh) or ab class logits 64x64xQ

The output is at a quarter of the input side; :func:`koala.train.ab_from_output` enlarges it, as it does the
classification head's half-size grid, and full-resolution output joins it with the photo's own lightness.

The frozen part (stem and stages 1-5) is a function of the photo alone, so training computes its outputs
once per photo (:mod:`koala.feature_cache`) and trains the rest (stages 6-7 and the decoder) on them: a
training step costs the decoder alone. Stages 6-7 start from ImageNet weights and are frozen in the first
phase, fine-tuned at a lower learning rate in the second (``ColorizerConfig.finetune_epochs``).
"""

from __future__ import annotations

import keras
from keras import layers

from koala import efficientnet_lite, losses
from koala.config import ColorizerConfig
from koala.fusion import FusionLayer

ARCHITECTURE = "lite0-unet"
FROZEN_STAGES = 5
"""Stem and stages 1..FROZEN_STAGES never train; their outputs are cached."""
SKIP_STAGES = {4: 2, 8: 3, 16: 5}
"""Which Lite0 stage's output feeds the decoder at each downsampling factor."""
SKIP_CHANNELS = {factor: efficientnet_lite.STAGES[stage - 1].output_filters for factor, stage in SKIP_STAGES.items()}
DECODER_FILTERS = {16: 128, 8: 64, 4: 32}
FUSION_FILTERS = 256
OUTPUT_FACTOR = 4
"""The output's side is the input's divided by this."""
ENCODER_NAME = "lite0_unet_encoder"
DECODER_NAME = "lite0_unet_decoder"
FINE_TUNED_STAGES = tuple(range(FROZEN_STAGES + 1, len(efficientnet_lite.STAGES) + 1))

_L_STAR_SCALE = 50.0
_LAB_DELTA = 6.0 / 29.0


@keras.saving.register_keras_serializable(package="koala")
class LightnessToGrey(layers.Layer):
    """Normalised lightness ``L/50 - 1`` (batch, H, W, 1) to the neutral grey sRGB image with that
    lightness, scaled as EfficientNet-Lite expects, ``(grey - 127) / 128`` on three equal channels.

    It is :func:`koala.color.grey_to_rgb` (without its rounding to integers) followed by
    :func:`koala.efficientnet_lite.preprocess_input`, in ``keras.ops``, so that the encoder sees what the
    classifier saw in ImageNet training: sRGB levels, not L*.
    """

    def call(self, lightness):
        ops = keras.ops
        l_star = (ops.cast(lightness, "float32") + 1.0) * _L_STAR_SCALE
        fy = (l_star + 16.0) / 116.0
        luminance = ops.where(fy > _LAB_DELTA, fy * fy * fy, (fy - 16.0 / 116.0) * 3.0 * _LAB_DELTA**2)
        luminance = ops.clip(luminance, 0.0, 1.0)
        srgb = ops.where(
            luminance <= 0.0031308,
            12.92 * luminance,
            1.055 * ops.power(ops.maximum(luminance, 1e-8), 1.0 / 2.4) - 0.055,
        )
        grey = ops.clip(srgb, 0.0, 1.0) * 255.0
        return ops.repeat(efficientnet_lite.preprocess_input(grey), 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)


def _stage_output(model: keras.Model, stage: int):
    """The output tensor of the last block of ``stage`` inside ``model``."""
    repeats = efficientnet_lite.STAGES[stage - 1].repeats
    # every skip stage repeats its block, so its last block ends in a residual addition
    name = f"stage{stage}_block{repeats}_residual_add"
    return model.get_layer(name).output


def build_encoder(image_size: int) -> keras.Model:
    """The frozen part: lightness (size, size, 1) -> skip features at 1/4, 1/8 and 1/16 of the side."""
    lightness = keras.Input(shape=(image_size, image_size, 1), name="lightness")
    x = LightnessToGrey(name="lightness_to_grey")(lightness)
    x = efficientnet_lite.stem(x)
    x = efficientnet_lite.apply_stages(x, 1, FROZEN_STAGES)
    trunk = keras.Model(lightness, x)
    outputs = [_stage_output(trunk, SKIP_STAGES[factor]) for factor in sorted(SKIP_CHANNELS)]
    encoder = keras.Model(lightness, outputs, name=ENCODER_NAME)
    encoder.trainable = False
    return encoder


def feature_shapes(image_size: int) -> dict[int, tuple[int, int, int]]:
    """Shape of the cached skip features at each factor (4, 8, 16) for square inputs of ``image_size``."""
    return {factor: (image_size // factor, image_size // factor, SKIP_CHANNELS[factor]) for factor in sorted(SKIP_CHANNELS)}


def _decoder_stage(x, skip, filters: int, name: str):
    x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
    x = layers.Concatenate(name=f"{name}_skip")([x, skip])
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_convolution")(x)
    x = layers.BatchNormalization(name=f"{name}_batch_normalization")(x)
    return layers.ReLU(name=f"{name}_activation")(x)


def build_decoder(config: ColorizerConfig) -> keras.Model:
    """The trained part: stages 6-7 of Lite0, the fusion layer and the U-Net decoder.

    Inputs: the skip features at 1/4, 1/8, 1/16 (as :func:`build_encoder` returns them) and, for a
    fusion model, the classifier's embedding. Output: ab (size/4, size/4, 2) in [-1, 1] (tanh), or class
    logits (size/4, size/4, Q) for ``loss="classification"``.
    """
    shapes = feature_shapes(config.image_size)
    skips = {factor: keras.Input(shape=shape, name=f"features_{factor}") for factor, shape in shapes.items()}
    inputs = [skips[factor] for factor in sorted(skips)]
    # stages 6-7 (ImageNet-initialised, fine-tuned in the second phase): 1/16 x 112 -> 1/32 x 320
    x = efficientnet_lite.apply_stages(skips[16], FROZEN_STAGES + 1, len(efficientnet_lite.STAGES))
    if config.fusion:
        embedding = keras.Input(shape=(config.embedding_dim,), name="embedding")
        inputs.append(embedding)
        # fusion: 1/32 x (320 + embedding_dim) -> 1/32 x 256
        x = FusionLayer(name="fusion")([x, embedding])
    x = layers.Conv2D(FUSION_FILTERS, 1, activation="relu", name="fusion_mix")(x)
    # decoder: 1/32 -> 1/16 -> 1/8 -> 1/4, each with the encoder's features of that scale
    for factor in (16, 8, 4):
        x = _decoder_stage(x, skips[factor], DECODER_FILTERS[factor], name=f"decoder_{factor}")
    if config.loss == "classification":
        output = layers.Conv2D(len(losses.in_gamut_bins()), 1, name="ab_classes", dtype="float32")(x)
    elif config.loss in ("mse", "colorful", "huber"):
        output = layers.Conv2D(2, 3, padding="same", activation="tanh", name="ab", dtype="float32")(x)
    else:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(losses.LOSSES)}")
    return keras.Model(inputs, output, name=DECODER_NAME)


def _fine_tuned_stage_layers(decoder: keras.Model):
    """The layers of Lite0's stages 6-7 inside ``decoder``."""
    prefixes = tuple(f"stage{stage}_" for stage in FINE_TUNED_STAGES)
    return [layer for layer in decoder.layers if layer.name.startswith(prefixes)]


def set_fine_tuning(decoder: keras.Model, enabled: bool) -> None:
    """Let stages 6-7 train (``enabled``) or keep them at their weights. Their batch normalisation always
    keeps ImageNet's statistics (a frozen BatchNormalization layer runs in inference mode)."""
    for layer in _fine_tuned_stage_layers(decoder):
        layer.trainable = enabled and not isinstance(layer, layers.BatchNormalization)


def is_fine_tuning(decoder: keras.Model) -> bool:
    """Whether stages 6-7 of ``decoder`` train."""
    return any(layer.trainable and layer.weights for layer in _fine_tuned_stage_layers(decoder)
               if not isinstance(layer, layers.BatchNormalization))


def build_lite0_unet(config: ColorizerConfig, weights: str | None = None) -> keras.Model:
    """Build the Lite0 U-Net colouriser.

    Args:
        config: ``image_size`` (divisible by 32), ``fusion`` and ``embedding_dim`` (the classifier's
            embedding fused at the bottleneck), ``loss`` (the output head).
        weights: ``"imagenet"`` to start the encoder (stem, stages 1-7) from EfficientNet-Lite0's
            ImageNet weights (:func:`koala.efficientnet_lite.build_efficientnet_lite0`), a Lite0 weights
            file, or ``None`` for random weights (tests; a saved model brings its own weights).

    Returns:
        A Functional ``keras.Model`` named ``koala_lite0_unet`` with the same inputs as the tutorial's
        :func:`koala.model.build_koalarization` (lightness ``(size, size, 1)`` in [-1, 1], and an embedding),
        returning ab at a quarter of the side (or class logits there). It holds two nested models:
        ``lite0_unet_encoder`` (frozen) and ``lite0_unet_decoder`` (trained).

    Note:
        Departures from Lite0: the encoder reads grey (lightness shown as three equal sRGB channels)
        where it was trained on colour, and its head (1280 filters, pooling, classifier) is dropped;
        the classifier's view enters through the fusion embedding instead.
    """
    if config.image_size % 32:
        raise ValueError(f"image_size must be divisible by 32 for {ARCHITECTURE}, got {config.image_size}")
    if config.fusion and config.embedding_dim <= 0:
        raise ValueError(f"embedding_dim must be positive for a fusion model, got {config.embedding_dim}")
    encoder = build_encoder(config.image_size)
    decoder = build_decoder(config)
    lightness = keras.Input(shape=(config.image_size, config.image_size, 1), name="lightness")
    decoder_inputs = list(encoder(lightness))
    inputs = [lightness]
    if config.fusion:
        embedding = keras.Input(shape=(config.embedding_dim,), name="embedding")
        inputs.append(embedding)
        decoder_inputs.append(embedding)
    model = keras.Model(inputs if config.fusion else lightness, decoder(decoder_inputs), name="koala_lite0_unet")
    if weights is not None:
        classifier = efficientnet_lite.build_efficientnet_lite0(weights=weights)
        copied = efficientnet_lite.copy_weights_by_name(classifier, model)
        if copied == 0:
            raise ValueError("no pretrained layer matched the U-Net's encoder")
    set_fine_tuning(decoder, False)
    return model
