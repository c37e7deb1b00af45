"""Colour conversions and the model's input/output scaling: the one home for every Lab constant.

The network sees the CIE L*a*b* lightness channel scaled to [-1, 1] and predicts the a*b* channels
scaled to [-1, 1]. Every part of Koala (training, evaluation, the CLI, the service, the notebooks)
goes through :func:`preprocess` and :func:`postprocess` here, so the scaling is defined exactly once.

The conversions follow scikit-image's ``rgb2lab`` / ``lab2rgb`` (sRGB, D65 white, 2° observer) and are
tested against it, but are written in float32 with lookup tables for 8-bit input, because users'
scans are 12-megapixel images and float64 conversions of those take seconds.
"""

from __future__ import annotations

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


def rgb_to_lightness(rgb: np.ndarray) -> np.ndarray:
    """The L* channel (float32, 0..100) of an sRGB image, without computing a* and b*."""
    rgb = _as_rgb(rgb)
    linear = _srgb_to_linear(rgb)
    luminance = linear @ XYZ_FROM_RGB[1].astype(np.float32)
    return (116.0 * _lab_f(luminance) - 16.0).astype(np.float32)


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


def join_lightness_ab(lightness: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """Join a full-resolution L* (H, W) with a low-resolution predicted ab (h, w, 2) into uint8 sRGB.

    The ab channels are upsampled to (H, W); the photo's own lightness is kept, so the output has the
    input's full detail and the colour carries only the network's low-resolution guess.
    """
    height, width = lightness.shape[:2]
    ab = denormalize_ab(resize_channels(ab_norm, (height, width)))
    lab = np.concatenate([lightness.reshape(height, width, 1).astype(np.float32), ab], axis=-1)
    return to_uint8(lab_to_rgb(lab))


def grey_to_rgb(lightness: np.ndarray) -> np.ndarray:
    """L* (..., H, W) to the neutral grey uint8 sRGB image(s) with that lightness (ab = 0)."""
    zeros = np.zeros(lightness.shape + (2,), dtype=np.float32)
    lab = np.concatenate([lightness[..., None].astype(np.float32), zeros], axis=-1)
    return to_uint8(lab_to_rgb(lab))
