"""Metrics on constructed cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from koala import color, metrics


def smooth_lab(size: int = 64) -> np.ndarray:
    """A mid-lightness, moderately coloured Lab image, far enough inside the sRGB gamut to shift by 40."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack(
        [60 + 10 * np.sin(x / 10), 10 * np.cos(y / 9), 10 * np.sin(x / 7 + y / 11)], axis=-1
    ).astype(np.float32)


def lab_image(lab: np.ndarray) -> np.ndarray:
    return color.to_uint8(color.lab_to_rgb(lab))


def shifted(lab: np.ndarray, distance: float) -> np.ndarray:
    """The same image with every pixel's ab moved by ``distance`` in one direction (3-4-5 triangle)."""
    moved = lab.copy()
    moved[..., 1] += 0.6 * distance
    moved[..., 2] += 0.8 * distance
    return moved


@pytest.fixture(scope="module")
def photo():
    from tests.conftest import make_photo

    return make_photo(3, 64, 80)


def test_identical_images_score_perfectly(photo):
    assert metrics.psnr(photo, photo) == math.inf
    assert metrics.ssim(photo, photo) == pytest.approx(1.0)
    assert metrics.ab_error_auc(photo, photo) == 1.0
    assert np.all(metrics.ab_error(photo, photo) == 0)
    scores = metrics.image_metrics(photo, photo)
    assert scores.colorfulness_ratio == pytest.approx(1.0)
    assert scores.auc == 1.0


def test_psnr_matches_its_definition(photo):
    noisy = np.clip(photo.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - photo.astype(float)) ** 2)
    assert metrics.psnr(noisy, photo) == pytest.approx(10 * math.log10(255**2 / mse))
    assert metrics.ssim(noisy, photo) < 1.0


def test_grey_image_has_no_colourfulness():
    grey = np.repeat(np.linspace(0, 255, 64 * 48).reshape(48, 64, 1).astype(np.uint8), 3, axis=-1)
    assert metrics.colorfulness(grey) == 0.0
    assert metrics.colorfulness(np.full((8, 8, 3), 200, np.uint8)) == 0.0


def test_colourfulness_ratio():
    lab = smooth_lab()
    truth = lab_image(lab)
    half = lab.copy()
    half[..., 1:] *= 0.5
    less = lab_image(half)
    assert metrics.colorfulness_ratio(truth, truth) == pytest.approx(1.0)
    assert 0.3 < metrics.colorfulness_ratio(less, truth) < 0.7
    assert metrics.colorfulness_ratio(metrics.grey_baseline(truth), truth) < 0.05
    grey = np.full((8, 8, 3), 90, np.uint8)
    assert math.isnan(metrics.colorfulness_ratio(truth[:8, :8], grey))


@pytest.mark.parametrize("distance", [10, 20, 40])
def test_uniform_ab_shift(distance):
    lab = smooth_lab()
    truth, moved = lab_image(lab), lab_image(shifted(lab, distance))
    # the shift stays inside the gamut: the measured ab really moved by `distance` (8-bit rounding aside)
    error = metrics.ab_error(moved, truth)
    assert error.mean() == pytest.approx(distance, abs=0.2)
    assert np.abs(error - distance).max() < 1.0
    expected = (metrics.AUC_MAX_THRESHOLD - distance + 1) / (metrics.AUC_MAX_THRESHOLD + 1)
    assert metrics.ab_error_auc(moved, truth) == pytest.approx(expected, abs=1.5 / 151)
    curve = metrics.ab_accuracy_curve(moved, truth)
    assert curve.shape == (151,)
    assert np.all(np.diff(curve) >= 0)
    assert curve[distance - 2] == 0.0 and curve[distance + 2] == 1.0


def test_error_beyond_the_last_threshold_scores_zero():
    lab = np.zeros((8, 8, 3), np.float32)
    lab[..., 0] = 50
    truth = lab_image(lab)
    assert metrics.ab_error_auc(truth, truth) == 1.0
    assert metrics.ab_error_auc(truth, truth, max_threshold=0) == 1.0
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    green = np.zeros((8, 8, 3), np.uint8)
    green[..., 1] = 255
    assert metrics.ab_error(red, green).min() > 150  # sRGB red and green are ~170 apart in ab
    assert metrics.ab_error_auc(red, green) == 0.0


def test_grey_baseline_keeps_lightness_and_loses_colour(photo):
    grey = metrics.grey_baseline(photo)
    assert grey.shape == photo.shape and grey.dtype == np.uint8
    assert np.abs(color.rgb_to_lightness(grey) - color.rgb_to_lightness(photo)).max() < 1.0
    assert np.abs(color.rgb_to_lab(grey)[..., 1:]).max() < 1.5
    assert metrics.colorfulness(grey) < 0.5
    assert metrics.ab_error_auc(grey, photo) < metrics.ab_error_auc(photo, photo)
    assert metrics.psnr(grey, photo) < 40


def test_mean_metrics_uses_mean_colourfulness_ratio():
    first = metrics.ImageMetrics(20.0, 0.8, 0.9, colorfulness=10.0, true_colorfulness=40.0, colorfulness_ratio=0.25)
    second = metrics.ImageMetrics(30.0, 1.0, 1.0, colorfulness=2.0, true_colorfulness=1.0, colorfulness_ratio=2.0)
    mean = metrics.mean_metrics([first, second])
    assert mean.psnr == 25.0 and mean.ssim == pytest.approx(0.9) and mean.auc == pytest.approx(0.95)
    assert mean.colorfulness_ratio == pytest.approx(6.0 / 20.5)
    assert math.isnan(metrics.mean_metrics([]).psnr)


def test_shapes_must_match(photo):
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(photo, photo[:10])


def test_hue_shares_tell_blue_green_and_warm_apart():
    from koala import color
    from koala.metrics import hue_shares

    # a quarter each: sky blue, grass green, brick, neutral grey
    lab = np.zeros((2, 2, 3), np.float32)
    lab[..., 0] = 60
    lab[0, 0, 1:] = (2, -30)
    lab[0, 1, 1:] = (-40, 30)
    lab[1, 0, 1:] = (30, 25)
    rgb = color.to_uint8(color.lab_to_rgb(lab))
    shares = hue_shares(rgb)
    assert shares.bluish == 0.25 and shares.greenish == 0.25
    assert shares.warm == 0.5  # the brick, and the grass (b* = +30)
    grey = hue_shares(np.full((4, 4, 3), 128, np.uint8))
    assert grey.bluish == grey.greenish == grey.warm == 0 and grey.mean_chroma < 0.5
    assert abs(shares.mean_chroma - np.mean([np.hypot(2, -30), np.hypot(-40, 30), np.hypot(30, 25), 0])) < 2
