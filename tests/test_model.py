import numpy as np
import pytest

import keras

from koala.architectures import build_colorizer
from koala.config import ColorizerConfig
from koala.fusion import FusionLayer


def test_fusion_model_shapes_and_parameter_count():
    model = build_colorizer(ColorizerConfig(fusion=True))
    assert [tuple(i.shape) for i in model.inputs] == [(None, 256, 256, 1), (None, 1000)]
    assert tuple(model.output.shape) == (None, 256, 256, 2)
    assert 6_500_000 < model.count_params() < 6_700_000  # the paper's ~6.6 M head
    assert model.get_layer("encoder_8").output.shape[1:] == (32, 32, 256)
    assert model.get_layer("fusion").output.shape[1:] == (32, 32, 1256)


def test_encoder_decoder_without_fusion():
    model = build_colorizer(ColorizerConfig(fusion=False))
    assert len(model.inputs) == 1
    assert tuple(model.output.shape) == (None, 256, 256, 2)


def test_outputs_are_bounded_by_tanh():
    model = build_colorizer(ColorizerConfig(fusion=False, image_size=64))
    out = np.asarray(model(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype("float32")))
    assert out.shape == (2, 64, 64, 2) and np.abs(out).max() <= 1.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        build_colorizer(ColorizerConfig(image_size=100))
    with pytest.raises(ValueError):
        build_colorizer(ColorizerConfig(loss="nonsense"))


def test_fusion_layer_repeats_embedding_everywhere():
    features = np.zeros((2, 4, 5, 3), dtype="float32")
    embedding = np.arange(14, dtype="float32").reshape(2, 7)
    fused = np.asarray(FusionLayer()([features, embedding]))
    assert fused.shape == (2, 4, 5, 10)
    np.testing.assert_array_equal(fused[1, 3, 4, 3:], embedding[1])
    np.testing.assert_array_equal(fused[0, 0, 0, 3:], embedding[0])


def test_serialisation_round_trip(tmp_path):
    model = build_colorizer(ColorizerConfig(fusion=True, image_size=64, embedding_dim=10))
    lightness = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 1)).astype("float32")
    embedding = np.random.default_rng(1).uniform(0, 1, (1, 10)).astype("float32")
    before = np.asarray(model.predict([lightness, embedding], verbose=0))
    model.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(np.asarray(loaded.predict([lightness, embedding], verbose=0)), before, atol=1e-6)


def test_one_image_overfit_loss_falls():
    keras.utils.set_random_seed(0)
    from tests.conftest import make_photo
    from koala import color, images

    rgb = images.resize_and_crop(make_photo(3, 96, 96), 64)
    l_norm, ab_norm = color.preprocess(rgb)
    model = build_colorizer(ColorizerConfig(fusion=False, image_size=64))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    history = model.fit(l_norm[None], ab_norm[None], epochs=40, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
