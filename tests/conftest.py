"""Shared fixtures: tiny generated photos and tiny models, so tests never need downloads or ../shared."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


def make_photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A colourful synthetic photo: smooth colour gradients, a few coloured discs, some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            0.5 + 0.4 * np.sin(x / width * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6)),
            0.5 + 0.4 * np.sin(y / height * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6)),
            0.5 + 0.4 * np.cos((x + y) / (width + height) * np.pi * rng.uniform(1, 3)),
        ],
        axis=-1,
    )
    for _ in range(4):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 30)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < radius**2
        base[mask] = rng.uniform(0, 1, size=3)
    base += rng.normal(0, 0.02, size=base.shape)
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder of 24 small colourful JPEGs and PNGs (plus a subfolder)."""
    from koala import images

    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    for index in range(24):
        photo = make_photo(index, 96 + 8 * (index % 3), 128)
        target = folder / ("more" if index % 4 == 0 else "") / f"photo_{index:02d}.{'png' if index % 5 == 0 else 'jpg'}"
        images.write_image(target, photo)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained encoder-decoder (no fusion) saved as a model folder: model.keras + config.json."""
    from koala.config import ColorizerConfig
    from koala.model import build_colorizer
    from koala.train import save_head

    folder = tmp_path_factory.mktemp("tiny_model")
    config = ColorizerConfig(fusion=False, embedder="", embedder_weights="")
    model = build_colorizer(config)
    save_head(model, config, folder / "model.keras")
    config.save(folder / "config.json")
    return folder
