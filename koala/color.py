"""Colour conversions and the model's input/output scaling: the one home for every Lab constant.

The network sees the CIE L*a*b* lightness channel scaled to [-1, 1] and predicts the a*b* channels
scaled to [-1, 1]. Every part of Koala (training, evaluation, the CLI, the service, the notebooks)
goes through :func:`preprocess` and :func:`postprocess` here, so the scaling is defined exactly once.

The conversions follow scikit-image's ``rgb2lab`` / ``lab2rgb`` (sRGB, D65 white, 2° observer) and are
tested against it, but are written in float32 with lookup tables for 8-bit input, because users'
scans are 12-megapixel images and float64 conversions of those take seconds. The full-resolution
steps (:func:`rgb_to_lightness`, :func:`join_lightness_ab`, :func:`join_grey_ab`) work on row bands
that fit in the CPU's cache, on a thread pool of ``os.cpu_count()`` threads (numpy and Pillow release
the GIL), and the join ends in an 8-bit lookup table rather than a float power.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np
from PIL import Image

# --- constants -------------------------------------------------------------------------------
L_MAX = 100.0
"""L* runs from 0 (black) to 100 (white)."""

AB_SCALE = 128.0
"""a* and b* are divided by this to lie in [-1, 1]; sRGB colours reach about |ab| <= 108."""

IMAGE_SIZE = 256
"""The side of the square image the colouriser head works on."""

D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423],
     [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]],
    dtype=np.float64,
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
_EPSILON = 0.008856
_KAPPA = 7.787

# sRGB decoding of every 8-bit value, computed once.
_SRGB_TO_LINEAR_LUT = np.where(
    np.arange(256) / 255.0 > 0.04045,
    ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4,
    np.arange(256) / 255.0 / 12.92,
).astype(np.float32)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return _SRGB_TO_LINEAR_LUT[rgb]
    rgb = rgb.astype(np.float32, copy=False)
    return np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92).astype(np.float32)


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(
        linear > 0.0031308, 1.055 * np.power(linear, 1 / 2.4) - 0.055, 12.92 * linear
    ).astype(np.float32)


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPSILON, np.cbrt(t), _KAPPA * t + 16.0 / 116.0).astype(np.float32)


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    return np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / _KAPPA).astype(np.float32)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.shape[-1] != 3:
        raise ValueError(f"expected an RGB or grey image, got shape {image.shape}")
    return image


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 0..255, or float 0..1) of shape (..., 3) to float32 Lab (L 0..100, ab about ±110)."""
    rgb = _as_rgb(rgb)
    linear = _srgb_to_linear(rgb)
    xyz = linear @ XYZ_FROM_RGB.T.astype(np.float32)
    f = _lab_f(xyz / D65_WHITE)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab of shape (..., 3) to sRGB float32 in [0, 1] (out-of-gamut colours are clipped)."""
    lab = lab.astype(np.float32, copy=False)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = np.maximum(fy - lab[..., 2] / 200.0, 0.0)
    xyz = np.stack([_lab_f_inverse(fx), _lab_f_inverse(fy), _lab_f_inverse(fz)], axis=-1) * D65_WHITE
    linear = xyz @ RGB_FROM_XYZ.T.astype(np.float32)
    return _linear_to_srgb(linear)


def _lightness_exact(rgb: np.ndarray) -> np.ndarray:
    linear = _srgb_to_linear(_as_rgb(rgb))
    luminance = linear @ XYZ_FROM_RGB[1].astype(np.float32)
    return (116.0 * _lab_f(luminance) - 16.0).astype(np.float32)


_LUMINANCE_WEIGHTS = XYZ_FROM_RGB[1].astype(np.float32)
# Each 8-bit channel's share of the luminance Y, and the L* of every 8-bit grey level.
_LUMINANCE_LUTS = [(_SRGB_TO_LINEAR_LUT * weight).astype(np.float32) for weight in _LUMINANCE_WEIGHTS]
GREY_TO_LIGHTNESS_LUT = _lightness_exact(np.arange(256, dtype=np.uint8)[:, None])[:, 0]
"""L* of the neutral sRGB grey with each 8-bit level (what a grey JPEG's pixel means)."""

_BAND_PIXELS = 1 << 17
"""Pixels per band of the full-resolution loops: small enough for a band's float32 temporaries to stay in
the CPU caches, large enough that the per-band Python overhead is small (measured on a 12 MP join)."""

_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="koala-color"
            )
        return _pool


def _for_row_bands(height: int, width: int, work) -> None:
    """Call ``work(top, bottom)`` over bands of rows covering ``height``, in parallel for large images."""
    rows = max(1, _BAND_PIXELS // max(width, 1))
    bands = [(top, min(height, top + rows)) for top in range(0, height, rows)]
    if len(bands) < 4 or (os.cpu_count() or 1) == 1:
        for top, bottom in bands:
            work(top, bottom)
        return
    for future in [_thread_pool().submit(work, top, bottom) for top, bottom in bands]:
        future.result()


def rgb_to_lightness(rgb: np.ndarray) -> np.ndarray:
    """The L* channel (float32, 0..100) of an sRGB image, without computing a* and b*.

    uint8 grey images (H, W) or (H, W, 1) take one table look-up per pixel; uint8 RGB images three
    look-ups (the linearised channels' shares of Y) and a cube root, band by band on all cores.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 2:
        return _lightness_exact(rgb)
    if rgb.ndim == 2 or rgb.shape[-1] == 1:
        return GREY_TO_LIGHTNESS_LUT[rgb.reshape(rgb.shape[:2]) if rgb.ndim == 3 else rgb]
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        return _lightness_exact(rgb)
    height, width = rgb.shape[:2]
    out = np.empty((height, width), dtype=np.float32)

    def band(top: int, bottom: int) -> None:
        pixels = rgb[top:bottom]
        luminance = _LUMINANCE_LUTS[0][pixels[..., 0]]
        luminance += _LUMINANCE_LUTS[1][pixels[..., 1]]
        luminance += _LUMINANCE_LUTS[2][pixels[..., 2]]
        out[top:bottom] = 116.0 * _lab_f(luminance) - 16.0

    _for_row_bands(height, width, band)
    return out


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to uint8, rounding to nearest."""
    return np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8)


# --- the model's scaling ------------------------------------------------------------------------
def normalize_lightness(lightness: np.ndarray) -> np.ndarray:
    """L* 0..100 to the network's input range [-1, 1]."""
    return (lightness / (L_MAX / 2.0) - 1.0).astype(np.float32)


def denormalize_lightness(l_norm: np.ndarray) -> np.ndarray:
    return ((l_norm + 1.0) * (L_MAX / 2.0)).astype(np.float32)


def normalize_ab(ab: np.ndarray) -> np.ndarray:
    """a*b* to the network's target range [-1, 1]."""
    return np.clip(ab / AB_SCALE, -1.0, 1.0).astype(np.float32)


def denormalize_ab(ab_norm: np.ndarray) -> np.ndarray:
    return (ab_norm * AB_SCALE).astype(np.float32)


def preprocess(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square training image (H, W, 3) to the network's input L (H, W, 1) and target ab (H, W, 2)."""
    lab = rgb_to_lab(rgb)
    return normalize_lightness(lab[..., :1]), normalize_ab(lab[..., 1:])


def postprocess(l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """Network input L and output ab (same size) back to a uint8 sRGB image."""
    lab = np.concatenate([denormalize_lightness(l_norm), denormalize_ab(ab_norm)], axis=-1)
    return to_uint8(lab_to_rgb(lab))


def resize_channels(channels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (h, w, C) array to (height, width) = size, bilinear, one channel at a time."""
    height, width = size
    out = np.empty((height, width, channels.shape[-1]), dtype=np.float32)
    for index in range(channels.shape[-1]):
        plane = Image.fromarray(np.ascontiguousarray(channels[..., index], dtype=np.float32), mode="F")
        out[..., index] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    return out


# The last step of a join: linear sRGB in [0, 1] -> 8-bit sRGB by table look-up. 2^16 steps keep the
# look-up within 0.03 of a code value of the exact power (the steepest slope is 12.92 × 255 per unit).
_LINEAR_STEPS = 65535
_LINEAR_TO_SRGB8_LUT = to_uint8(_linear_to_srgb(np.arange(_LINEAR_STEPS + 1, dtype=np.float64) / _LINEAR_STEPS))
# Lab -> linear sRGB with the white point folded into the matrix: linear = M @ (x, y, z) / white.
_RGB_FROM_NORMALISED_XYZ = (RGB_FROM_XYZ * D65_WHITE.astype(np.float64)).astype(np.float32)
_FY_FROM_GREY_LUT = ((GREY_TO_LIGHTNESS_LUT + 16.0) / 116.0).astype(np.float32)


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output position: the first source index and the weight of the next one, for bilinear
    resampling with pixel centres at (i + 0.5) × scale and edges clamped (Pillow's BILINEAR when enlarging)."""
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0.0, size_in - 1)
    first = np.minimum(np.floor(centres).astype(np.intp), max(size_in - 2, 0))
    weight = (centres - first).astype(np.float32) if size_in > 1 else np.zeros(size_out, np.float32)
    return first, weight


def _upsample_rows_table(plane: np.ndarray, width: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A small plane (h, w) widened to ``width`` (bilinear) and times ``scale``, with each row's difference
    to the next: the band loop then builds any full-size row as ``rows[i] + steps[i] * weight``."""
    first, weight = _bilinear_taps(plane.shape[1], width)
    following = np.minimum(first + 1, plane.shape[1] - 1)
    rows = plane[:, first] * (1.0 - weight) + plane[:, following] * weight
    rows = np.ascontiguousarray(rows * scale, dtype=np.float32)
    steps = np.zeros_like(rows)
    steps[:-1] = rows[1:] - rows[:-1]
    return rows, steps


def _join(height: int, width: int, fy_band, ab_norm: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
    """The Lab -> 8-bit sRGB join, band by band: ``fy_band(top, bottom)`` gives those rows' (L* + 16) / 116.

    The predicted ab (h, w, 2) is upsampled to (H, W) bilinearly as part of each band (the same values
    as :func:`resize_channels`), so no full-size float plane is ever allocated. With ``slope`` (h, w, 2),
    ``ab_norm`` is an offset and each pixel's ab is ``offset + slope × fy`` (both upsampled): the colour
    follows the full-resolution lightness (:func:`edge_aware_ab`).
    """
    ab_norm = np.asarray(ab_norm, dtype=np.float32)
    # f(X/Xn) = f(Y/Yn) + a/500, f(Z/Zn) = f(Y/Yn) - b/200, with a, b = ab_norm × AB_SCALE
    a_rows, a_steps = _upsample_rows_table(ab_norm[..., 0], width, AB_SCALE / 500.0)
    b_rows, b_steps = _upsample_rows_table(ab_norm[..., 1], width, -AB_SCALE / 200.0)
    if slope is not None:
        slope = np.asarray(slope, dtype=np.float32)
        if slope.shape != ab_norm.shape:
            raise ValueError(f"slope {slope.shape} and ab {ab_norm.shape} differ in shape")
        # fx = fy + s·(offset + slope·fy) = fy·(1 + s·slope) + s·offset: the tables hold 1 + s·slope
        a_slope_rows, a_slope_steps = _upsample_rows_table(slope[..., 0], width, AB_SCALE / 500.0)
        b_slope_rows, b_slope_steps = _upsample_rows_table(slope[..., 1], width, -AB_SCALE / 200.0)
        a_slope_rows += 1.0
        b_slope_rows += 1.0
    first_row, row_weight = _bilinear_taps(ab_norm.shape[0], height)
    out = np.empty((height, width, 3), dtype=np.uint8)
    # linear sRGB scaled to the look-up table's index range
    matrix = (_RGB_FROM_NORMALISED_XYZ * _LINEAR_STEPS).astype(np.float32)

    def f_inverse(f: np.ndarray) -> np.ndarray:
        cube = f * f
        cube *= f
        dark = f <= 0.2068966
        if dark.any():
            np.copyto(cube, (f - 16.0 / 116.0) * (1.0 / _KAPPA), where=dark)
        return cube

    def band(top: int, bottom: int) -> None:
        rows, weights = first_row[top:bottom], row_weight[top:bottom, None]
        fy = fy_band(top, bottom)

        def channel_f(offset_rows, offset_steps, slope_rows, slope_steps):
            f = np.take(offset_steps, rows, axis=0)
            f *= weights
            f += np.take(offset_rows, rows, axis=0)
            if slope_rows is None:
                f += fy
                return f
            gain = np.take(slope_steps, rows, axis=0)
            gain *= weights
            gain += np.take(slope_rows, rows, axis=0)
            gain *= fy
            f += gain
            return f

        if slope is None:
            fx = channel_f(a_rows, a_steps, None, None)
            fz = channel_f(b_rows, b_steps, None, None)
        else:
            fx = channel_f(a_rows, a_steps, a_slope_rows, a_slope_steps)
            fz = channel_f(b_rows, b_steps, b_slope_rows, b_slope_steps)
        np.maximum(fz, 0.0, out=fz)
        x, y, z = f_inverse(fx), f_inverse(fy), f_inverse(fz)
        for channel in range(3):
            linear = x * matrix[channel, 0]
            linear += y * matrix[channel, 1]
            linear += z * matrix[channel, 2]
            linear += 0.5
            np.clip(linear, 0.0, _LINEAR_STEPS, out=linear)
            out[top:bottom, :, channel] = np.take(_LINEAR_TO_SRGB8_LUT, linear.astype(np.uint16))

    _for_row_bands(height, width, band)
    return out


def join_lightness_ab(lightness: np.ndarray, ab_norm: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
    """Join a full-resolution L* (H, W) with a low-resolution predicted ab (h, w, 2) into uint8 sRGB.

    The ab channels are upsampled (bilinear) to (H, W); the photo's own lightness is kept, so the output
    has the input's full detail and the colour carries only the network's low-resolution guess. With
    ``slope`` (from :func:`edge_aware_ab`), ``ab_norm`` is the offset of a local linear model of ab in
    the lightness, and the colour's edges follow the photo's.
    """
    height, width = lightness.shape[:2]
    lightness = np.asarray(lightness, dtype=np.float32).reshape(height, width)

    def fy_band(top, bottom):
        fy = lightness[top:bottom] + 16.0
        fy *= 1.0 / 116.0
        return fy

    return _join(height, width, fy_band, ab_norm, slope)


def join_grey_ab(grey: np.ndarray, ab_norm: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
    """:func:`join_lightness_ab` for a uint8 grey photo (H, W): its L* is the grey level's, by look-up."""
    grey = np.asarray(grey)
    if grey.dtype != np.uint8:
        raise ValueError(f"expected a uint8 grey image, got dtype {grey.dtype}")
    height, width = grey.shape[:2]
    grey = grey.reshape(height, width)
    return _join(height, width, lambda top, bottom: np.take(_FY_FROM_GREY_LUT, grey[top:bottom]), ab_norm, slope)


def _box_mean(planes: np.ndarray, radius: int) -> np.ndarray:
    """The mean over the (2 radius + 1)² window around each pixel of (h, w, C) planes, edges reflected."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(planes, size=(2 * radius + 1, 2 * radius + 1, 1), mode="reflect")


def edge_aware_ab(
    lightness: np.ndarray, ab_norm: np.ndarray, radius: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """A low-resolution ab as a local linear function of the lightness, so that enlarging it follows the
    photo's edges instead of smearing colour across them (the halos of a plain bilinear enlargement).

    The guided filter (He, Sun & Tang 2013) with the lightness as the guide, computed at the network's size
    and applied at any size, as in He & Sun's fast guided filter (2015): in each (2 radius + 1)² window
    ab ≈ slope · fy + offset is fitted by least squares (fy = (L* + 16) / 116, the join's own lightness
    term), with ``epsilon`` keeping the slope small where the lightness is flat (there the colour is just
    smoothed); the coefficients are averaged over the windows. The join then evaluates them with the
    full-resolution lightness: ``join_lightness_ab(L, offset, slope)``.

    Args:
        lightness: L* (h, w), 0..100, at the size of ``ab_norm`` (the network's input).
        ab_norm: predicted ab (h, w, 2), normalised.
        radius: window radius in pixels of ``ab_norm``.
        epsilon: regularisation, in units of fy² (fy spans about 0.14-1): larger keeps the colour smoother.

    Returns:
        (offset, slope), each (h, w, 2) float32.
    """
    if radius < 1 or epsilon <= 0:
        raise ValueError(f"radius must be at least 1 and epsilon above 0, got {radius} and {epsilon}")
    lightness = np.asarray(lightness, dtype=np.float32)
    ab_norm = np.asarray(ab_norm, dtype=np.float32)
    if lightness.shape != ab_norm.shape[:2]:
        raise ValueError(f"lightness {lightness.shape} and ab {ab_norm.shape[:2]} differ in size")
    guide = ((lightness + 16.0) / 116.0)[..., None]
    means = _box_mean(np.concatenate([guide, guide * guide, ab_norm, guide * ab_norm], axis=-1), radius)
    mean_guide, mean_square, mean_ab, mean_product = means[..., :1], means[..., 1:2], means[..., 2:4], means[..., 4:6]
    variance = np.maximum(mean_square - mean_guide * mean_guide, 0.0)
    slope = (mean_product - mean_guide * mean_ab) / (variance + np.float32(epsilon))
    offset = mean_ab - slope * mean_guide
    averaged = _box_mean(np.concatenate([offset, slope], axis=-1), radius)
    return np.ascontiguousarray(averaged[..., :2]), np.ascontiguousarray(averaged[..., 2:])


def grey_to_rgb(lightness: np.ndarray) -> np.ndarray:
    """L* (..., H, W) to the neutral grey uint8 sRGB image(s) with that lightness (ab = 0)."""
    zeros = np.zeros(lightness.shape + (2,), dtype=np.float32)
    lab = np.concatenate([lightness[..., None].astype(np.float32), zeros], axis=-1)
    return to_uint8(lab_to_rgb(lab))


# --- the cheap join: colour at reduced size, added to the full-resolution grey -----------------------------
JOIN_SIDE = 640
"""The short side of the reduced copy where :func:`join_grey_offsets` computes the colour exactly (in Lab, with
the edge-aware slope evaluated on that copy's lightness): about 1/4 of a 12-megapixel scan, well above the
network's 256."""


def reduced_grey(grey: np.ndarray, side: int = JOIN_SIDE) -> np.ndarray:
    """A box-averaged uint8 copy of a uint8 or uint16 grey photo (H, W), its short side reduced by a whole factor
    to no less than ``side`` (or the photo's own, if shorter)."""
    height, width = grey.shape
    factor = max(1, min(height, width) // side)
    if grey.dtype == np.uint8:
        return grey if factor == 1 else np.asarray(Image.fromarray(grey, "L").reduce(factor))
    plane = Image.fromarray(np.asarray(grey, np.float32) * np.float32(1 / 257), "F")
    if factor > 1:
        plane = plane.reduce(factor)
    return np.clip(np.rint(np.asarray(plane)), 0, 255).astype(np.uint8)


def colour_offsets(grey_small: np.ndarray, ab_norm: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
    """The colour of a reduced uint8 grey copy (h, w) of a photo as offsets from its grey, in 8-bit levels:
    int16 (h, w, 3), the exact join :func:`join_grey_ab` (that copy's own L*, the predicted ab enlarged to
    (h, w), with ``slope`` evaluated on that copy's lightness) less the grey level."""
    joined = join_grey_ab(grey_small, ab_norm, slope)
    return joined.astype(np.int16) - grey_small[..., None].astype(np.int16)


def join_grey_offsets(grey: np.ndarray, ab_norm: np.ndarray, slope: np.ndarray | None = None,
                      side: int = JOIN_SIDE):
    """The fast join for file outputs: the colour photo whose every channel is the photo's own grey level plus
    a colour offset enlarged from a reduced copy. uint8 grey (H, W) gives a Pillow RGB image (what encoders take,
    without a copy into NumPy: ``np.asarray`` it for an array); uint16 grey gives a uint16 array (H, W, 3).

    The exact Lab join (:func:`join_grey_ab`) costs a cube root, a 3 × 3 matrix and a look-up per full-size
    pixel, although the predicted colour has 256 × 256 pixels of information. Here the exact join is done on a
    reduced copy of the photo (short side about ``side``: :func:`reduced_grey`, :func:`colour_offsets`) and kept
    as offsets from that copy's grey; the full-size work is enlarging three small planes and adding them to the
    grey, in Pillow's C loops (8-bit) or NumPy row bands (16-bit: the grey's own 16-bit levels plus the offsets
    × 257). Where the photo is smooth at the reduced scale its L* is kept within rounding; fine detail keeps its
    grey-level contrast in every channel, which moves L* from the photo's by about a tenth of a unit on average
    in colourised photos (tests/test_fast_color.py; ``benchmarks/full_resolution.py`` measures it). The
    edge-aware slope follows the reduced copy's lightness (2.5 times finer than the network's 256 at 12 MP).
    """
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 grey image (H, W), got {grey.dtype} {grey.shape}")
    offsets = colour_offsets(reduced_grey(grey, side), ab_norm, slope)
    if grey.dtype == np.uint8:
        return _add_offsets_8bit(grey, offsets)
    return _add_offsets_16bit(grey, offsets)


def grey_with_lightness(rgb: np.ndarray) -> np.ndarray:
    """The uint8 neutral grey levels (H, W) with the L* of a uint8 sRGB photo (H, W, 3): what a colour photo is
    coloured from (its luminance, by three table look-ups, and back to an sRGB level by a fourth)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    out = np.empty((height, width), dtype=np.uint8)
    scale = np.float32(_LINEAR_STEPS)

    def band(top: int, bottom: int) -> None:
        pixels = rgb[top:bottom]
        luminance = _LUMINANCE_LUTS[0][pixels[..., 0]]
        luminance += _LUMINANCE_LUTS[1][pixels[..., 1]]
        luminance += _LUMINANCE_LUTS[2][pixels[..., 2]]
        luminance *= scale
        luminance += 0.5
        np.clip(luminance, 0.0, _LINEAR_STEPS, out=luminance)
        out[top:bottom] = np.take(_LINEAR_TO_SRGB8_LUT, luminance.astype(np.uint16))

    _for_row_bands(height, width, band)
    return out


def _enlarge_plane(plane: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bilinear enlargement to ``size`` (width, height); past twice the plane's size, bilinear to half of
    ``size`` and then each pixel doubled (a third of the time; the planes are smooth at this scale)."""
    width, height = size
    if plane.size == size:
        return plane
    half = ((width + 1) // 2, (height + 1) // 2)
    if half[0] < 2 * plane.width or half[1] < 2 * plane.height:
        return plane.resize(size, Image.Resampling.BILINEAR)
    doubled = plane.resize(half, Image.Resampling.BILINEAR).resize((2 * half[0], 2 * half[1]),
                                                                    Image.Resampling.NEAREST)
    return doubled if doubled.size == size else doubled.crop((0, 0, width, height))


def _add_offsets_8bit(grey: np.ndarray, offsets: np.ndarray) -> Image.Image:
    from PIL import ImageChops

    height, width = grey.shape
    grey_image = Image.fromarray(grey, "L")
    coded = np.clip(offsets + 128, 0, 255).astype(np.uint8)  # Pillow's 8-bit planes are unsigned

    def channel(index: int) -> Image.Image:
        plane = _enlarge_plane(Image.fromarray(np.ascontiguousarray(coded[..., index]), "L"), (width, height))
        return ImageChops.add(grey_image, plane, scale=1.0, offset=-128)

    return Image.merge("RGB", list(_thread_pool().map(channel, range(3))))


def _add_offsets_16bit(grey: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    half = ((width + 1) // 2, (height + 1) // 2)
    # Where _enlarge_plane would enlarge to half the size and double each pixel, only the half-size planes are
    # made (a quarter of the pixels); each band adds them to 2 x 2 blocks of the grey by broadcasting.
    doubled = half[0] >= 2 * offsets.shape[1] and half[1] >= 2 * offsets.shape[0]

    def enlarged(index: int) -> np.ndarray:  # on all cores: Pillow lets other threads run while it resizes
        plane = Image.fromarray(np.ascontiguousarray(offsets[..., index], np.float32) * np.float32(257), "F")
        if doubled:
            return np.asarray(plane.resize(half, Image.Resampling.BILINEAR))
        return np.asarray(_enlarge_plane(plane, (width, height)))

    planes = list(_thread_pool().map(enlarged, range(3)))
    out = np.empty((height, width, 3), dtype=np.uint16)

    def band(top: int, bottom: int) -> None:
        level = grey[top:bottom].astype(np.float32)
        level += 0.5
        rows = bottom - top
        for index in range(3):
            if not doubled:
                value = planes[index][top:bottom] + level
            elif rows % 2 == 0 and width % 2 == 0:
                small = planes[index][top // 2:(top + rows) // 2]
                value = (level.reshape(rows // 2, 2, width // 2, 2) + small[:, None, :, None]).reshape(rows, width)
            else:
                small = planes[index][top // 2:(top + rows + 1) // 2]
                value = level + np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:rows, :width]
            np.clip(value, 0.0, 65535.0, out=value)
            out[top:bottom, :, index] = value

    rows = max(2, (_BAND_PIXELS // max(width, 1)) & ~1)  # even, so that each band starts on a pair of rows
    bands = [(top, min(height, top + rows)) for top in range(0, height, rows)]
    if len(bands) < 4 or (os.cpu_count() or 1) == 1:
        for top, bottom in bands:
            band(top, bottom)
    else:
        for future in [_thread_pool().submit(band, top, bottom) for top, bottom in bands]:
            future.result()
    return out
