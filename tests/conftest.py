"""Shared fixtures: tiny generated photos and tiny models, so tests never need downloads or ../shared."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tests.make_bad_inputs import make_photo  # noqa: F401  (the one synthetic-photo generator; tests import it from here)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder of 24 small colourful JPEGs and PNGs (plus a subfolder)."""
    from koala import outputs

    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    for index in range(24):
        photo = make_photo(index, 96 + 8 * (index % 3), 128)
        target = folder / ("more" if index % 4 == 0 else "") / f"photo_{index:02d}.{'png' if index % 5 == 0 else 'jpg'}"
        outputs.write_image(target, photo)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained encoder-decoder (no fusion) saved as a model folder: model.keras + config.json."""
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.train import save_head

    folder = tmp_path_factory.mktemp("tiny_model")
    config = ColorizerConfig(fusion=False, embedder="", embedder_weights="")
    model = build_colorizer(config)
    save_head(model, config, folder / "model.keras")
    config.save(folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def prepared(photo_folder, tmp_path_factory):
    """:func:`photo_folder` prepared at 64 px with (random-weight) EfficientNet-Lite0 embeddings; one per test module."""
    from koala import data

    destination = tmp_path_factory.mktemp("prepared")
    data.prepare(photo_folder, destination, embedder="efficientnet-lite0", embedder_weights=None, size=64,
                 progress=False, log=lambda message: None)
    return destination
