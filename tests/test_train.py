import csv

import keras
import numpy as np
import pytest

from koala.config import ColorizerConfig
from koala.train import load_head, load_state, train


def _config(prepared, run_dir, **changes):
    values = dict(data=str(prepared), run_dir=str(run_dir), epochs=1, batch_size=8, image_size=64, fusion=False,
                  embedder_weights="")
    values.update(changes)
    return ColorizerConfig(**values)


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_writes_a_complete_run_folder(prepared, tmp_path):
    run_dir = tmp_path / "run"
    result = train(_config(prepared, run_dir, epochs=2), verbose=0, log=lambda message: None)
    assert result.epochs_completed == 2
    for name in ("config.json", "state.json", "model.keras", "history.csv"):
        assert (run_dir / name).exists(), name
    assert [row["epoch"] for row in _history(run_dir)] == ["1", "2"]
    assert all(np.isfinite(float(row["loss"])) for row in _history(run_dir))
    model, config = load_head(run_dir)
    assert config.fusion is False and model.count_params() > 1_000_000
    assert getattr(model, "optimizer", None) is None  # the head alone


def test_resume_continues_after_the_last_completed_epoch(prepared, tmp_path):
    run_dir = tmp_path / "run"
    train(_config(prepared, run_dir, epochs=1), verbose=0, log=lambda message: None)
    weights_after_one = load_head(run_dir)[0].get_weights()
    messages = []
    result = train(_config(prepared, run_dir, epochs=3), verbose=0, log=messages.append)
    assert any("resuming" in message and "after epoch 1" in message for message in messages)
    assert result.epochs_completed == 3 and load_state(run_dir)["epoch"] == 3
    assert [row["epoch"] for row in _history(run_dir)] == ["1", "2", "3"]
    assert any(not np.allclose(a, b) for a, b in zip(weights_after_one, load_head(run_dir)[0].get_weights()))
    # asking again for 3 epochs does nothing
    messages.clear()
    train(_config(prepared, run_dir, epochs=3), verbose=0, log=messages.append)
    assert any("nothing to do" in message for message in messages)


def test_a_resumed_run_takes_the_learning_rate_it_is_given(prepared, tmp_path):
    """The checkpoint's optimizer remembers its rate; resuming with a lower one must use the lower one."""
    run_dir = tmp_path / "run"
    train(_config(prepared, run_dir, epochs=1, learning_rate=1e-3), verbose=0, log=lambda message: None)
    messages = []
    train(_config(prepared, run_dir, epochs=2, learning_rate=1e-4), verbose=0, log=messages.append)
    assert any("learning rate 0.001 -> 0.0001 from epoch 2" in message for message in messages)
    rates = [float(row["learning_rate"]) for row in _history(run_dir)]
    np.testing.assert_allclose(rates, [1e-3, 1e-4], rtol=1e-5)
    checkpoint = keras.saving.load_model(str(run_dir / load_state(run_dir)["checkpoint"]))
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(checkpoint.optimizer.learning_rate)), 1e-4, rtol=1e-5)


def test_resumed_run_equals_uninterrupted_run(prepared, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(_config(prepared, straight, epochs=2, augment=False), verbose=0, log=lambda m: None)
    train(_config(prepared, stopped, epochs=1, augment=False), verbose=0, log=lambda m: None)
    after_one = load_head(stopped)[0].get_weights()
    train(_config(prepared, stopped, epochs=2, augment=False), verbose=0, log=lambda m: None)

    def distance(first, second):
        return np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(first, second)))

    reference = load_head(straight)[0].get_weights()
    assert distance(after_one, reference) > 0.1  # the second epoch did change the weights
    # the same batches in the same order from the same state: the same weights
    assert distance(load_head(stopped)[0].get_weights(), reference) < 1e-4


def test_fusion_training_with_embeddings_and_fine_tuning(prepared, tmp_path):
    base = tmp_path / "base"
    train(_config(prepared, base, fusion=True, embedder="efficientnet-lite0"), verbose=0, log=lambda m: None)
    tuned = tmp_path / "tuned"
    messages = []
    train(_config(prepared, tuned, fusion=True, embedder="efficientnet-lite0", init_from=str(base)),
          verbose=0, log=messages.append)
    assert any("starting from" in message for message in messages)
    with pytest.raises(ValueError, match="cannot fine-tune"):
        train(_config(prepared, tmp_path / "bad", fusion=False, init_from=str(base)), verbose=0, log=lambda m: None)


def test_changing_the_model_of_a_started_run_is_refused(prepared, tmp_path):
    run_dir = tmp_path / "run"
    train(_config(prepared, run_dir), verbose=0, log=lambda m: None)
    with pytest.raises(ValueError, match="new run folder"):
        train(_config(prepared, run_dir, fusion=True, epochs=2), verbose=0, log=lambda m: None)


def test_a_new_output_head_starts_from_every_other_layer_of_the_model_it_fine_tunes():
    from koala import lite0_unet
    from koala.train import copy_matching_weights

    keras.utils.set_random_seed(3)
    base = dict(architecture="lite0-unet", image_size=64, embedder_weights="", encoder_weights="")
    source = lite0_unet.build_decoder(ColorizerConfig(loss="mse", **base))
    target = lite0_unet.build_decoder(ColorizerConfig(loss="classification", **base))
    assert copy_matching_weights(target, source) == ["ab_classes"]
    for name in ("fusion_mix", "stage7_block1_project_convolution", "decoder_4_batch_normalization"):
        for copied, original in zip(target.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(copied, original)


def test_class_weights_read_an_even_sample_of_a_large_split(tmp_path, monkeypatch):
    """Rebalancing counts the ab classes of at most ``sample`` images, spread over the whole split, and the
    weights are kept in the run folder (a resumed run reads none)."""
    import types

    from koala import train as train_module

    read = []

    def fake_image(prepared, index):
        read.append(index)
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[..., 0] = 200 if index % 2 else 30
        return rgb

    monkeypatch.setattr(train_module.data, "load_prepared_image", fake_image)
    split = types.SimpleNamespace(prepared=None, ids=list(range(100, 200)))
    weights = train_module.class_weights_for(split, tmp_path, log=lambda message: None, sample=10)
    assert len(read) == 10 and read[0] == 100 and read[-1] == 199 and len(set(read)) == 10
    assert (tmp_path / "class_weights.npy").exists() and np.isfinite(weights).all()
    read.clear()
    again = train_module.class_weights_for(split, tmp_path, log=lambda message: None, sample=10)
    assert read == [] and np.array_equal(again, weights)
