"""A folder run as a pipeline (issue 24): photos read, coloured in batches and written on threads, with the results,
files and guarantees of one photo after another."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from koala import colorize, images, outputs
from koala.colorize import Colorizer, photos_in_flight
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def colorizer(tiny_model_dir):
    return Colorizer(tiny_model_dir)


def _quiet(message):
    pass


@pytest.fixture
def mixed_folder(tmp_path):
    """Grey JPEGs (their luma kept), colour JPEGs, grey and colour PNGs, odd sizes, a subfolder, and two photos
    that cannot be read (not an image; a truncated JPEG) among them."""
    folder = tmp_path / "mixed"
    for index in range(10):
        photo = make_photo(300 + index, 90 + 7 * index, 140 - 5 * index)
        if index % 2 == 0:
            photo = np.repeat(photo.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
        name = f"{'sub/' if index % 4 == 3 else ''}photo_{index:02d}.{'png' if index % 3 == 0 else 'jpg'}"
        outputs.write_image(folder / name, photo)
    (folder / "photo_04b.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    whole = (folder / "photo_05.jpg").read_bytes()
    (folder / "photo_05b.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


def _files(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _per_photo_forward(colorizer, monkeypatch):
    """The network run on one photo at a time: a batched forward rounds the last float bits differently, so only
    then are outputs comparable byte for byte with colorize_file's."""
    batched = Colorizer.colour_planes_batch

    def one_by_one(self, lightness):
        return [batched(self, [plane])[0] for plane in lightness]

    monkeypatch.setattr(Colorizer, "colour_planes_batch", one_by_one)


def test_pipeline_gives_the_sequential_results_and_files(colorizer, mixed_folder, tmp_path, monkeypatch):
    _per_photo_forward(colorizer, monkeypatch)
    sequential_log, pipelined_log = [], []
    sequential = colorizer.colorize_files([mixed_folder], tmp_path / "seq", workers=0, progress=False,
                                          log=sequential_log.append)
    pipelined = colorizer.colorize_files([mixed_folder], tmp_path / "pipe", workers=2, progress=False,
                                         log=pipelined_log.append)
    assert [r.status for r in pipelined].count("done") == 10
    failed = [r for r in pipelined if r.status == "failed"]
    assert [r.source for r in failed] == [str(mixed_folder / "photo_04b.jpg"), str(mixed_folder / "photo_05b.jpg")]
    assert all(r.source in r.error for r in failed)
    assert [(r.source, r.status, r.error) for r in pipelined] == [(r.source, r.status, r.error) for r in sequential]
    assert pipelined_log == sequential_log  # the same error lines, in the same order
    assert _files(tmp_path / "pipe") == _files(tmp_path / "seq")  # byte for byte, no temporary files
    # ... which are colorize_file's, photo by photo
    for result in pipelined:
        if result.status == "done":
            expected = tmp_path / "single" / Path(result.output).name
            colorizer.colorize_file(result.source, expected)
            assert Path(result.output).read_bytes() == expected.read_bytes(), result.source


def test_batched_forward_colours_each_photo_as_its_own(colorizer, mixed_folder, tmp_path):
    """With real batches, each output is its own photo's colour (the planes do not change places), equal to
    colorize_file's to within one level where the batched forward's rounding differs."""
    sizes = []
    batched = Colorizer.colour_planes_batch

    def recording(lightness):
        sizes.append(len(lightness))
        time.sleep(0.05)  # a slow network: the reads run ahead and the batches fill
        return batched(colorizer, lightness)

    colorizer.colour_planes_batch = recording
    try:
        results = colorizer.colorize_files([mixed_folder], tmp_path / "pipe", workers=2, progress=False, log=_quiet)
    finally:
        del colorizer.colour_planes_batch
    assert max(sizes) > 1 and sum(sizes) == 10
    for result in results:
        if result.status == "done":
            single = colorizer.colorize(result.source)
            coloured = images.read_image(result.output)
            if result.output.endswith(".png"):
                assert np.abs(coloured.astype(int) - single.astype(int)).max() <= 1, result.source
            else:  # the output went through JPEG: compare with the single photo's file
                expected = tmp_path / "single" / Path(result.output).name
                colorizer.colorize_file(result.source, expected)
                difference = np.abs(coloured.astype(int) - images.read_image(expected).astype(int))
                assert difference.mean() < 0.05 and difference.max() <= 3, result.source


def test_skips_existing_outputs_and_names_photo_and_output_when_a_write_fails(colorizer, mixed_folder, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "sub").write_bytes(b"a file where the subfolder's outputs should go: their writes fail")
    (output / "photo_02.jpg").write_bytes(b"already coloured")
    results = colorizer.colorize_files([mixed_folder], output, workers=2, progress=False, log=_quiet)
    by_name = {Path(r.source).name: r for r in results}
    assert by_name["photo_02.jpg"].status == "skipped"
    assert (output / "photo_02.jpg").read_bytes() == b"already coloured"
    for name, suffix in (("photo_03", "png"), ("photo_07", "jpg")):
        failed = by_name[f"{name}.{suffix}"]
        assert failed.status == "failed"
        assert failed.error.startswith(f"{mixed_folder / 'sub' / name}.{suffix}: could not write "
                                       f"{output / 'sub' / name}.{suffix}: ")
    assert [r.status for r in results].count("done") == 7
    assert not list(output.rglob(".*.part"))
    again = colorizer.colorize_files([mixed_folder], output, workers=2, overwrite=True, progress=False, log=_quiet)
    assert {Path(r.source).name: r.status for r in again}["photo_02.jpg"] == "done"


def test_two_photos_with_one_output_are_done_then_skipped_as_in_order(colorizer, tmp_path):
    folder = tmp_path / "in"
    for index, name in enumerate(("a.jpg", "a.png", "b.jpg", "b.png", "c.png")):
        outputs.write_image(folder / name, make_photo(index, 50, 70))
    for workers in (0, 2):
        results = colorizer.colorize_files([folder], tmp_path / f"out{workers}", output_format="png",
                                           workers=workers, progress=False, log=_quiet)
        assert [r.status for r in results] == ["done", "skipped", "done", "skipped", "done"]
    assert _files(tmp_path / "out0") == _files(tmp_path / "out2")


def test_photos_in_flight_are_bounded_whatever_the_folder(colorizer, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    for index in range(30):
        outputs.write_image(folder / f"p{index:02d}.png", make_photo(index, 40, 60))
    lock = threading.Lock()
    held, most = 0, 0
    begin = Colorizer.begin_file

    def counting_begin(self, source, output_format, quality=95, reencode=False):
        nonlocal held, most
        with lock:
            held += 1
            most = max(most, held)
        pending = begin(self, source, output_format, quality, reencode)
        finish = pending.finish

        def counting_finish(ab, slope):
            nonlocal held
            time.sleep(0.02)  # slow encoding: the photos back up behind it
            data = finish(ab, slope)
            with lock:
                held -= 1
            return data

        return colorize.PendingPhoto(pending.lightness, counting_finish)

    monkeypatch.setattr(Colorizer, "begin_file", counting_begin)
    results = colorizer.colorize_files([folder], tmp_path / "out", workers=2, progress=False, log=_quiet)
    assert [r.status for r in results] == ["done"] * 30
    assert 2 <= most <= photos_in_flight(2)
    assert held == 0


def test_keyboard_interrupt_stops_promptly_leaving_whole_files_and_no_threads(colorizer, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    for index in range(24):
        outputs.write_image(folder / f"p{index:02d}.jpg", make_photo(index, 120, 160))
    batched = Colorizer.colour_planes_batch

    def interrupted(self, lightness):
        # Ctrl-C once a photo is written (a photo holds its place until written, so this comes before the end)
        if list((tmp_path / "out").glob("*.jpg")):
            raise KeyboardInterrupt
        return batched(self, lightness)

    begin = Colorizer.begin_file

    def slow_finish_begin(self, source, output_format, quality=95, reencode=False):
        pending = begin(self, source, output_format, quality, reencode)

        def finish(ab, slope):
            time.sleep(0.1)  # writes under way when the interrupt comes
            return pending.finish(ab, slope)

        return colorize.PendingPhoto(pending.lightness, finish)

    monkeypatch.setattr(Colorizer, "colour_planes_batch", interrupted)
    monkeypatch.setattr(Colorizer, "begin_file", slow_finish_begin)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        colorizer.colorize_files([folder], tmp_path / "out", workers=2, progress=False, log=_quiet)
    assert time.monotonic() - started < 10
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("koala-colorize")]
    written = sorted((tmp_path / "out").glob("*"))
    assert 0 < len(written) < 24
    for path in written:
        assert not path.name.startswith(".") and images.read_image(path).shape == (120, 160, 3)
    # the next run does the rest
    monkeypatch.undo()
    results = colorizer.colorize_files([folder], tmp_path / "out", workers=2, progress=False, log=_quiet)
    assert [r.status for r in results].count("skipped") == len(written)
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 24


def test_progress_bar_and_error_lines_as_one_photo_after_another(colorizer, mixed_folder, tmp_path, capsys):
    messages = []
    colorizer.colorize_files([mixed_folder], tmp_path / "out", workers=2, progress=True, log=messages.append)
    err = capsys.readouterr().err
    assert "12/12" in err
    assert len(messages) == 2 and all(message.startswith("error: ") for message in messages)
    assert "photo_04b.jpg" in messages[0] and "photo_05b.jpg" in messages[1]


def test_negative_workers_are_refused(colorizer, mixed_folder, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        colorizer.colorize_files([mixed_folder], tmp_path / "out", workers=-1, progress=False)
