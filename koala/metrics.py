"""Image-quality measures for colourisation, and the grey baseline every result is compared with.

All functions take uint8 sRGB images of shape (H, W, 3): a prediction and its ground truth of the same size.

- :func:`psnr` and :func:`ssim` on RGB (scikit-image, ``data_range=255``);
- :func:`colorfulness` (Hasler & Süsstrunk 2003), whose ratio to the truth's shows colour collapse
  (the grey, sepia-ish average that an L2-trained colouriser drifts towards);
- :func:`ab_error_auc`: Zhang et al. 2016's "raw accuracy" AuC, the area under the cumulative curve of
  the per-pixel Euclidean error in a*b* over thresholds 0..150;
- :func:`grey_baseline`: the truth's own lightness with no colour (a* = b* = 0). A colouriser that does
  not beat this on PSNR / AuC has learned nothing; one that only matches it is an expensive grey filter.

Reference:
    Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016, section 3.1 (AuC of the cumulative
    ab-error curve, thresholds 0 to 150).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from koala import color

AUC_MAX_THRESHOLD = 150
"""The largest ab-error threshold of the accuracy curve (Zhang et al. 2016 use 0..150)."""


def _check_pair(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction {predicted.shape} and truth {truth.shape} differ in shape")
    if predicted.ndim != 3 or predicted.shape[-1] != 3:
        raise ValueError(f"expected RGB images of shape (H, W, 3), got {predicted.shape}")
    return predicted, truth


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk's colourfulness (2003, the M3 metric) of a uint8 sRGB image (H, W, 3).

    ``rg = R - G``, ``yb = (R + G) / 2 - B``; M3 = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²),
    on 0..255 values. A grey image scores 0; typical photos 20-60.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mean = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * mean)


def colorfulness_ratio(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Colourfulness of the prediction divided by the truth's (1.0: as colourful; 0: grey); NaN if the truth is grey."""
    true_colour = colorfulness(truth)
    return colorfulness(predicted) / true_colour if true_colour > 0 else float("nan")


def psnr(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the RGB channels (``inf`` for identical images)."""
    from skimage.metrics import peak_signal_noise_ratio

    predicted, truth = _check_pair(predicted, truth)
    if np.array_equal(predicted, truth):
        return float("inf")
    return float(peak_signal_noise_ratio(truth, predicted, data_range=255))


def ssim(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Structural similarity over the RGB channels (scikit-image defaults: 7×7 window, 1.0 for identical)."""
    from skimage.metrics import structural_similarity

    predicted, truth = _check_pair(predicted, truth)
    return float(structural_similarity(truth, predicted, data_range=255, channel_axis=-1))


def ab_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance between the images' a*b* channels, float32 (H, W)."""
    predicted, truth = _check_pair(predicted, truth)
    difference = color.rgb_to_lab(predicted)[..., 1:] - color.rgb_to_lab(truth)[..., 1:]
    return np.hypot(difference[..., 0], difference[..., 1])


def ab_accuracy_curve(
    predicted: np.ndarray, truth: np.ndarray, max_threshold: int = AUC_MAX_THRESHOLD
) -> np.ndarray:
    """Fraction of pixels whose ab error is at most t, for t = 0, 1, ..., max_threshold (a cumulative curve)."""
    errors = np.sort(ab_error(predicted, truth).ravel())
    thresholds = np.arange(max_threshold + 1, dtype=np.float64)
    return np.searchsorted(errors, thresholds, side="right") / errors.size


def ab_error_auc(predicted: np.ndarray, truth: np.ndarray, max_threshold: int = AUC_MAX_THRESHOLD) -> float:
    """Zhang et al. 2016's raw-accuracy AuC: the cumulative ab-error curve averaged over t = 0..max_threshold.

    1.0 for identical colours; a uniform ab error of d (an integer) gives (max_threshold - d + 1) /
    (max_threshold + 1), e.g. 0.868 for d = 20; 0 when every pixel is off by more than max_threshold.
    """
    return float(ab_accuracy_curve(predicted, truth, max_threshold).mean())


def grey_baseline(rgb: np.ndarray) -> np.ndarray:
    """The "colours removed" image: the photo's own L* with a* = b* = 0, as uint8 sRGB."""
    return color.grey_to_rgb(color.rgb_to_lightness(np.asarray(rgb)))


@dataclasses.dataclass
class ImageMetrics:
    """Every measure of one prediction against its truth (or, from :func:`mean_metrics`, their averages)."""

    psnr: float
    ssim: float
    auc: float
    colorfulness: float
    true_colorfulness: float
    colorfulness_ratio: float


def image_metrics(predicted: np.ndarray, truth: np.ndarray) -> ImageMetrics:
    """All of :class:`ImageMetrics` for one prediction and its truth."""
    predicted, truth = _check_pair(predicted, truth)
    predicted_colour, true_colour = colorfulness(predicted), colorfulness(truth)
    return ImageMetrics(
        psnr=psnr(predicted, truth),
        ssim=ssim(predicted, truth),
        auc=ab_error_auc(predicted, truth),
        colorfulness=predicted_colour,
        true_colorfulness=true_colour,
        colorfulness_ratio=predicted_colour / true_colour if true_colour > 0 else float("nan"),
    )


def mean_metrics(items: list[ImageMetrics]) -> ImageMetrics:
    """Average per-image metrics. The colourfulness ratio is mean colourfulness over mean true colourfulness
    (a mean of per-image ratios would be dominated by nearly grey photos)."""
    if not items:
        nan = float("nan")
        return ImageMetrics(nan, nan, nan, nan, nan, nan)

    def mean(name: str) -> float:
        return float(np.mean([getattr(item, name) for item in items]))

    predicted_colour, true_colour = mean("colorfulness"), mean("true_colorfulness")
    return ImageMetrics(
        psnr=mean("psnr"),
        ssim=mean("ssim"),
        auc=mean("auc"),
        colorfulness=predicted_colour,
        true_colorfulness=true_colour,
        colorfulness_ratio=predicted_colour / true_colour if true_colour > 0 else float("nan"),
    )


HUE_THRESHOLD = 3.0
"""a* or b* below minus this many units counts a pixel as greenish or bluish (:func:`hue_shares`)."""


@dataclasses.dataclass
class HueShares:
    """How a colouring is spread over hues: what a sepia filter lacks and a global cast overdoes."""

    mean_chroma: float
    """Mean sqrt(a*² + b*²) over the pixels."""
    bluish: float
    """Share of pixels with b* < -HUE_THRESHOLD (skies, sea, shade)."""
    greenish: float
    """Share of pixels with a* < -HUE_THRESHOLD (foliage, grass)."""
    warm: float
    """Share of pixels with a* > HUE_THRESHOLD or b* > HUE_THRESHOLD (skin, earth, brick, sepia)."""
    mean_ab: tuple[float, float]
    """The image's mean a*, b*: far from (0, 0) on every photo means a global colour cast."""


def hue_shares(rgb: np.ndarray, threshold: float = HUE_THRESHOLD) -> HueShares:
    """:class:`HueShares` of a uint8 sRGB image (H, W, 3), e.g. a colourised photo without ground truth."""
    ab = color.rgb_to_lab(np.asarray(rgb))[..., 1:].reshape(-1, 2).astype(np.float64)
    a, b = ab[:, 0], ab[:, 1]
    return HueShares(
        mean_chroma=float(np.hypot(a, b).mean()),
        bluish=float((b < -threshold).mean()),
        greenish=float((a < -threshold).mean()),
        warm=float(((a > threshold) | (b > threshold)).mean()),
        mean_ab=(float(a.mean()), float(b.mean())),
    )
