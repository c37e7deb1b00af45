"""Scaling out, in one run: photos/s of a folder on one machine, on a local Dask cluster of 1 and of 2 worker
processes (``koala colorize --cluster local:N``), and of ``deploy/serve-replicas`` with 1 and with 3 replicas
under the same load.

    .venv/bin/python benchmarks/scale_out.py [--model models/default] [--photos 32] [--coloured 40]

The folder runs go through the library calls behind ``koala colorize`` (with and without ``--cluster``) on a
cluster that is already up, so the figures include each worker loading the model (the plugin, once per run) but
not the workers' start (TensorFlow's import); the start-up times are printed beside them. The replicas get
uploads from ``--concurrency`` clients until ``--coloured`` colour photos are back (a client told 503 tries again
0.2 s later), so a figure is the rate of colour photos NGINX hands back.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from pathlib import Path

from _common import ROOT, detailed_photo, machine
from serve_load import run_load

from tests.live_replicas import Replicas


def write_folder(folder: Path, count: int, height: int, width: int) -> Path:
    from koala import outputs

    folder.mkdir(parents=True)
    for index in range(count):
        outputs.write_image(folder / f"scan_{index:03d}.jpg", detailed_photo(height, width, seed=index), quality=90)
    return folder


def folder_runs(model: Path, folder: Path, scratch: Path, chunk_size: int) -> list[tuple[str, float, float]]:
    """(configuration, start-up s, photos/s) for one machine and local clusters of 1 and 2 workers."""
    import distributed

    from koala.cluster import colorize_on_cluster
    from koala.colorize import Colorizer

    photos = len(list(folder.iterdir()))
    rows = []
    started = time.perf_counter()
    colorizer = Colorizer(model)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    colorizer.colorize_files([folder], scratch / "one machine", progress=False)
    rows.append(("one machine (koala colorize)", startup, photos / (time.perf_counter() - started)))
    del colorizer
    for workers in (1, 2):
        started = time.perf_counter()
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            client.run(importlib.import_module, "keras")  # the workers' start: TensorFlow imported
            startup = time.perf_counter() - started
            started = time.perf_counter()
            results = colorize_on_cluster([folder], scratch / f"cluster {workers}", cluster.scheduler_address,
                                          settings={"model_path": model}, chunk_size=chunk_size, progress=False)
            seconds = time.perf_counter() - started
        assert all(result.status == "done" for result in results), [r for r in results if r.status != "done"]
        rows.append((f"--cluster local:{workers}", startup, photos / seconds))
    return rows


def replica_run(model: Path, replicas: int, photo: bytes, target: int, concurrency: int) -> tuple[float, dict]:
    """(start-up s, serve_load.run_load's report) for ``deploy/serve-replicas REPLICAS`` (1 worker and a queue
    of 2 each), its clients uploading until ``target`` photos are coloured, each told 503 trying again 0.2 s later
    (sooner than Retry-After, to keep every replica busy)."""
    live = Replicas(model, replicas)
    try:
        started = time.perf_counter()
        live.wait_ready(timeout=300)
        return time.perf_counter() - started, run_load(live.url, photo, 100 * target, concurrency,
                                                       until_coloured=target, pause_after_refusal=0.2)
    finally:
        live.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="model folder")
    parser.add_argument("--photos", type=int, default=32, help="photos in the folder")
    parser.add_argument("--size", default="900x1200", help="photo size, HEIGHTxWIDTH")
    parser.add_argument("--chunk-size", type=int, default=4, help="photos per cluster task")
    parser.add_argument("--coloured", type=int, default=40, help="colour photos to get back from the replicas, per run")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight at once")
    arguments = parser.parse_args(argv)
    height, width = (int(value) for value in arguments.size.lower().split("x"))
    model = Path(arguments.model).resolve()

    print(machine())
    print(f"model {model.name}; {arguments.photos} JPEGs of {width}×{height}")
    with tempfile.TemporaryDirectory(prefix="koala-scale-out-") as scratch:
        scratch = Path(scratch)
        folder = write_folder(scratch / "photos", arguments.photos, height, width)
        rows = folder_runs(model, folder, scratch, arguments.chunk_size)
        photo = (folder / "scan_000.jpg").read_bytes()
    print(f"\n{'a folder':<32} {'start s':>8} {'photos/s':>9} {'× one':>6}")
    for name, startup, rate in rows:
        print(f"{name:<32} {startup:>8.1f} {rate:>9.2f} {rate / rows[0][2]:>6.2f}")

    print(f"\nreplicas behind NGINX: {arguments.concurrency} clients until {arguments.coloured} photos are coloured "
          "(1 worker and a queue of 2 per replica)")
    print(f"{'replicas':<10} {'start s':>8} {'coloured':>8} {'503':>5} {'other':>6} {'photos/s':>9} {'× one':>6} "
          f"{'p50 s':>7} {'p95 s':>7}")
    baseline = None
    for replicas in (1, 3):
        startup, report = replica_run(model, replicas, photo, arguments.coloured, arguments.concurrency)
        baseline = baseline or report["throughput"]
        print(f"{replicas:<10} {startup:>8.1f} {report['ok']:>8} {report['busy']:>5} "
              f"{sum(report['others'].values()):>6} {report['throughput']:>9.2f} "
              f"{report['throughput'] / baseline:>6.2f} {report['p50']:>7.2f} {report['p95']:>7.2f}"
              + (f"   other: {report['others']}" if report["others"] else ""))
    print(f"\n{os.cpu_count()} cores: one process already spreads the network over every core (TensorFlow's "
          "thread pool), so more processes gain only where one leaves a core idle (decoding, encoding, writing, "
          "HTTP), and each costs its own start (TensorFlow, the model) and memory.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
