"""The in-memory trainer's budget handling: whole batches, the time/epoch cosine schedule, deadlines, validation
every n-th epoch (the settings the GPU runs in scripts/device_long_run.sh use)."""

import time

import numpy as np
import pytest

from koala import accelerated
from koala.config import ColorizerConfig
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def prepared_64(tmp_path_factory):
    from koala import data, outputs

    folder = tmp_path_factory.mktemp("accelerated")
    for index in range(24):
        outputs.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(300 + index, 80, 96))
    data.prepare(folder / "photos", folder / "prepared", embedder=None, size=64, progress=False, log=lambda m: None)
    return folder / "prepared"


def test_whole_batches_repeat_existing_photos_with_their_embeddings():
    photos = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    embeddings = np.arange(10, dtype=np.float16).reshape(10, 1)
    padded, padded_embeddings = accelerated._whole_batches(photos, embeddings, 4, seed=1, log=lambda m: None)
    assert len(padded) == 12 and len(padded_embeddings) == 12
    assert np.array_equal(padded[:10], photos)
    extra = padded[10:, 0, 0, 0]
    assert len(set(extra.tolist())) == 2 and set(extra.tolist()) <= set(range(10))
    assert np.array_equal(padded_embeddings[10:, 0].astype(int), extra)  # each copy keeps its own embedding
    same, none = accelerated._whole_batches(photos[:8], None, 4, seed=1, log=lambda m: None)
    assert same is not None and len(same) == 8 and none is None


def _config(prepared, run_dir, **changes):
    return ColorizerConfig(data=str(prepared), run_dir=str(run_dir), fusion=False, image_size=64, batch_size=4,
                           learning_rate=1e-3, **changes)


def _history(run_dir):
    import csv

    return list(csv.DictReader(open(run_dir / "history.csv")))


def test_cosine_schedule_over_epochs_and_validation_every_second_epoch(prepared_64, tmp_path):
    config = _config(prepared_64, tmp_path / "run", epochs=4)
    summary = accelerated.train_in_memory(config, cosine=True, validate_every=2, log=lambda m: None)
    rows = _history(tmp_path / "run")
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4] and summary["epochs"] == 4
    rates = [float(row["learning_rate"]) for row in rows]
    assert rates[0] == pytest.approx(1e-3)
    # epoch e (from 0) starts at fraction e / 4 of the cosine from 1e-3 down to 5 % of it
    expected = [1e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * epoch / 4))) for epoch in range(4)]
    assert rates == pytest.approx(expected, rel=1e-3)
    assert [row["validated"] for row in rows] == ["0", "1", "0", "1"]
    assert all(row["val_loss"] for row in rows[1::2]) and not any(row["val_loss"] for row in rows[0::2])
    assert summary["images_per_epoch"] % 4 == 0 and summary["images_per_epoch"] >= summary["train_images"]
    assert (tmp_path / "run" / "model.keras").is_file()


def test_a_past_deadline_stops_after_the_first_epoch(prepared_64, tmp_path):
    config = _config(prepared_64, tmp_path / "run", epochs=50)
    summary = accelerated.train_in_memory(config, deadline=time.time() - 1, log=lambda m: None)
    assert summary["epochs"] == 1 and len(_history(tmp_path / "run")) == 1
