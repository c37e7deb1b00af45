"""scripts/experiments/soup.py: model folders' weights averaged into a new folder (how the default's were made)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from koala.architectures import build_colorizer
from koala.config import ColorizerConfig
from koala.train import load_head, save_head

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "soup.py"


def _module():
    spec = importlib.util.spec_from_file_location("soup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(path, config, seed):
    model = build_colorizer(config)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    save_head(model, config, path / "model.keras")
    config.save(path / "config.json")
    return model.get_weights()


def test_the_soup_holds_the_mean_of_its_ingredients_weights(tmp_path):
    config = ColorizerConfig(architecture="lite0-unet", embedder_weights="", encoder_weights="", image_size=64)
    weights = [_folder(tmp_path / name, config, seed) for seed, name in enumerate(("a", "b", "c"))]
    assert _module().main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"),
                           "--out", str(tmp_path / "soup")]) == 0
    soup, soup_config = load_head(tmp_path / "soup")
    assert soup_config.image_size == 64 and "a + " in soup_config.init_from
    for index, averaged in enumerate(soup.get_weights()):
        np.testing.assert_allclose(averaged, np.mean([w[index] for w in weights], axis=0), rtol=1e-5, atol=1e-6)


def test_heads_of_other_shapes_are_refused(tmp_path):
    base = dict(architecture="lite0-unet", embedder_weights="", encoder_weights="", image_size=64)
    _folder(tmp_path / "a", ColorizerConfig(**base), 0)
    _folder(tmp_path / "b", ColorizerConfig(**base, fusion=False), 1)
    with pytest.raises(SystemExit):
        _module().main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()
