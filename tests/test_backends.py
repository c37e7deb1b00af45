"""The same model code on several Keras backends (the lent GPU machine trains with JAX; Colab uses TensorFlow).

`make test` runs this file under TensorFlow and again with KERAS_BACKEND=jax.
"""

import os
import subprocess
import sys

import keras
import numpy as np

from koala.architectures import build_colorizer
from koala.config import ColorizerConfig
from koala.train import save_head

OTHER = {"tensorflow": "jax", "jax": "tensorflow", "torch": "tensorflow"}


def test_fusion_model_trains_a_step_on_this_backend():
    keras.utils.set_random_seed(0)
    model = build_colorizer(ColorizerConfig(fusion=True, image_size=32, embedding_dim=12))
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    lightness = rng.uniform(-1, 1, (4, 32, 32, 1)).astype("float32")
    embedding = rng.uniform(0, 1, (4, 12)).astype("float32")
    ab = rng.uniform(-0.3, 0.3, (4, 32, 32, 2)).astype("float32")
    losses = [float(model.train_on_batch([lightness, embedding], ab)) for _ in range(15)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_head_saved_on_one_backend_predicts_the_same_on_another(tmp_path):
    config = ColorizerConfig(fusion=True, image_size=32, embedding_dim=12)
    model = build_colorizer(config)
    rng = np.random.default_rng(1)
    lightness = rng.uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    embedding = rng.uniform(0, 1, (2, 12)).astype("float32")
    expected = np.asarray(model.predict([lightness, embedding], verbose=0))
    save_head(model, config, tmp_path / "model.keras")
    np.save(tmp_path / "lightness.npy", lightness)
    np.save(tmp_path / "embedding.npy", embedding)
    other = OTHER[keras.backend.backend()]
    script = (
        "import numpy as np, keras, sys; import koala.fusion;"
        f"m = keras.saving.load_model(r'{tmp_path / 'model.keras'}');"
        f"p = m.predict([np.load(r'{tmp_path / 'lightness.npy'}'), np.load(r'{tmp_path / 'embedding.npy'}')], verbose=0);"
        f"np.save(r'{tmp_path / 'other.npy'}', np.asarray(p)); print(keras.backend.backend())"
    )
    environment = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == other
    np.testing.assert_allclose(np.load(tmp_path / "other.npy"), expected, atol=1e-4)
