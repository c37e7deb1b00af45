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
import subprocess
import sys
import threading
import time

import httpx
import pytest
from PIL import Image

from koala import outputs
from tests.conftest import make_photo
from tests.live_replicas import ROOT, Replicas

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def replicas(tiny_model_dir):
    live = Replicas(tiny_model_dir, REPLICAS, find_nginx())
    try:
        try:
            live.wait_ready()
        except RuntimeError as error:
            pytest.fail(str(error))
        yield live
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
    ATTEMPTS times); one replica is killed once half of them are coloured."""
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
    while coloured() < UPLOADS // 2 and time.monotonic() - started < 120:
        time.sleep(0.05)
    assert coloured() >= UPLOADS // 2, f"fewer than {UPLOADS // 2} photos coloured in 120 s:\n{replicas.diagnosis()}"

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
                               (["0", "--no-front", "--upstream", "10.0.0.2:8001"], "starts nothing")):
        result = subprocess.run([script, *arguments], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHON": sys.executable})
        assert result.returncode == 2 and message in result.stderr, (arguments, result.stderr)
