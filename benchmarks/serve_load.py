"""Load test for ``koala serve``: M requests, C at a time; prints throughput, latency and the 503 rate.

    # start a server for the run (an untrained tiny model unless --model is given)
    .venv/bin/python benchmarks/serve_load.py --requests 60 --concurrency 8 --workers 2 --queue 4

    # or point it at a running server (or at nginx in front of several)
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8080 --requests 200 --concurrency 16

Each of the C clients sends its next request as soon as it has an answer (a 503 included, without waiting
for Retry-After), so C above the server's workers + queue shows how fast and how often it turns work away.
Latencies are reported for the accepted (200) requests and, separately, for the 503s, which should come back
at once, whatever the load.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def make_photo_bytes(height: int, width: int) -> bytes:
    sys.path.insert(0, str(ROOT))
    from koala import images
    from tests.conftest import make_photo

    return images.encode_image(make_photo(0, height, width), "JPEG")


def make_tiny_model(folder: Path) -> Path:
    from koala.config import ColorizerConfig
    from koala.model import build_colorizer
    from koala.train import save_head

    config = ColorizerConfig(fusion=False, embedder="", embedder_weights="")
    save_head(build_colorizer(config), config, folder / "model.keras")
    config.save(folder / "config.json")
    return folder


def start_server(model: Path, workers: int, queue: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "koala", "serve", "--model", str(model), "--port", str(port),
               "--workers", str(workers), "--queue", str(queue), "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"koala serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("koala serve did not start in 120 s")


def run_load(url: str, photo: bytes, requests: int, concurrency: int) -> dict:
    results: list[tuple[int | str, float]] = []
    lock = threading.Lock()
    remaining = iter(range(requests))

    def worker() -> None:
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                started = time.perf_counter()
                try:
                    status: int | str = client.post(url + "/api/colorize", content=photo).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    results.append((status, time.perf_counter() - started))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    accepted = [seconds for status, seconds in results if status == 200]
    refused = [seconds for status, seconds in results if status == 503]
    others: dict[str, int] = {}
    for status, _ in results:
        if status not in (200, 503):
            others[str(status)] = others.get(str(status), 0) + 1
    return {
        "requests": len(results), "seconds": elapsed, "ok": len(accepted), "busy": len(refused), "others": others,
        "throughput": len(accepted) / elapsed if elapsed else 0.0,
        "p50": percentile(accepted, 0.5), "p95": percentile(accepted, 0.95),
        "busy_p95": percentile(refused, 0.95),
        "mean": statistics.fmean(accepted) if accepted else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--url", help="a running server (or nginx); without it a server is started for the run")
    parser.add_argument("--model", help="model folder for the started server (default: an untrained tiny model)")
    parser.add_argument("--workers", type=int, default=1, help="--workers of the started server")
    parser.add_argument("--queue", type=int, default=4, help="--queue of the started server")
    parser.add_argument("--requests", "-m", type=int, default=40, help="requests to send (M)")
    parser.add_argument("--concurrency", "-c", type=int, default=8, help="requests in flight at once (C)")
    parser.add_argument("--size", default="1200x1600", help="photo size, HEIGHTxWIDTH")
    arguments = parser.parse_args(argv)

    height, width = (int(value) for value in arguments.size.lower().split("x"))
    photo = make_photo_bytes(height, width)
    process = None
    with tempfile.TemporaryDirectory(prefix="koala-load-") as scratch:
        if arguments.url:
            url = arguments.url.rstrip("/")
        else:
            model = Path(arguments.model) if arguments.model else make_tiny_model(Path(scratch))
            process, url = start_server(model, arguments.workers, arguments.queue)
        try:
            health = httpx.get(url + "/healthz", timeout=5).json()
            print(f"target {url}: model {health.get('model')}, workers {health.get('workers')}, "
                  f"queue {health.get('queue')}; photo {width}×{height} ({len(photo) / 1e6:.1f} MB)")
            print(f"sending {arguments.requests} requests, {arguments.concurrency} at a time")
            report = run_load(url, photo, arguments.requests, arguments.concurrency)
            after = httpx.get(url + "/healthz", timeout=5).json()
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    total = report["requests"] or 1
    print(f"done in {report['seconds']:.1f} s: {report['ok']} coloured, {report['busy']} turned away (503)"
          + (f", other: {report['others']}" if report["others"] else ""))
    print(f"throughput   {report['throughput']:.2f} photos/s")
    print(f"latency p50  {report['p50']:.2f} s   p95 {report['p95']:.2f} s   (accepted requests)")
    print(f"503 rate     {100 * report['busy'] / total:.0f} %   (p95 time to a 503: {report['busy_p95'] * 1000:.0f} ms)")
    print(f"server after the run: ok={after.get('ok')} busy={after.get('busy')} queued={after.get('queued')}")
    return 0 if after.get("ok") and not report["others"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
