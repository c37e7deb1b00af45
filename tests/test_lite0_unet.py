"""The pretrained-encoder U-Net: shapes, pretrained weights, save/load, training on cached features."""

import csv
import io
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from koala import color, data, efficientnet_lite, feature_cache, lite0_unet, outputs
from koala.architectures import build_colorizer
from koala.config import ColorizerConfig
from koala.train import load_head, save_head, train
from tests.conftest import make_photo


def _config(**changes):
    values = dict(architecture="lite0-unet", embedder_weights="", encoder_weights="")
    values.update(changes)
    return ColorizerConfig(**values)


def test_shapes_of_the_regression_and_classification_heads():
    model = build_colorizer(_config())
    assert model.name == "koala_lite0_unet"
    assert [tuple(tensor.shape) for tensor in model.inputs] == [(None, 256, 256, 1), (None, 1000)]
    assert tuple(model.output.shape) == (None, 64, 64, 2)
    encoder = model.get_layer(lite0_unet.ENCODER_NAME)
    assert [tuple(tensor.shape[1:]) for tensor in encoder.outputs] == [(64, 64, 24), (32, 32, 40), (16, 16, 112)]
    assert not encoder.trainable
    decoder = model.get_layer(lite0_unet.DECODER_NAME)
    assert decoder.get_layer("fusion").output.shape[1:] == (8, 8, 1320)
    classification = build_colorizer(_config(loss="classification", fusion=False))
    assert len(classification.inputs) == 1
    assert tuple(classification.output.shape)[1:3] == (64, 64)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="divisible by 32"):
        build_colorizer(_config(image_size=200))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_colorizer(_config(architecture="vgg"))
    with pytest.raises(ValueError, match="unknown loss"):
        build_colorizer(_config(loss="nonsense"))


def test_the_encoder_sees_the_grey_photo_as_the_classifier_does():
    rng = np.random.default_rng(3)
    lightness = rng.uniform(0, 100, (2, 32, 32)).astype(np.float32)
    layer = lite0_unet.LightnessToGrey()
    got = np.asarray(layer(color.normalize_lightness(lightness)[..., None]))
    grey = color.grey_to_rgb(lightness).astype(np.float32)
    expected = efficientnet_lite.preprocess_input(grey)
    assert got.shape == expected.shape == (2, 32, 32, 3)
    assert np.abs(got - expected).max() <= 1.0 / 128 + 1e-5  # within the uint8 rounding of grey_to_rgb


def test_pretrained_weights_are_really_loaded_from_the_pth():
    from koala.torch_pickle import load_state_dict

    model = lite0_unet.build_lite0_unet(_config(), weights="imagenet")
    state = load_state_dict(efficientnet_lite.pretrained_torch_file(), expected_sha256=efficientnet_lite.PRETRAINED_SHA256)
    encoder = model.get_layer(lite0_unet.ENCODER_NAME)
    decoder = model.get_layer(lite0_unet.DECODER_NAME)
    # torch block 3 is stage 3's first block (in the frozen encoder); block 15 is stage 7's (fine-tuned)
    depthwise = encoder.get_layer("stage3_block1_depthwise_convolution").get_weights()[0]
    np.testing.assert_array_equal(depthwise, state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    project = decoder.get_layer("stage7_block1_project_convolution").get_weights()[0]
    np.testing.assert_array_equal(project, state["_blocks.15._project_conv.weight"].transpose(2, 3, 1, 0))
    stem = encoder.get_layer("stem_batch_normalization").get_weights()
    np.testing.assert_array_equal(stem[2], state["_bn0.running_mean"])
    random = lite0_unet.build_lite0_unet(_config(), weights=None)
    assert not np.allclose(random.get_layer(lite0_unet.ENCODER_NAME).get_layer(
        "stage3_block1_depthwise_convolution").get_weights()[0], depthwise)


def test_save_and_load_give_the_same_predictions(tmp_path):
    config = _config(image_size=64)
    model = build_colorizer(config)
    save_head(model, config, tmp_path / "model.keras")
    config.save(tmp_path / "config.json")
    loaded, loaded_config = load_head(tmp_path)
    assert loaded_config.architecture == "lite0-unet"
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (2, 64, 64, 1)).astype("float32"), rng.dirichlet(np.ones(1000), 2).astype("float32")]
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=1e-5)


def test_feature_cache_matches_the_encoder_and_is_computed_once(prepared):
    config = _config(image_size=64)
    messages = []
    folder = feature_cache.update_features(prepared, config, progress=False, log=messages.append)
    assert len(messages) == 1
    ids = (folder / "ids").read_text().split()
    assert ids == [row["id"] for row in data.read_manifest(prepared)]
    features_8 = np.load(folder / "features-8.npy", mmap_mode="r")
    ab = np.load(folder / "ab.npy", mmap_mode="r")
    assert features_8.shape == (len(ids), 8, 8, 40) and ab.shape == (len(ids), 16, 16, 2)
    # the cache holds what the (random-weight, seeded) encoder gives
    encoder = lite0_unet.build_lite0_unet(config.replace(fusion=False), weights=None).get_layer(lite0_unet.ENCODER_NAME)
    rgb = data.load_prepared_image(prepared, ids[0])
    lightness, true_ab = color.preprocess(rgb)
    fresh = encoder.predict_on_batch(lightness[None])[1][0]
    assert not np.allclose(fresh, 0)
    np.testing.assert_allclose(ab[0], true_ab.reshape(16, 4, 16, 4, 2).mean(axis=(1, 3)), atol=2e-3)
    assert not any(folder.glob(".*.part"))
    messages.clear()
    feature_cache.update_features(prepared, config, progress=False, log=messages.append)
    assert messages == []  # nothing computed the second time


def test_adding_photos_computes_only_theirs_and_gives_the_cache_a_fresh_run_would(prepared, tmp_path):
    import keras

    config = _config(image_size=64)  # random encoder weights: seeded alike before each cache is computed
    grown = tmp_path / "grown"
    shutil.copytree(prepared, grown, ignore=shutil.ignore_patterns("features-*"))  # no cache from other tests
    keras.utils.set_random_seed(7)
    feature_cache.update_features(grown, config, progress=False, log=lambda message: None)
    extra = tmp_path / "extra"
    extra.mkdir()
    for index in (40, 41):
        outputs.write_image(extra / f"new_{index}.jpg", make_photo(index, 112, 128))
    data.prepare(extra, grown, embedder=None, size=64, progress=False, log=lambda message: None)
    ids = [row["id"] for row in data.read_manifest(grown)]
    messages = []
    keras.utils.set_random_seed(7)
    folder = feature_cache.update_features(grown, config, progress=False, log=messages.append)
    assert len(ids) == 26 and messages == [
        f"computing the frozen encoder's features of 2 photos once, 24 copied from the previous cache (cached in {folder})"]
    assert (folder / "ids").read_text().split() == ids
    # the same arrays as a cache computed from nothing
    fresh = tmp_path / "fresh"
    (fresh / "images").mkdir(parents=True)
    shutil.copy(grown / "manifest.csv", fresh / "manifest.csv")
    for image_id in ids:
        shutil.copy(grown / "images" / f"{image_id}.jpg", fresh / "images")
    keras.utils.set_random_seed(7)
    fresh_folder = feature_cache.update_features(fresh, config, progress=False, log=lambda message: None)
    for name in ("features-4", "features-8", "features-16", "ab"):
        np.testing.assert_allclose(np.load(folder / f"{name}.npy"), np.load(fresh_folder / f"{name}.npy"), atol=1e-3)
    # removing a photo needs no encoder at all
    data.write_manifest(grown, data.read_manifest(grown)[1:])
    messages.clear()
    feature_cache.update_features(grown, config, progress=False, log=messages.append)
    assert messages == [f"rewriting {folder} for the prepared set's 25 photos, all copied from the previous cache"]
    np.testing.assert_array_equal(np.load(folder / "ab.npy"), np.load(fresh_folder / "ab.npy")[1:])
    assert not any(folder.glob(".*.part"))


def test_flipped_batches_flip_features_and_target_together(prepared):
    config = _config(image_size=64)
    feature_cache.update_features(prepared, config, progress=False, log=lambda message: None)
    plain = feature_cache.FeatureDataset(prepared, "train", config, batch_size=8, shuffle=True, seed=5)
    flipped = feature_cache.FeatureDataset(prepared, "train", config, batch_size=8, shuffle=True, seed=5,
                                           augment_features=True)
    (inputs, target), (flipped_inputs, flipped_target) = plain.load_batch(0, 1), flipped.load_batch(0, 1)
    changed = [i for i in range(len(target)) if not np.array_equal(target[i], flipped_target[i])]
    assert changed and len(changed) < len(target)
    for i in changed:
        np.testing.assert_array_equal(flipped_target[i], target[i][:, ::-1])
        np.testing.assert_array_equal(flipped_inputs[0][i], inputs[0][i][:, ::-1])
    np.testing.assert_array_equal(flipped_inputs[3], inputs[3])  # the embedding is not spatial


def test_samples_per_epoch_draws_that_many_photos_per_epoch(prepared):
    config = _config(image_size=64)
    feature_cache.update_features(prepared, config, progress=False, log=lambda message: None)
    whole = feature_cache.FeatureDataset(prepared, "train", config, batch_size=8, shuffle=True, seed=5)
    drawn = feature_cache.FeatureDataset(prepared, "train", config, batch_size=8, shuffle=True, seed=5,
                                         samples_per_epoch=12)
    assert whole.batches_per_epoch == -(-len(whole.rows) // 8) and drawn.batches_per_epoch == 2
    order = drawn.order_for(3)
    assert len(order) == 12 and order.max() < len(drawn.rows)
    np.testing.assert_array_equal(order, drawn.order_for(3))  # a function of (seed, epoch): resumable
    assert not np.array_equal(order, drawn.order_for(4))
    (inputs, target) = drawn.load_batch(1, 3)
    assert len(target) == 4 and all(len(array) == 4 for array in inputs)
    assert len(list(drawn.batches(0, 2))) == 4


def test_one_image_overfit_loss_falls():
    import keras

    keras.utils.set_random_seed(0)  # the initial weights too: unseeded, one JAX run in CI stopped at 0.23x
    config = _config(image_size=64)
    decoder = lite0_unet.build_decoder(config)
    rng = np.random.default_rng(1)
    shapes = lite0_unet.feature_shapes(64)
    inputs = [rng.normal(size=(1,) + shapes[factor]).astype("float32") for factor in (4, 8, 16)]
    inputs.append(rng.dirichlet(np.ones(1000), 1).astype("float32"))
    target = color.preprocess(make_photo(0, 64, 64))[1].reshape(16, 4, 16, 4, 2).mean(axis=(1, 3))[None]
    decoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    first = float(decoder.evaluate(inputs, target, verbose=0))
    decoder.fit(inputs, target, epochs=60, verbose=0)
    assert float(decoder.evaluate(inputs, target, verbose=0)) < 0.2 * first


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_two_phases_resume_and_colorize(prepared, tmp_path):
    from koala.colorize import Colorizer

    run_dir = tmp_path / "run"
    # ImageNet weights: with random ones, stage 7's output on these flat synthetic photos can leave every
    # unit of the fusion's ReLU dead, and stages 6-7 then get no gradient at all
    config = _config(image_size=64, data=str(prepared), run_dir=str(run_dir), epochs=1, batch_size=4,
                     fine_tune_after=2, encoder_weights="imagenet")
    messages = []
    heads = []
    for epochs in (1, 2, 3):  # three calls: each resumes the run
        result = train(config.replace(epochs=epochs), verbose=0, log=messages.append)
        heads.append(load_head(run_dir)[0])
        with zipfile.ZipFile(run_dir / "model.keras") as saved:  # the head alone: no optimizer state inside
            with h5py.File(io.BytesIO(saved.read("model.weights.h5")), "r") as weights_file:
                names = []
                weights_file.visit(names.append)
        assert names and not [name for name in names if "optimizer" in name]
    assert result.epochs_completed == 3 and [row["epoch"] for row in _history(run_dir)] == ["1", "2", "3"]
    assert sum("resuming" in message for message in messages) == 2
    assert any("stages 6-7 now train" in message and "epoch 3" in message for message in messages)

    def weights(model, part, name):
        return model.get_layer(part).get_layer(name).get_weights()[0]

    encoder, decoder = lite0_unet.ENCODER_NAME, lite0_unet.DECODER_NAME
    # the encoder never trains; stage 6 only in the fine-tuning phase (epoch 3); the decoder in every epoch
    np.testing.assert_array_equal(weights(heads[0], encoder, "stage5_block1_expand_convolution"),
                                  weights(heads[2], encoder, "stage5_block1_expand_convolution"))
    np.testing.assert_array_equal(weights(heads[0], decoder, "stage6_block1_expand_convolution"),
                                  weights(heads[1], decoder, "stage6_block1_expand_convolution"))
    assert not np.allclose(weights(heads[1], decoder, "stage6_block1_expand_convolution"),
                           weights(heads[2], decoder, "stage6_block1_expand_convolution"))
    assert not np.allclose(weights(heads[0], decoder, "decoder_4_convolution"),
                           weights(heads[1], decoder, "decoder_4_convolution"))

    colorizer = Colorizer(run_dir, embedder_weights="")
    photo = make_photo(7, 150, 97)
    coloured = colorizer.colorize(photo)
    assert coloured.shape == photo.shape and coloured.dtype == np.uint8
    # the photo's own lightness carries the detail (exact where the colour is in gamut; a briefly trained
    # model's vivid guesses may be clipped, which moves L* a little)
    lightness_in = color.rgb_to_lab(photo)[..., 0].ravel()
    lightness_out = color.rgb_to_lab(coloured)[..., 0].ravel()
    assert np.corrcoef(lightness_in, lightness_out)[0, 1] > 0.95


def test_a_saved_model_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    config = _config(image_size=64)
    save_head(build_colorizer(config), config, tmp_path / "model.keras")
    config.save(tmp_path / "config.json")
    # a new interpreter has imported nothing of koala: loading must register the U-Net's own layers itself
    script = ("import sys; from koala.train import load_head; "
              "model, config = load_head(sys.argv[1]); print(model.name, config.architecture)")
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["koala_lite0_unet", "lite0-unet"]
