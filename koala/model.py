"""The tutorial's colouriser network ("koalarization"): encoder, fusion layer, decoder.

Reference:
    F. Baldassarre, D. González Morín, L. Rodés-Guirao, "Deep Koalarization: Image Colorization using
    CNNs and Inception-ResNet-v2", 2017 (arXiv:1712.03400); E. Wallner, "Colorizing B&W Photos with
    Neural Networks" (2017), the "full version".

The network reads the lightness channel of a 256 × 256 image and a 1000-d embedding of the same grey
image from a frozen ImageNet classifier, and predicts the two ab channels with tanh. The classifier is
never part of this model: embeddings are computed once and cached (training) or computed beside it
(inference), so the saved model is the small head alone.

This is one of the two architectures; :mod:`koala.architectures` lists them and builds the one a config names.
"""

from __future__ import annotations

import keras
from keras import layers

from koala import losses
from koala.config import ColorizerConfig
from koala.fusion import FusionLayer


def _conv(filters: int, strides: int = 1, name: str | None = None, activation: str = "relu"):
    return layers.Conv2D(filters, 3, strides=strides, padding="same", activation=activation, name=name)


def build_koalarization(config: ColorizerConfig | None = None) -> keras.Model:
    """Build the tutorial's colouriser head ("koalarization").

    Args:
        config: ``fusion`` chooses between the fusion model (inputs ``[lightness, embedding]``) and the
            plain encoder-decoder (input ``lightness`` only; the tutorial's "beta"); ``embedding_dim``
            is the embedder's output size; ``image_size`` must be divisible by 8.

    Returns:
        A Functional ``keras.Model`` mapping lightness ``(size, size, 1)`` in [-1, 1] (and an embedding
        ``(embedding_dim,)``) to ab ``(size, size, 2)`` in [-1, 1].

    Note:
        As in the paper, the decoder ends with tanh on two channels and a last ×2 upsampling; we keep
        the paper's layer sizes exactly (about 6.6 M parameters with fusion).
    """
    config = config or ColorizerConfig()
    if config.image_size % 8:
        raise ValueError(f"image_size must be divisible by 8, got {config.image_size}")
    if config.fusion and config.embedding_dim <= 0:
        raise ValueError(f"embedding_dim must be positive for a fusion model, got {config.embedding_dim}")
    size = config.image_size

    lightness = keras.Input(shape=(size, size, 1), name="lightness")
    # encoder: size/2, then size/4, then size/8 (32 x 32 x 256 at 256 px)
    x = _conv(64, strides=2, name="encoder_1")(lightness)
    x = _conv(128, name="encoder_2")(x)
    x = _conv(128, strides=2, name="encoder_3")(x)
    x = _conv(256, name="encoder_4")(x)
    x = _conv(256, strides=2, name="encoder_5")(x)
    x = _conv(512, name="encoder_6")(x)
    x = _conv(512, name="encoder_7")(x)
    x = _conv(256, name="encoder_8")(x)

    inputs = [lightness]
    if config.fusion:
        embedding = keras.Input(shape=(config.embedding_dim,), name="embedding")
        inputs.append(embedding)
        # fusion: 32 x 32 x (256 + embedding_dim) -> 32 x 32 x 256
        x = FusionLayer(name="fusion")([x, embedding])
        x = layers.Conv2D(256, 1, activation="relu", name="fusion_mix")(x)

    # decoder: 32 -> 64 -> 128 -> 256
    x = _conv(128, name="decoder_1")(x)
    x = layers.UpSampling2D(2, name="decoder_up_1")(x)
    x = _conv(64, name="decoder_2")(x)
    x = _conv(64, name="decoder_3")(x)
    x = layers.UpSampling2D(2, name="decoder_up_2")(x)
    x = _conv(32, name="decoder_4")(x)
    name = "koala_fusion" if config.fusion else "koala_encoder_decoder"
    model_inputs = inputs if config.fusion else lightness
    if config.loss == "classification":
        # Zhang et al.'s head: class logits over the in-gamut ab bins, at half the image side; the last
        # (parameter-free) x2 is left to the ab upsampling of the full-resolution join.
        classes = len(losses.in_gamut_bins())
        logits = layers.Conv2D(classes, 1, name="ab_classes", dtype="float32")(x)
        return keras.Model(model_inputs, logits, name=name)
    if config.loss not in ("mse", "colorful"):
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(losses.LOSSES)}")
    x = layers.Conv2D(2, 3, padding="same", activation="tanh", name="ab", dtype="float32")(x)
    ab = layers.UpSampling2D(2, name="decoder_up_3", dtype="float32")(x)
    return keras.Model(model_inputs, ab, name=name)
