"""The run configuration: one dataclass with defaults, saved as ``config.json`` beside the weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


CHROMA_SCALE_MAX = 2.0
"""``chroma_scale`` runs from 0 (grey) to this; the command line and :class:`koala.Colorizer` both check it."""

INPUT_SIZE_MAX = 1024
"""``input_size`` runs up to this (a 1024-px copy: 16 times the network's work of a 256-px one)."""


def check_input_size(value: int) -> int:
    """``value`` if it is an ``input_size`` a colouriser can read at (0, the model's own side, or a multiple of 32
    up to :data:`INPUT_SIZE_MAX`); else ValueError. The command line and :class:`koala.Colorizer` both check it."""
    if value < 0 or value % 32 or value > INPUT_SIZE_MAX:
        raise ValueError(f"input_size must be 0 (the model's own) or a multiple of 32 up to {INPUT_SIZE_MAX}, "
                         f"got {value}")
    return value


@dataclasses.dataclass
class ColorizerConfig:
    """Everything needed to rebuild, retrain or reuse a colouriser.

    The model part (``fusion``, ``embedder``, ``embedding_dim``, ``loss``) is what ``koala colorize``
    and the service need; the training part records how a model was made, so a run folder is enough
    to reproduce it.
    """

    # model
    architecture: str = "koalarization"
    """koalarization (the tutorial's encoder-decoder, learnt from scratch) or lite0-unet (an ImageNet-
    pretrained EfficientNet-Lite0 encoder with skip connections; see koala.architectures)."""
    fusion: bool = True
    embedder: str = "efficientnet-lite0"
    embedding_dim: int = 1000
    loss: str = "mse"
    """mse (the tutorial's), classification (Zhang et al. 2016) or colorful (MSE + missing-chroma penalty)."""
    temperature: float = 0.38
    """Annealed-mean temperature for classification models: lower is more vivid, higher more cautious."""
    chroma_scale: float = 1.0
    """Colouring: the predicted a*b* are multiplied by this (below 1: calmer colour where the model is unsure;
    chosen on validation photos, like the temperature)."""
    edge_radius: int = 0
    """Colouring: 0 enlarges the predicted a*b* bilinearly; above 0, as a local linear function of the photo's
    lightness (a guided filter with this window radius at the network's size), so colour edges follow the
    photo's edges (:func:`koala.color.edge_aware_ab`)."""
    edge_epsilon: float = 1e-3
    """Colouring, with ``edge_radius``: the guided filter's regularisation (larger: smoother colour)."""
    flip_average: bool = False
    """Colouring: average the prediction for the photo and for its mirror image (twice the network's work)."""
    input_size: int = 0
    """Colouring: the side of the square copy of each photo the network reads (0: ``image_size``, the side it was
    trained at). The heads are convolutional, so a model trained at 256 can read a larger copy of a large photo
    (finer detail, more of the network's work per photo: the square of the ratio); ``edge_radius`` is scaled with
    it, so the colour's edges follow the photo's over the same share of the picture."""
    image_size: int = 256
    # training
    rebalance: float = 0.5
    """Classification: Zhang et al.'s λ, the share of uniform mixed into the class frequencies before
    inverting them (0.5 in the paper: rare, saturated colours weigh more); 1.0 = every class weighs 1."""
    colorful_weight: float = 0.5
    """Colorful loss: the weight of the missing-chroma penalty beside MSE."""
    data: str = ""
    run_dir: str = ""
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    augment: bool = True
    seed: int = 1234
    init_from: str = ""
    embedder_weights: str = "imagenet"
    encoder_weights: str = "imagenet"
    """lite0-unet: the encoder's starting weights ("imagenet", a Lite0 weights file, or "" for random)."""
    fine_tune_after: int = 0
    """lite0-unet: after this many epochs, Lite0's stages 6-7 train too (0 = never)."""
    fine_tune_learning_rate: float = 1e-4
    """lite0-unet: the learning rate once stages 6-7 train."""
    samples_per_epoch: int = 0
    """If > 0, the number of training images drawn per epoch (with replacement); 0 = one pass."""
    collapse_fraction: float = 0.5
    """Warn when validation predictions are less colourful than this fraction of the ground truth."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        from koala.outputs import write_bytes_atomic

        write_bytes_atomic(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> "ColorizerConfig":
        values = json.loads(Path(path).read_text())
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def replace(self, **changes) -> "ColorizerConfig":
        return dataclasses.replace(self, **changes)
