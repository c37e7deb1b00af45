"""The colour-class recipe (Zhang et al. 2016) and the other losses, on cases with known answers."""

import keras
import numpy as np
import pytest

from koala import color, losses
from koala.architectures import build_colorizer
from koala.config import ColorizerConfig


def test_in_gamut_bins_are_grid_points_inside_srgb():
    bins = losses.in_gamut_bins()
    assert 200 < len(bins) < 330  # a grid of 10 over the sRGB gamut (Zhang et al. report 313 with their sampling)
    assert np.all(np.mod(bins, 10) == 0)
    assert [0.0, 0.0] in bins.tolist()  # grey
    assert [100.0, 100.0] not in bins.tolist()  # far outside sRGB


def test_soft_encoding_sums_to_one_and_peaks_at_the_nearest_bin():
    bins = losses.in_gamut_bins()
    ab = np.array([[[13.3, -31.7], [3.3, 2.1], [-38.2, 44.6]]], dtype=np.float32)  # no ties for 5th place
    targets = losses.soft_encode_numpy(ab)
    np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
    assert (targets > 0).sum(-1).max() == losses.SOFT_NEIGHBOURS
    np.testing.assert_array_equal(bins[targets.argmax(-1)[0]], [[10, -30], [0, 0], [-40, 40]])
    # the keras.ops version agrees with the numpy one
    ops_targets = np.asarray(losses.soft_encode(ab / color.AB_SCALE, bins))
    np.testing.assert_allclose(ops_targets, targets, atol=1e-5)


def test_sparse_soft_targets_match_the_dense_encoding_on_real_colours():
    """The loss's 6 x 6-block search finds the same 5 classes and weights as a search over every class,
    for sRGB colours and for averages of two (what pooling the targets makes), gamut edges included."""
    bins = losses.in_gamut_bins()
    rng = np.random.default_rng(0)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)
    rgb = np.concatenate([corners, rng.integers(0, 256, (1500, 3), dtype=np.uint8)])[None]
    ab = color.rgb_to_lab(rgb)[..., 1:]
    ab = np.concatenate([ab, (ab + ab[:, ::-1]) / 2], axis=1).astype(np.float32)
    dense = losses.soft_encode_numpy(ab, bins).reshape(-1, len(bins))
    classes, weights = losses.sparse_soft_targets(ab / color.AB_SCALE, bins)
    sparse = np.zeros_like(dense)
    np.put_along_axis(sparse, np.asarray(classes).reshape(-1, 5), np.asarray(weights).reshape(-1, 5), -1)
    np.testing.assert_allclose(sparse, dense, atol=1e-5)
    # and so the loss is the same either way
    pixels = ab.reshape(1, 1, -1, 2) / color.AB_SCALE
    logits = rng.normal(size=pixels.shape[:3] + (len(bins),)).astype(np.float32)
    weights = rng.uniform(0.5, 2, len(bins)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(losses.classification_loss(pixels, logits, bins, weights)),
        np.asarray(losses.classification_loss(pixels, logits, bins, weights, encode=losses.dense_soft_targets)),
        rtol=1e-5)
    # far outside sRGB, where no class is near: zero weight, not NaN
    _, far = losses.sparse_soft_targets(np.array([[0.95, 0.95]], np.float32), bins)
    np.testing.assert_array_equal(np.asarray(far), 0.0)


def test_annealed_mean_of_one_hot_is_that_bins_centre():
    bins = losses.in_gamut_bins()
    for index in (0, 17, len(bins) - 1):
        logits = np.full(len(bins), -1e4, dtype=np.float32)
        logits[index] = 0.0
        for temperature in (0.38, 1.0):
            np.testing.assert_allclose(losses.annealed_mean_numpy(logits, temperature), bins[index], atol=1e-4)
            decoded = np.asarray(losses.annealed_mean(logits[None], bins, temperature))[0] * color.AB_SCALE
            np.testing.assert_allclose(decoded, bins[index], atol=1e-3)


def test_lower_temperature_is_more_vivid():
    bins = losses.in_gamut_bins()
    grey, red = losses.nearest_bins(np.array([[0.0, 0.0], [60.0, 40.0]]), bins)
    logits = np.full(len(bins), -20.0, dtype=np.float32)
    logits[grey], logits[red] = 0.0, -0.3  # a little more sure of grey than of red
    chroma = [np.hypot(*losses.annealed_mean_numpy(logits, t)) for t in (0.2, 0.38, 1.0)]
    mean_chroma = np.hypot(*losses.annealed_mean_numpy(logits, 1.0))
    assert chroma[0] < chroma[2]  # the mode (grey) at low T; towards the mean at T = 1
    assert mean_chroma > 0


def test_rebalancing_weights_average_one_and_favour_rare_colours():
    bins = losses.in_gamut_bins()
    counts = np.zeros(len(bins), dtype=np.int64)
    common, rare = losses.nearest_bins(np.array([[0.0, 0.0], [50.0, 50.0]]), bins)
    counts[common], counts[rare] = 10_000, 10
    counts[losses.nearest_bins(np.array([[10.0, 10.0]]), bins)[0]] = 3_000
    weights = losses.rebalancing_weights(counts)
    probability = counts / counts.sum()
    assert abs(float((probability * weights).sum()) - 1.0) < 1e-5
    assert weights[rare] > weights[common]


def test_rebalancing_mix_one_weighs_every_class_equally_and_mix_is_checked():
    bins = losses.in_gamut_bins()
    counts = np.arange(len(bins), dtype=np.int64) ** 2
    assert np.allclose(losses.rebalancing_weights(counts, mix=1.0), 1.0)
    quarter = losses.rebalancing_weights(counts, mix=0.25)
    half = losses.rebalancing_weights(counts, mix=0.5)
    probability = counts / counts.sum()
    assert abs(float((probability * quarter).sum()) - 1.0) < 1e-5
    assert quarter.max() / quarter.min() > half.max() / half.min() > 1.0  # less uniform mixed in: stronger rebalancing
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="mix"):
            losses.rebalancing_weights(counts, mix=bad)


def test_colorful_weight_reaches_the_loss():
    assert losses.make_loss("colorful", colorful_weight=0.125).weight == 0.125
    truth = np.full((1, 4, 4, 2), 0.4, np.float32)
    grey = np.zeros_like(truth)
    light = float(np.asarray(losses.colorful_loss(truth, grey, weight=0.1))[0])
    heavy = float(np.asarray(losses.colorful_loss(truth, grey, weight=0.5))[0])
    mse = 0.4**2
    # chroma missed: |(0.4, 0.4)| = 0.566 (less the 1e-3 the square root's epsilon leaves in the grey prediction)
    assert abs(light - (mse + 0.1 * 0.4 * np.sqrt(2))) < 1e-3 and abs(heavy - (mse + 0.5 * 0.4 * np.sqrt(2))) < 1e-3


def test_classification_loss_is_lowest_for_the_right_class():
    bins = losses.in_gamut_bins()
    ab = np.full((1, 4, 4, 2), [30.0 / color.AB_SCALE, -20.0 / color.AB_SCALE], dtype=np.float32)
    right, wrong = losses.nearest_bins(np.array([[30.0, -20.0], [-50.0, 60.0]]), bins)
    good, bad = np.full((1, 4, 4, len(bins)), -5.0, np.float32), np.full((1, 4, 4, len(bins)), -5.0, np.float32)
    good[..., right], bad[..., wrong] = 5.0, 5.0
    weights = np.ones(len(bins), np.float32)
    assert float(losses.classification_loss(ab, good, bins, weights)[0]) < float(losses.classification_loss(ab, bad, bins, weights)[0])


def test_colorful_loss_penalises_washed_out_predictions_only():
    truth = np.full((1, 2, 2, 2), 0.4, np.float32)
    washed = truth * 0.5
    vivid = truth * 1.5  # same squared error as washed, but no chroma deficit
    assert float(losses.colorful_loss(truth, washed)[0]) > float(losses.colorful_loss(truth, vivid)[0])
    np.testing.assert_allclose(float(losses.colorful_loss(truth, truth)[0]), 0.0, atol=1e-6)


@pytest.mark.parametrize("loss", ["classification", "colorful"])
def test_one_image_overfit_loss_falls(loss):
    keras.utils.set_random_seed(0)
    from koala import images
    from tests.conftest import make_photo

    rgb = images.resize_and_crop(make_photo(4, 96, 96), 64)
    l_norm, ab_norm = color.preprocess(rgb)
    config = ColorizerConfig(fusion=False, image_size=64, loss=loss)
    model = build_colorizer(config)
    if loss == "classification":
        assert tuple(model.output.shape) == (None, 32, 32, len(losses.in_gamut_bins()))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.make_loss(loss))
    history = model.fit(l_norm[None], ab_norm[None], epochs=60, verbose=0).history["loss"]
    assert history[-1] < 0.75 * history[0]  # (cross-entropy on soft targets has a floor: their entropy)


def test_losses_survive_a_save_and_load(tmp_path):
    model = build_colorizer(ColorizerConfig(fusion=False, image_size=64, loss="classification"))
    model.compile(optimizer="adam", loss=losses.make_loss("classification", np.linspace(0.5, 2, len(losses.in_gamut_bins()))))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.class_weights[0] == pytest.approx(0.5)
