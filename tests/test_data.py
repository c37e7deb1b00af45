import csv
import hashlib
import shutil

import numpy as np
import pytest

from koala import color, data, outputs
from tests.conftest import make_photo


@pytest.fixture
def mixed_folder(tmp_path, photo_folder):
    folder = tmp_path / "mixed"
    shutil.copytree(photo_folder, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.jpg").write_text("a text file with a photo's name")
    (folder / "empty.png").write_bytes(b"")
    shutil.copy(folder / "photo_01.jpg", folder / "copy of photo 01.jpg")
    grey = color.grey_to_rgb(color.rgb_to_lightness(make_photo(99)))
    outputs.write_image(folder / "grey.jpg", grey)
    return folder


def test_prepare_mixed_folder(mixed_folder, tmp_path):
    destination = tmp_path / "prepared"
    messages = []
    report = data.prepare(mixed_folder, destination, embedder=None, size=64, progress=False, log=messages.append)
    assert report.added == 24
    rejected = dict(report.rejected)
    # of two identical files the first in sorted order is kept, the other reported as its duplicate
    assert set(rejected) == {"broken.jpg", "notes.jpg", "empty.png", "photo_01.jpg", "grey.jpg"}
    assert rejected["photo_01.jpg"] == "duplicate of copy of photo 01.jpg"
    assert "grey" in rejected["grey.jpg"]
    assert "empty" in rejected["empty.png"]
    assert any("broken.jpg" in message for message in messages)
    rows = data.read_manifest(destination)
    assert len(rows) == 24 and {row["split"] for row in rows} <= set(data.SPLITS)
    for row in rows:
        assert row["split"] == data.split_for(row["id"])
        image = data.load_prepared_image(destination, row["id"])
        assert image.shape == (64, 64, 3)
    with open(destination / "rejected.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5


def test_prepare_again_is_incremental_and_leaves_originals(mixed_folder, tmp_path):
    destination = tmp_path / "prepared"
    before = {path: path.read_bytes() for path in mixed_folder.rglob("*") if path.is_file()}
    data.prepare(mixed_folder, destination, embedder=None, size=64, progress=False, log=lambda m: None)
    first = (destination / "manifest.csv").read_text()
    outputs.write_image(mixed_folder / "new.png", make_photo(1234))
    report = data.prepare(mixed_folder, destination, embedder=None, size=64, progress=False, log=lambda m: None)
    assert report.added == 1 and report.known == 24
    assert len(data.read_manifest(destination)) == 25
    assert set(first.splitlines()) <= set((destination / "manifest.csv").read_text().splitlines())
    for path, content in before.items():
        assert path.read_bytes() == content


def test_split_is_deterministic_and_roughly_90_5_5():
    ids = [hashlib.sha256(str(value).encode()).hexdigest()[:16] for value in range(4000)]
    splits = [data.split_for(i) for i in ids]
    assert splits == [data.split_for(i) for i in ids]
    assert 0.88 < splits.count("train") / 4000 < 0.92
    assert 0.035 < splits.count("test") / 4000 < 0.065


def test_sepia_and_grey_are_monochrome_colour_is_not():
    photo = make_photo(5)
    lightness = color.rgb_to_lightness(photo)
    sepia = color.to_uint8(color.lab_to_rgb(np.stack([lightness, lightness * 0 + 8, lightness * 0 + 20], -1)))
    assert data.monochrome_reason(sepia) is not None
    assert data.monochrome_reason(color.grey_to_rgb(lightness)) is not None
    assert data.monochrome_reason(photo) is None


def test_embeddings_cached_once_and_only_for_new_images(photo_folder, tmp_path):
    destination = tmp_path / "prepared"
    data.prepare(photo_folder, destination, embedder=None, size=64, progress=False, log=lambda m: None)
    ids = [row["id"] for row in data.read_manifest(destination)]
    computed = data.update_embeddings(destination, "efficientnet-lite0", weights=None, progress=False)
    assert computed == len(ids)
    array = np.load(data.embedding_paths(destination, "efficientnet-lite0")[0])
    assert array.shape == (len(ids), 1000) and array.dtype == np.float16
    assert data.update_embeddings(destination, "efficientnet-lite0", weights=None, progress=False) == 0


def test_streaming_dataset_batches(photo_folder, tmp_path):
    destination = tmp_path / "prepared"
    data.prepare(photo_folder, destination, embedder=None, size=64, progress=False, log=lambda m: None)
    dataset = data.ColorDataset(destination, "train", batch_size=5, augment_images=True, shuffle=True, seed=3)
    lightness, ab = dataset[0]
    assert lightness.shape == (5, 64, 64, 1) and ab.shape == (5, 64, 64, 2)
    assert lightness.dtype == np.float32 and np.abs(ab).max() <= 1.0
    assert not np.array_equal(dataset.order_for(0), dataset.order_for(1))
    again = data.ColorDataset(destination, "train", batch_size=5, augment_images=True, shuffle=True, seed=3)
    np.testing.assert_array_equal(again[0][0], lightness)  # reproducible
