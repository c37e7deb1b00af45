"""Training objectives, and the quantised-ab colour classes of Zhang et al. (2016).

Three recipes, chosen by ``ColorizerConfig.loss``:

``mse``
    Mean squared error on the scaled ab channels (Deep Koalarization, the tutorial). It predicts the
    *mean* of the plausible colours of a pixel, and the mean of red, green and blue is brown: outputs
    drift to sepia.
``classification``
    Reference: R. Zhang, P. Isola, A. A. Efros, "Colorful Image Colorization", ECCV 2016.
    The ab plane is cut into a grid of 10 × 10 cells; the cells that some sRGB colour falls in are the
    classes (in gamut). Each pixel's target is a soft distribution over its 5 nearest class centres
    (Gaussian, σ = 5); rare colours weigh more (class rebalancing from the training set's smoothed
    class frequencies mixed half-and-half with uniform, weights normalised to mean 1 under the training
    distribution). At inference the distribution is decoded by its *annealed mean*: softmax(log p / T)
    then the mean of the class centres; T → 0 gives the mode (vivid), T = 1 the mean (sepia).
``colorful``
    Our own: MSE plus a penalty on *missing* chroma, ``mean(relu(|ab_true| - |ab_pred|))``, which
    pushes against washed-out predictions while leaving accurate ones alone.
"""

from __future__ import annotations

import functools

import numpy as np

from koala import color

GRID_STEP = 10.0
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
REBALANCE_SIGMA = 5.0
DEFAULT_TEMPERATURE = 0.38
COLORFUL_WEIGHT = 0.5
CLASS_DOWNSAMPLE = 2
"""Classification models predict classes at half the image side (128 px for 256): the last ×2 of the
decoder is left to the ab upsampling that full-resolution output does anyway."""
LOSSES = ("mse", "classification", "colorful")


@functools.lru_cache(maxsize=None)
def in_gamut_bins(step: float = GRID_STEP) -> np.ndarray:
    """Centres (Q, 2) of the ab grid cells (centred on multiples of ``step``) that some sRGB colour falls
    in. sRGB is sampled every 3 levels per channel (5.8 M colours), which finds every reachable cell."""
    levels = np.arange(0, 256, 3, dtype=np.uint8)
    red, green, blue = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([red.ravel(), green.ravel(), blue.ravel()], axis=-1)
    ab = color.rgb_to_lab(rgb[:, None, :])[:, 0, 1:]
    cells = np.unique(np.round(ab / step).astype(np.int32), axis=0)
    return (cells * step).astype(np.float32)


def nearest_bins(ab: np.ndarray, bins: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest class centre for each ab value (..., 2) (unscaled ab)."""
    bins = in_gamut_bins() if bins is None else bins
    flat = ab.reshape(-1, 2).astype(np.float32)
    distances = ((flat[:, None, :] - bins[None]) ** 2).sum(-1)
    return distances.argmin(-1).reshape(ab.shape[:-1])


def soft_encode_numpy(ab: np.ndarray, bins: np.ndarray | None = None) -> np.ndarray:
    """Soft targets (..., Q) for unscaled ab (..., 2): Gaussian weights on the 5 nearest centres, summing to 1."""
    bins = in_gamut_bins() if bins is None else bins
    flat = ab.reshape(-1, 2).astype(np.float32)
    squared = ((flat[:, None, :] - bins[None]) ** 2).sum(-1)
    nearest = np.argsort(squared, axis=-1)[:, :SOFT_NEIGHBOURS]
    weights = np.exp(-np.take_along_axis(squared, nearest, -1) / (2 * SOFT_SIGMA**2))
    weights /= weights.sum(-1, keepdims=True)
    out = np.zeros_like(squared)
    np.put_along_axis(out, nearest, weights, -1)
    return out.reshape(ab.shape[:-1] + (len(bins),))


def rebalancing_weights(bin_counts: np.ndarray, bins: np.ndarray | None = None,
                        mix: float = REBALANCE_LAMBDA) -> np.ndarray:
    """Per-class weights from class counts over the training set (Zhang et al.'s eq. 3-4).

    The empirical distribution is smoothed with a Gaussian (σ = 5) in ab space, mixed with uniform
    (``mix`` = λ, 0.5 in the paper; 1 gives equal weights, no rebalancing), inverted, and scaled so
    that its expectation under the empirical distribution is 1.
    """
    if not 0.0 < mix <= 1.0:
        raise ValueError(f"rebalancing mix must be in (0, 1], got {mix}")
    bins = in_gamut_bins() if bins is None else bins
    probability = bin_counts.astype(np.float64) / max(1.0, float(bin_counts.sum()))
    squared = ((bins[:, None, :] - bins[None]) ** 2).sum(-1)
    kernel = np.exp(-squared / (2 * REBALANCE_SIGMA**2))
    kernel /= kernel.sum(1, keepdims=True)
    smoothed = kernel @ probability
    smoothed /= smoothed.sum()
    weights = 1.0 / ((1 - mix) * smoothed + mix / len(bins))
    weights /= (probability * weights).sum() if probability.sum() > 0 else weights.mean()
    return weights.astype(np.float32)


def annealed_mean_numpy(logits: np.ndarray, temperature: float = DEFAULT_TEMPERATURE,
                        bins: np.ndarray | None = None) -> np.ndarray:
    """Decode class logits (..., Q) to unscaled ab (..., 2): softmax(logits / T) @ centres."""
    bins = in_gamut_bins() if bins is None else bins
    scaled = logits.astype(np.float32) / max(temperature, 1e-6)
    scaled -= scaled.max(-1, keepdims=True)
    probability = np.exp(scaled)
    probability /= probability.sum(-1, keepdims=True)
    return probability @ bins


# --- Keras losses (keras.ops only: they run on any backend, inside jit) ---------------------------
def _ops():
    import keras

    return keras.ops


def mse_loss(ab_true, ab_pred):
    ops = _ops()
    return ops.mean(ops.square(ops.cast(ab_pred, "float32") - ops.cast(ab_true, "float32")), axis=(1, 2, 3))


def colorful_loss(ab_true, ab_pred, weight: float = COLORFUL_WEIGHT):
    """MSE plus a penalty on chroma the prediction lacks (both in scaled ab units)."""
    ops = _ops()
    ab_true = ops.cast(ab_true, "float32")
    ab_pred = ops.cast(ab_pred, "float32")
    chroma_true = ops.sqrt(ops.sum(ops.square(ab_true), axis=-1) + 1e-6)
    chroma_pred = ops.sqrt(ops.sum(ops.square(ab_pred), axis=-1) + 1e-6)
    deficit = ops.mean(ops.relu(chroma_true - chroma_pred), axis=(1, 2))
    return mse_loss(ab_true, ab_pred) + weight * deficit


def soft_encode(ab_scaled, bins):
    """keras.ops soft encoding: scaled ab (B, H, W, 2) -> (B, H, W, Q) targets on the 5 nearest centres."""
    ops = _ops()
    ab = ops.cast(ab_scaled, "float32") * color.AB_SCALE
    centres = ops.convert_to_tensor(bins, dtype="float32")
    squared = ops.sum(ops.square(ops.expand_dims(ab, -2) - centres), axis=-1)  # (B, H, W, Q)
    negative_top, _ = ops.top_k(-squared, SOFT_NEIGHBOURS)
    threshold = -negative_top[..., -1:]
    gaussian = ops.exp(-squared / (2 * SOFT_SIGMA**2)) * ops.cast(squared <= threshold, "float32")
    return gaussian / ops.sum(gaussian, axis=-1, keepdims=True)


SOFT_BLOCK = 6
"""The sparse soft encoding looks for a pixel's 5 nearest class centres among the 6 × 6 grid points
around it (36 instead of all ~260 classes). On a full grid the 5 nearest lie in the 4 × 4 block around a
point; the wider block keeps the answer exact where out-of-gamut cells leave gaps near the gamut edge."""


@functools.lru_cache(maxsize=None)
def _grid_lookup(bins_bytes: bytes, count: int, step: float):
    """Class index of every grid point of the bins' bounding box (-1 where no class), with the box's origin."""
    bins = np.frombuffer(bins_bytes, dtype=np.float32).reshape(count, 2)
    cells = np.round(bins / step).astype(np.int64)
    origin = cells.min(0) - SOFT_BLOCK
    shape = cells.max(0) - origin + SOFT_BLOCK + 1
    table = np.full(tuple(shape), -1, dtype=np.int32)
    table[cells[:, 0] - origin[0], cells[:, 1] - origin[1]] = np.arange(count, dtype=np.int32)
    return table.ravel(), origin.astype(np.float32), int(shape[1]), int(shape[0])


def sparse_soft_targets(ab_scaled, bins, step: float = GRID_STEP):
    """keras.ops soft encoding kept sparse: scaled ab (..., 2) -> (class ids (..., 5), weights (..., 5)).

    The same targets as ``soft_encode`` without its (..., Q) distance tensor and top-k over every class.
    """
    ops = _ops()
    bins = np.asarray(bins, dtype=np.float32)
    table, origin, rows_b, rows_a = _grid_lookup(bins.tobytes(), len(bins), float(step))
    ab = ops.cast(ab_scaled, "float32") * color.AB_SCALE
    offsets = np.arange(SOFT_BLOCK, dtype=np.float32) - (SOFT_BLOCK // 2 - 1)
    grid_a, grid_b = np.meshgrid(offsets, offsets, indexing="ij")
    block = np.stack([grid_a.ravel(), grid_b.ravel()], -1)  # (K, 2) grid offsets from the cell's corner
    corner = ops.floor(ab / step)  # (..., 2)
    candidates = ops.expand_dims(corner, -2) + ops.convert_to_tensor(block)  # (..., K, 2) grid coordinates
    squared = ops.sum(ops.square(ops.expand_dims(ab, -2) - candidates * step), axis=-1)  # (..., K)
    index = ops.cast(candidates - ops.convert_to_tensor(origin), "int32")
    index_a = ops.clip(index[..., 0], 0, rows_a - 1)
    index_b = ops.clip(index[..., 1], 0, rows_b - 1)
    classes = ops.take(ops.convert_to_tensor(table), index_a * rows_b + index_b)  # (..., K), -1 = no class
    valid = classes >= 0
    squared = ops.where(valid, squared, 1e12)
    negative_top, top = ops.top_k(-squared, SOFT_NEIGHBOURS)
    # relative to the nearest, so far-off colours don't underflow; a pixel with no class within the block
    # (only possible far outside sRGB) gets zero weight everywhere instead of a made-up target
    found = ops.cast(ops.take_along_axis(valid, top, axis=-1), "float32")
    gaussian = ops.exp((negative_top - negative_top[..., :1]) / (2 * SOFT_SIGMA**2)) * found
    weights = gaussian / ops.maximum(ops.sum(gaussian, axis=-1, keepdims=True), 1e-12)
    return ops.maximum(ops.take_along_axis(classes, top, axis=-1), 0), weights


def dense_soft_targets(ab_scaled, bins):
    """``sparse_soft_targets`` read off the dense encoding (every class's distance, then the top 5): the
    reference the sparse search is measured against (tests, ``benchmarks/architectures.py``)."""
    weights, classes = _ops().top_k(soft_encode(ab_scaled, bins), SOFT_NEIGHBOURS)
    return classes, weights


def classification_loss(ab_scaled_true, logits, bins, class_weights, encode=sparse_soft_targets):
    """Rebalanced cross-entropy between soft-encoded targets and predicted class logits.

    ``ab_scaled_true`` may be larger than the logits' grid; it is average-pooled down to it. The targets
    stay sparse (5 classes a pixel, from ``encode``), so the cost is one log-softmax over the logits and a gather.
    """
    ops = _ops()
    logits = ops.cast(logits, "float32")
    factor = ops.shape(ab_scaled_true)[1] // ops.shape(logits)[1]
    ab = ops.cast(ab_scaled_true, "float32")
    if factor != 1:
        ab = ops.average_pool(ab, pool_size=factor, strides=factor, padding="valid")
    classes, target = encode(ab, bins)
    # the first of the top 5 is the nearest class: its rebalancing weight weighs the pixel
    weights = ops.take(ops.convert_to_tensor(class_weights, dtype="float32"), classes[..., 0])
    log_probability = ops.take_along_axis(ops.log_softmax(logits, axis=-1), classes, axis=-1)
    cross_entropy = -ops.sum(target * log_probability, axis=-1)
    return ops.mean(weights * cross_entropy, axis=(1, 2))


def annealed_mean(logits, bins, temperature: float = DEFAULT_TEMPERATURE):
    """keras.ops annealed-mean decoding to *scaled* ab (..., 2)."""
    ops = _ops()
    probability = ops.softmax(ops.cast(logits, "float32") / temperature, axis=-1)
    return ops.matmul(probability, ops.convert_to_tensor(bins, dtype="float32")) / color.AB_SCALE


def class_counts(ab_images, bins: np.ndarray | None = None, downsample: int = 4) -> np.ndarray:
    """Count nearest-class occurrences over an iterable of unscaled ab images (H, W, 2)."""
    bins = in_gamut_bins() if bins is None else bins
    counts = np.zeros(len(bins), dtype=np.int64)
    for ab in ab_images:
        small = ab[::downsample, ::downsample]
        counts += np.bincount(nearest_bins(small, bins).ravel(), minlength=len(bins))
    return counts


def _keras_loss_base():
    import keras

    return keras.losses.Loss


def _register(cls):
    import keras

    return keras.saving.register_keras_serializable(package="koala")(cls)


@_register
class ColorfulLoss(_keras_loss_base()):
    """MSE plus ``weight`` × the mean chroma the prediction lacks (see the module docstring)."""

    def __init__(self, weight: float = COLORFUL_WEIGHT, name: str = "colorful", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = weight

    def call(self, y_true, y_pred):
        return colorful_loss(y_true, y_pred, self.weight)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@_register
class ClassificationLoss(_keras_loss_base()):
    """Rebalanced soft-target cross-entropy over in-gamut ab classes (Zhang et al. 2016)."""

    def __init__(self, class_weights=None, name: str = "classification", **kwargs):
        super().__init__(name=name, **kwargs)
        bins = in_gamut_bins()
        self.class_weights = np.ones(len(bins), np.float32) if class_weights is None else np.asarray(class_weights, np.float32)
        self.bins = bins

    def call(self, y_true, y_pred):
        return classification_loss(y_true, y_pred, self.bins, self.class_weights)

    def get_config(self):
        return {**super().get_config(), "class_weights": [float(value) for value in self.class_weights]}


def make_loss(name: str, class_weights=None, colorful_weight: float = COLORFUL_WEIGHT):
    """The Keras loss for a recipe name (``mse``, ``classification``, ``colorful``)."""
    if name == "mse":
        return "mse"
    if name == "colorful":
        return ColorfulLoss(colorful_weight)
    if name == "classification":
        return ClassificationLoss(class_weights)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def decode_prediction(output: np.ndarray, loss: str, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """The head's output to scaled ab: unchanged for regression heads, annealed mean for class logits."""
    if loss == "classification":
        return annealed_mean_numpy(output, temperature) / color.AB_SCALE
    return output
