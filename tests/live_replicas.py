"""``deploy/serve-replicas`` started for a test or a benchmark: N replicas and NGINX on free loopback ports, in a
temporary run folder, stopped (supervisord and all it runs) afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


class Replicas:
    """``deploy/serve-replicas COUNT`` as a subprocess (supervisord, after the script's exec): 1 worker, a queue of
    2 and 8 receiving slots per replica; ``nginx``: the binary, if not the one on PATH."""

    def __init__(self, model_dir: Path, count: int, nginx: str | None = None):
        self.port = free_ports(count + 1)
        self.replica_ports = list(range(self.port + 1, self.port + 1 + count))
        self.run_dir = Path(tempfile.mkdtemp(prefix="koala-replicas-"))  # in /tmp, where NGINX's worker can read
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.run_dir / "serve-replicas.out", "wb")
        environment = {**os.environ, "PYTHON": sys.executable, **({"NGINX": nginx} if nginx else {}),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [str(ROOT / "deploy" / "serve-replicas"), str(count), "--port", str(self.port), "--model", str(model_dir),
             "--workers", "1", "--queue", "2", "--receiving", "8", "--run-dir", str(self.run_dir)],
            cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def text(self, name: str) -> str:
        path = self.run_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnosis(self) -> str:
        return "\n".join(f"--- {name}\n{self.text(name)[-2000:]}" for name in
                         ["serve-replicas.out", "supervisord.log", "nginx.log",
                          *(f"replica-{port}.log" for port in self.replica_ports)])

    def healthy(self, url: str) -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 150.0) -> Replicas:
        deadline = time.monotonic() + timeout
        urls = [self.url] + [f"http://127.0.0.1:{port}" for port in self.replica_ports]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve-replicas exited with {self.process.returncode}:\n{self.diagnosis()}")
            if all(self.healthy(url) for url in urls):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the replicas and NGINX were not ready in {timeout} s:\n{self.diagnosis()}")

    def supervisorctl(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.run_dir / "supervisord.conf"),
             *arguments], capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    def pid(self, port: int) -> int:
        return int(self.supervisorctl("pid", f"replica:replica-{port}"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # supervisord stops the replicas and NGINX
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
