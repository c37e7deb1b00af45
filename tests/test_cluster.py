"""Archive runs on a Dask cluster (issue 25): ``koala colorize ... --cluster local:2`` with one worker process killed
(SIGKILL) in the middle of the run. Every output must be there, complete and byte for byte the same as a run on
one machine with the same model and settings, with no partial file left; a second run skips them all.

The test starts everything itself: ``--cluster local:2`` starts a scheduler and two worker processes (their
nannies restart a worker that dies), with the tiny untrained model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from koala import outputs
from tests.conftest import make_photo

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = 36


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """36 small photos of different sizes: colour and grey JPEGs (grey ones keep their luma), PNGs, a subfolder."""
    folder = tmp_path_factory.mktemp("archive")
    (folder / "box 2").mkdir()
    for index in range(PHOTOS):
        photo = make_photo(index, 64 + 12 * (index % 7), 200 - 10 * (index % 5))
        target = folder / ("box 2" if index % 3 == 0 else "") / f"scan_{index:02d}"
        if index % 4 == 0:
            outputs.write_image(target.with_suffix(".png"), photo)
        elif index % 4 == 1:
            Image.fromarray(photo).convert("L").save(target.with_suffix(".jpg"), quality=90)
        else:
            outputs.write_image(target.with_suffix(".jpg"), photo)
    return folder


def run_koala(*arguments, **options) -> subprocess.Popen:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "koala", *map(str, arguments)], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, its_parent in parents.items() if its_parent == parent]
        found += children
        frontier += children
    return found


def dask_workers(pid: int) -> list[int]:
    """The worker processes a local cluster started under ``pid`` (multiprocessing's spawned children)."""
    workers = []
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in command:
            workers.append(child)
    return workers


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_lost_worker_loses_nothing_and_outputs_match_one_machine(archive, tiny_model_dir, tmp_path):
    from koala.colorize import Colorizer

    reference, output = tmp_path / "one machine", tmp_path / "cluster"
    results = Colorizer(tiny_model_dir).colorize_files([archive], reference, progress=False)
    assert [result.status for result in results] == ["done"] * PHOTOS

    started = time.monotonic()
    run = run_koala("colorize", archive, "--output", output, "--model", tiny_model_dir, "--cluster", "local:2",
                    "--chunk-size", "2")
    killed, written_at_kill = None, None
    try:
        while time.monotonic() - started < 180 and run.poll() is None:
            written = len(list(output.rglob("scan_*"))) if output.exists() else 0
            workers = dask_workers(run.pid)
            if written >= PHOTOS // 4 and len(workers) == 2:
                killed, written_at_kill = workers[0], written
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.1)
        stdout, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    print(f"\nkilled worker {killed} with {written_at_kill} of {PHOTOS} outputs written; the run took "
          f"{time.monotonic() - started:.0f} s")
    assert killed is not None, f"no worker to kill while the run went on:\n{stdout}\n{stderr[-3000:]}"
    assert written_at_kill < PHOTOS, "the run had finished before the kill"
    assert run.returncode == 0, stderr[-3000:]
    assert f"{PHOTOS} coloured, 0 already done, 0 failed" in stdout, (stdout, stderr[-3000:])
    assert not any(output.rglob("*.part")), "partial files were left"
    expected, got = files(reference), files(output)
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, f"outputs differ from one machine's: {different}"
    for name in expected:  # complete photos of the originals' size
        with Image.open(output / name) as image:
            image.load()
            original = next(archive.rglob(Path(name).stem + ".*"))
            with Image.open(original) as source:
                assert image.size == source.size and image.mode == "RGB"

    again = run_koala("colorize", archive, "--output", output, "--model", tiny_model_dir, "--cluster", "local:2")
    stdout, stderr = again.communicate(timeout=240)
    assert again.returncode == 0 and f"0 coloured, {PHOTOS} already done, 0 failed" in stdout, stderr[-3000:]


def test_each_failure_is_one_line_and_the_status_is_1(archive, tiny_model_dir, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for index, name in enumerate(("good.png", "also good.jpg")):
        outputs.write_image(source / name, make_photo(index, 80, 100))
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a truncated JPEG")
    run = run_koala("colorize", source, "--output", tmp_path / "out", "--model", tiny_model_dir, "--cluster", "local:1")
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 1, stderr[-3000:]
    assert "2 coloured, 0 already done, 1 failed" in stdout
    failures = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(failures) == 1 and "broken.jpg" in failures[0], stderr[-3000:]
    assert np.asarray(Image.open(tmp_path / "out" / "good.png")).shape == (80, 100, 3)


def test_cluster_arguments_and_missing_dask_are_one_line(tiny_model_dir, tmp_path, archive):
    run = run_koala("colorize", archive, "--output", tmp_path / "out", "--model", tiny_model_dir, "--cluster", "local:0")
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2 and stderr.strip().startswith("error: --cluster local:0") and len(stderr.splitlines()) == 1

    program = ("import sys; sys.modules['distributed'] = None; from koala.cli import main; "
               f"sys.exit(main(['colorize', {str(archive)!r}, '--output', {str(tmp_path / 'out')!r}, '--model', "
               f"{str(tiny_model_dir)!r}, '--cluster', 'local:2']))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ("error: koala colorize --cluster needs Dask (distributed is not installed): "
                                     "pip install -r requirements-cluster.txt")
    assert not (tmp_path / "out").exists()
