"""Load test for ``koala serve``: M requests, C at a time, then again beside S slow senders; prints throughput,
latency and the 503 rate of both runs.

    # start a server for the run (an untrained tiny model unless --model is given)
    .venv/bin/python benchmarks/serve_load.py --requests 60 --concurrency 8 --workers 2 --queue 4

    # or point it at a running server (or at nginx in front of several)
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8080 --requests 200 --concurrency 16

Each of the C clients sends its next request as soon as it has an answer (a 503 included, without waiting
for Retry-After), so C above the server's workers + queue shows how fast and how often it turns work away.
Latencies are reported for the accepted (200) requests and, separately, for the 503s, which should come back
at once, whatever the load.

The second run repeats the first while S slow senders (``--slow-senders``, 6 by default: NGINX's limit_conn
in deploy/nginx.conf was 6) each declare a 200 kB upload and send it at about 3 bytes a second, starting again
as soon as the server cuts them off. They should cost the others nothing: the server takes a place only for a
complete upload, and answers a slow one 408 after its grace period (the times to those 408s are reported).
"""

from __future__ import annotations

import argparse
import contextlib
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
    from koala import outputs
    from tests.conftest import make_photo

    return outputs.encode_image(make_photo(0, height, width), "JPEG")


def make_tiny_model(folder: Path) -> Path:
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
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


class SlowSenders:
    """``count`` clients that each trickle a declared 200 kB upload at about 3 bytes a second, again and again."""

    def __init__(self, url: str, count: int):
        address = httpx.URL(url)
        self.host, self.port = address.host, address.port or 80
        self.count = count
        self.cut_after: list[float] = []  # seconds from the request head to the server's answer (or close)
        self.answers: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(count)]

    def __enter__(self) -> SlowSenders:
        for thread in self._threads:
            thread.start()
        time.sleep(1.0)  # let them all be in before the measured run starts
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _send(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=5) as connection:
                connection.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                   b"Content-Length: 200000\r\n\r\n")
                connection.settimeout(0.3)
                started, answer = time.perf_counter(), b""
                while not self._stop.is_set() and b"\r\n" not in answer:
                    try:
                        connection.sendall(b"\x00")
                        data = connection.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        answer = answer or b"closed "
                        break
                    answer += data
                if answer and not self._stop.is_set():
                    self.cut_after.append(time.perf_counter() - started)
                    status = answer.split(b"\r\n")[0].decode(errors="replace")
                    self.answers[status] = self.answers.get(status, 0) + 1


def run_load(url: str, photo: bytes, requests: int, concurrency: int, until_coloured: int | None = None,
             pause_after_refusal: float = 0.0) -> dict:
    """``requests`` uploads of ``photo``, ``concurrency`` at a time (or fewer: stop once ``until_coloured`` are
    coloured); a client that is not answered 200 waits ``pause_after_refusal`` seconds before its next upload."""
    results: list[tuple[int | str, float]] = []
    lock = threading.Lock()
    remaining = iter(range(requests))
    coloured = 0

    def worker() -> None:
        nonlocal coloured
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if next(remaining, None) is None or (until_coloured is not None and coloured >= until_coloured):
                        return
                started = time.perf_counter()
                try:
                    status: int | str = client.post(url + "/api/colorize", content=photo).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    results.append((status, time.perf_counter() - started))
                    coloured += status == 200
                if status != 200:
                    time.sleep(pause_after_refusal)

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
    parser.add_argument("--slow-senders", type=int, default=6,
                        help="slow senders during the second run (0: one run only)")
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
            reports = {"alone": run_load(url, photo, arguments.requests, arguments.concurrency)}
            if arguments.slow_senders:
                with SlowSenders(url, arguments.slow_senders) as slow:
                    print(f"again, beside {arguments.slow_senders} slow senders (about 3 bytes/s each)")
                    reports[f"{arguments.slow_senders} slow senders"] = run_load(
                        url, photo, arguments.requests, arguments.concurrency)
            after = httpx.get(url + "/healthz", timeout=5).json()
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    print(f"{'run':<18} {'coloured':>8} {'503':>5} {'other':>6} {'photos/s':>9} {'p50 s':>7} {'p95 s':>7} "
          f"{'503 p95 ms':>10}")
    for name, report in reports.items():
        print(f"{name:<18} {report['ok']:>8} {report['busy']:>5} {sum(report['others'].values()):>6} "
              f"{report['throughput']:>9.2f} {report['p50']:>7.2f} {report['p95']:>7.2f} "
              f"{report['busy_p95'] * 1000:>10.0f}" + (f"   other: {report['others']}" if report["others"] else ""))
    if len(reports) == 2:
        alone, beside = reports.values()
        ratio = beside["throughput"] / alone["throughput"] if alone["throughput"] else float("nan")
        print(f"throughput beside the slow senders / alone: {ratio:.2f}")
        if slow.cut_after:
            print(f"slow senders answered {slow.answers} after p50 {percentile(slow.cut_after, 0.5):.1f} s, "
                  f"max {max(slow.cut_after):.1f} s")
        else:
            print("slow senders: none was answered during the run (they hold their connections)")
    print(f"server after the runs: ok={after.get('ok')} busy={after.get('busy')} queued={after.get('queued')} "
          f"receiving={after.get('receiving')}")
    others = any(report["others"] for report in reports.values())
    return 0 if after.get("ok") and not others else 1


if __name__ == "__main__":
    raise SystemExit(main())
