"""Replicas behind NGINX (issue 25), live: ``deploy/serve-replicas 3`` on loopback, 60 clients uploading at once,
and one replica killed with SIGKILL in the middle. Every request must get a 200 with a full-size colour photo or
a 503 with Retry-After (never a 502, a 504 or a reset), and supervisord must have the replica back and serving
within 10 s.

The test starts everything itself: supervisord (requirements-serve.txt), three ``koala serve`` replicas with the
tiny untrained model, and Debian's nginx (``make test`` installs nginx-light; where CI=true a missing nginx fails
the test instead of skipping it).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from koala import outputs
from tests.conftest import make_photo

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = 3
UPLOADS = 60
ATTEMPTS = 8
PHOTO_SIZES = ((120, 160), (150, 200), (96, 128))  # (height, width)
RESTART_LIMIT_S = 10.0


def find_nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx:
        return nginx
    if os.environ.get("CI"):
        pytest.fail("nginx is missing: `make test` installs nginx-light, so this CI machine should have it")
    pytest.skip("needs nginx (apt-get install nginx-light, or `make test`)")


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
    """``deploy/serve-replicas`` as a subprocess (supervisord, after the script's exec)."""

    def __init__(self, model_dir: Path, count: int):
        self.nginx = find_nginx()
        self.port = free_ports(count + 1)
        self.replica_ports = list(range(self.port + 1, self.port + 1 + count))
        self.run_dir = Path(tempfile.mkdtemp(prefix="koala-replicas-test-"))  # not under pytest's 0700 folders
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.run_dir / "serve-replicas.out", "wb")
        environment = {**os.environ, "PYTHON": sys.executable, "NGINX": self.nginx,
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
                pytest.fail(f"serve-replicas exited with {self.process.returncode}:\n{self.diagnosis()}")
            if all(self.healthy(url) for url in urls):
                return self
            time.sleep(0.5)
        pytest.fail(f"the replicas and NGINX were not ready in {timeout} s:\n{self.diagnosis()}")

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


@pytest.fixture(scope="module")
def replicas(tiny_model_dir):
    live = Replicas(tiny_model_dir, REPLICAS)
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def check_answer(response: httpx.Response, size: tuple[int, int]) -> str:
    """'ok' for a 200 with a colour photo of the upload's size or a 503 with Retry-After, else what is wrong."""
    if response.status_code == 503:
        retry_after = response.headers.get("retry-after", "")
        return "ok" if retry_after.isdigit() else f"503 without Retry-After ({response.headers})"
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:200]}"
    try:
        image = Image.open(io.BytesIO(response.content))
        image.load()
    except Exception as error:  # noqa: BLE001 - any decoding failure is the finding
        return f"200 with an unreadable photo ({error}; {len(response.content)} bytes)"
    if image.mode != "RGB" or image.size != (size[1], size[0]):
        return f"200 with a {image.mode} photo of {image.size}, not RGB {(size[1], size[0])}"
    return "ok"


def test_a_killed_replica_costs_no_request_and_is_back_within_10_s(replicas):
    """60 uploads at once, each tried until it is coloured (a 503 is tried again after its Retry-After, at most
    ATTEMPTS times); one replica is killed once a third of them are coloured."""
    photos = {size: outputs.encode_image(make_photo(index, *size), "JPEG") for index, size in enumerate(PHOTO_SIZES)}
    answers: list[tuple[float, int | str, str]] = []  # (time, status or exception, verdict)
    lock = threading.Lock()

    def upload(number: int) -> None:
        size = PHOTO_SIZES[number % len(PHOTO_SIZES)]
        with httpx.Client(timeout=60) as client:
            for _ in range(ATTEMPTS):  # bounded, whatever happens
                try:
                    response = client.post(replicas.url + "/api/colorize", content=photos[size],
                                           headers={"Content-Type": "image/jpeg"})
                    answer = (time.monotonic(), response.status_code, check_answer(response, size))
                except httpx.HTTPError as error:  # a reset, a refused or dropped connection
                    answer = (time.monotonic(), type(error).__name__, f"{type(error).__name__}: {error}")
                with lock:
                    answers.append(answer)
                if answer[1] != 503 or answer[2] != "ok":
                    return
                time.sleep(int(response.headers["retry-after"]))  # as the page does

    def coloured() -> int:
        with lock:
            return sum(status == 200 for _, status, _ in answers)

    victim = replicas.replica_ports[1]
    victim_url = f"http://127.0.0.1:{victim}"
    old_pid = replicas.pid(victim)
    uploads = [threading.Thread(target=upload, args=(number,)) for number in range(UPLOADS)]
    started = time.monotonic()
    for thread in uploads:
        thread.start()
    while coloured() < UPLOADS // 3 and time.monotonic() - started < 120:
        time.sleep(0.05)
    assert coloured() >= UPLOADS // 3, f"fewer than {UPLOADS // 3} photos coloured in 120 s:\n{replicas.diagnosis()}"

    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    back = None
    while time.monotonic() - killed < 90:
        if replicas.healthy(victim_url):
            back = time.monotonic() - killed
            break
        time.sleep(0.1)
    for thread in uploads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in uploads), "an upload hung"

    new_pid = replicas.pid(victim)
    after_kill = [answer for answer in answers if answer[0] > killed]
    statuses = sorted({str(status) for _, status, _ in answers})
    print(f"\n{len(answers)} answers ({statuses}) to {UPLOADS} uploads; {coloured()} coloured, "
          f"{sum(status == 200 for _, status, _ in after_kill)} of them after the kill; replica back after "
          f"{back if back is None else round(back, 1)} s, the load over {time.monotonic() - killed:.1f} s after the kill")
    problems = [verdict for _, _, verdict in answers if verdict != "ok"]
    assert not problems, f"{len(problems)} bad answers, e.g. {problems[:5]}\n{replicas.diagnosis()}"
    assert any(status == 200 for _, status, _ in after_kill), "nothing was coloured after the kill"
    assert new_pid != old_pid, "supervisord did not start the replica again"
    assert back is not None and back <= RESTART_LIMIT_S, f"the replica was back after {back} s\n{replicas.diagnosis()}"

    # back and serving through NGINX too, once NGINX tries it again (fail_timeout=2s)
    logged = replicas.text("nginx.log").count("\n")
    time.sleep(2.5)
    for _ in range(2 * REPLICAS):
        assert httpx.post(replicas.url + "/api/colorize", content=photos[PHOTO_SIZES[0]], timeout=60).status_code == 200
    passed_on = [line for line in replicas.text("nginx.log").splitlines() if re.search(r"upstream=\S+, ", line)]
    print(f"{len(passed_on)} request(s) passed on to another replica by NGINX")
    later = replicas.text("nginx.log").splitlines()[logged:]
    served = [line for line in later if re.search(rf"upstream=127\.0\.0\.1:{victim} upstream_status=200", line)]
    assert served, "NGINX sent nothing to the restarted replica:\n" + "\n".join(later[-12:])


def test_the_script_checks_its_arguments():
    script = str(ROOT / "deploy" / "serve-replicas")
    for arguments, message in (([], "replicas behind NGINX"), (["three"], "whole number"),
                               (["2", "--model", "/nonexistent"], "not a model folder"),
                               (["0", "--no-front"], "starts nothing")):
        result = subprocess.run([script, *arguments], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHON": sys.executable})
        assert result.returncode == 2 and message in result.stderr, (arguments, result.stderr)
