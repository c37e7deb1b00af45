"""The colouriser architectures, by name, and the one builder that knows them all.

=================  ===========================  ==================================================================
name               module                       what it is
=================  ===========================  ==================================================================
``koalarization``  :mod:`koala.model`           the tutorial's encoder-decoder with fusion (Deep Koalarization),
                                                learnt from scratch
``lite0-unet``     :mod:`koala.lite0_unet`      an ImageNet-pretrained EfficientNet-Lite0 encoder with skip
                                                connections into a U-Net decoder, with fusion
=================  ===========================  ==================================================================

A config names its architecture (``ColorizerConfig.architecture``); :func:`build_colorizer` builds it. Both
take the same inputs (lightness in [-1, 1], and the classifier's embedding for a fusion model, fused by
:class:`koala.fusion.FusionLayer`), so training, colourising, evaluating, the service and the notebooks never
ask which one they hold.

Importing this module imports no Keras backend (the builders' modules are imported when one is built), so the
command line can list the architectures at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from koala.config import ColorizerConfig

if TYPE_CHECKING:
    import keras

ARCHITECTURES = ("koalarization", "lite0-unet")


def build_colorizer(config: ColorizerConfig | None = None) -> keras.Model:
    """Build the colouriser head named by ``config.architecture``: the tutorial's network ("koalarization",
    :func:`koala.model.build_koalarization`), or the pretrained-encoder U-Net ("lite0-unet",
    :func:`koala.lite0_unet.build_lite0_unet`; built with random weights here: training starts it from
    ImageNet's, a saved model brings its own).

    Args:
        config: the architecture and its settings (see each builder); the default config when None.

    Returns:
        A Functional ``keras.Model`` mapping lightness ``(size, size, 1)`` in [-1, 1] (and an embedding
        ``(embedding_dim,)`` for a fusion model) to ab in [-1, 1] (or ab class logits).

    Raises:
        ValueError: an unknown architecture, or settings the architecture cannot build.
    """
    config = config or ColorizerConfig()
    if config.architecture == "lite0-unet":
        from koala.lite0_unet import build_lite0_unet

        return build_lite0_unet(config)
    if config.architecture != "koalarization":
        raise ValueError(f"unknown architecture {config.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    from koala.model import build_koalarization

    return build_koalarization(config)


def model_inputs(config: ColorizerConfig, lightness, embedding):
    """The model's inputs in the order it expects them (the same for every architecture)."""
    return [lightness, embedding] if config.fusion else lightness


def at_input_size(model: keras.Model, config: ColorizerConfig, size: int) -> keras.Model:
    """The same head reading photos at ``size`` × ``size``: built at that size, with ``model``'s weights (the heads
    are convolutional; the fusion layer spreads the embedding over whatever grid the encoder gives).

    Raises:
        ValueError: the architecture cannot be built at that size (the U-Net needs a multiple of 32).
    """
    import dataclasses

    if size == config.image_size:
        return model
    resized = build_colorizer(dataclasses.replace(config, image_size=size))
    resized.set_weights(model.get_weights())
    return resized
