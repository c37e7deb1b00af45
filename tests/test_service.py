"""The web service, tested as users meet it: a live ``koala serve`` on loopback and real HTTP requests.

The servers run in a sandbox that proves the no-disk promise:

* TMPDIR, MAGICK_TEMPORARY_PATH, HOME and the working folder are empty folders it cannot write to (mode
  0o500; when the tests run as root the server runs without capabilities, through ``setpriv``, because root
  ignores file modes), and after the uploads they are still empty;
* a Python audit hook reports every file the server opens for writing and every temporary file, wherever
  it is: Python's ``tempfile`` quietly falls back to /tmp when TMPDIR is not writable, and a temporary file
  is unlinked at once, so neither of the checks above would see Starlette's spooled uploads. A control
  test shows that the sandbox does catch them.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from koala import outputs
from tests.conftest import make_photo

pytestmark = pytest.mark.slow

MAX_UPLOAD_MB = 3


# Loaded into the server through PYTHONPATH: reports every file the Python process opens for writing, and
# every temporary file, wherever it is (Python's tempfile quietly falls back to /tmp, or the working folder,
# when TMPDIR is not writable, so a read-only TMPDIR alone would not catch Starlette's spooled uploads).
AUDIT_HOOK = """
import os, sys
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_ALLOWED = tuple(filter(None, (os.environ.get("KERAS_HOME"), "/dev/")))

def _koala_disk_audit(event, args):
    if event in ("tempfile.mkstemp", "tempfile.mkdtemp") or (
        event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and (args[2] or 0) & _WRITE
        and not os.fsdecode(args[0]).startswith(_ALLOWED)
    ):
        os.write(2, ("KOALA-DISK-WRITE %s %r\\n" % (event, args[:1])).encode())

sys.addaudithook(_koala_disk_audit)
"""
DISK_WRITE_MARK = "KOALA-DISK-WRITE"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sandbox:
    """Folders and environment for a process that must not write files (see the module docstring)."""

    def __init__(self, enforce: bool = True):
        self.root = Path(tempfile.mkdtemp(prefix="koala-serve-test-"))
        self.tmp, self.cwd, self.keras_home = self.root / "tmp", self.root / "cwd", self.root / "keras"
        hook = self.root / "hook"
        for folder in (self.tmp, self.cwd, self.keras_home, hook):
            folder.mkdir()
        (hook / "sitecustomize.py").write_text(AUDIT_HOOK if enforce else "")
        for path in (self.root, self.keras_home, hook):
            os.chmod(path, 0o755)
        os.chmod(self.tmp, 0o500 if enforce else 0o755)
        os.chmod(self.cwd, 0o500 if enforce else 0o755)
        # Root ignores file modes: run it as root without capabilities, so that the modes bind it too.
        self.without_capabilities = enforce and os.geteuid() == 0 and shutil.which("setpriv") is not None
        self.prefix = ["setpriv", "--bounding-set", "-all", "--"] if self.without_capabilities else []
        self.env = {
            **os.environ,
            "TMPDIR": str(self.tmp), "TEMP": str(self.tmp), "TMP": str(self.tmp),
            "MAGICK_TEMPORARY_PATH": str(self.tmp), "HOME": str(self.cwd), "KERAS_HOME": str(self.keras_home),
            "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        }

    def is_clean(self) -> bool:
        return not any(self.tmp.iterdir()) and not any(self.cwd.iterdir())

    def remove(self) -> None:
        for folder in (self.tmp, self.cwd):
            os.chmod(folder, 0o755)
        shutil.rmtree(self.root, ignore_errors=True)


class LiveServer:
    """``python -m koala serve`` as a subprocess on a free loopback port, in a :class:`Sandbox`."""

    def __init__(self, model_dir: Path, *options: str, sandbox: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sandbox = Sandbox(enforce=sandbox)
        model = self.sandbox.root / "model"
        shutil.copytree(model_dir, model)
        for path in [model, *model.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        self.log_path = Path(tempfile.mkstemp(prefix="koala-serve-log-")[1])
        self.log = open(self.log_path, "wb")  # opened here: the server itself writes no file
        command = [*self.sandbox.prefix, sys.executable, "-m", "koala", "serve", "--model", str(model),
                   "--port", str(self.port), *options]
        self.process = subprocess.Popen(
            command, cwd=self.sandbox.cwd, env=self.sandbox.env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> LiveServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"koala serve exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    self.ready_at = len(self.log_text())  # start-up is over: requests come after this
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"koala serve did not become ready in {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.sandbox.remove()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    live = LiveServer(tiny_model_dir, "--workers", "2", "--queue", "4", "--max-upload-mb", str(MAX_UPLOAD_MB))
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def encoded(seed: int, height: int, width: int, image_format: str) -> bytes:
    return outputs.encode_image(make_photo(seed, height, width), image_format, quality=95)


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and body["reason"] and len(body["reason"]) > 10
    return body


def png_claiming(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header claims width × height grey pixels (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 20, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def raw_exchange(port: int, head: bytes, body_chunks=(), timeout: float = 10.0) -> bytes:
    """Send a request head and some body bytes on a plain socket, then read whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head)
        for piece in body_chunks:
            try:
                connection.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = connection.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


# --- colourising --------------------------------------------------------------------------------------


def test_healthz(server):
    health = httpx.get(server.url + "/healthz").json()
    assert health["ok"] is True
    assert health["model"] == "model"
    assert health["busy"] == 0 and health["queued"] == 0
    assert health["workers"] == 2 and health["queue"] == 4
    assert health["imagemagick_disk_limit"] == 0


def test_colorize_jpeg_raw_body(server):
    response = httpx.post(server.url + "/api/colorize", content=encoded(1, 150, 230, "JPEG"),
                          headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-koala-size"] == "230x150"
    result = open_image(response.content)
    assert result.format == "JPEG" and result.size == (230, 150) and result.mode == "RGB"


def test_grey_jpeg_answer_keeps_the_uploads_luma(server):
    grey = io.BytesIO()
    Image.fromarray(make_photo(8, 150, 230)[..., 1], "L").save(grey, format="JPEG", quality=90)
    response = httpx.post(server.url + "/api/colorize", content=grey.getvalue(),
                          headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-koala-size"] == "230x150"
    result = open_image(response.content)
    assert result.format == "JPEG" and result.size == (230, 150) and result.mode == "RGB"
    luma = Image.open(io.BytesIO(response.content))
    luma.draft("L", luma.size)  # libjpeg's greyscale output of a colour JPEG is its Y' channel
    assert np.array_equal(np.asarray(luma), np.asarray(Image.open(grey)))


def test_colorize_png_multipart(server):
    files = {"file": ("grandad 1943.png", encoded(2, 121, 97, "PNG"), "image/png")}
    response = httpx.post(server.url + "/api/colorize", files=files, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert 'filename="grandad-1943-coloured.png"' in response.headers["content-disposition"]
    result = open_image(response.content)
    assert result.format == "PNG" and result.size == (97, 121)


def test_output_format_from_query_or_accept(server):
    jpeg, png = encoded(3, 64, 80, "JPEG"), encoded(3, 64, 80, "PNG")
    as_png = httpx.post(server.url + "/api/colorize?format=png", content=jpeg, timeout=30)
    assert as_png.status_code == 200 and open_image(as_png.content).format == "PNG"
    as_jpeg = httpx.post(server.url + "/api/colorize", content=png, headers={"Accept": "image/jpeg"}, timeout=30)
    assert as_jpeg.status_code == 200 and open_image(as_jpeg.content).format == "JPEG"
    assert open_image(as_jpeg.content).size == (80, 64)
    assert_problem(httpx.post(server.url + "/api/colorize?format=gif", content=png), 400)


# --- refusing, with reasons -------------------------------------------------------------------------------


def test_text_and_svg_are_415(server):
    assert_problem(httpx.post(server.url + "/api/colorize", content=b"hello, this is not a photo"), 415)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    files = {"file": ("picture.jpg", svg, "image/jpeg")}  # the name and type lie: the bytes decide
    assert_problem(httpx.post(server.url + "/api/colorize", files=files), 415)


def test_truncated_images_are_422(server):
    jpeg, png = encoded(4, 200, 300, "JPEG"), encoded(4, 200, 300, "PNG")
    for cut in (jpeg[: len(jpeg) // 2], jpeg[: len(jpeg) - 200], png[: len(png) // 2]):
        assert_problem(httpx.post(server.url + "/api/colorize", content=cut, timeout=30), 422)
    # bytes after the end of a complete JPEG are harmless
    assert httpx.post(server.url + "/api/colorize", content=jpeg + b"\x00trailer", timeout=30).status_code == 200


def test_empty_body_and_missing_field_are_400(server):
    assert_problem(httpx.post(server.url + "/api/colorize", content=b""), 400)
    assert_problem(httpx.post(server.url + "/api/colorize", files={"photo": ("a.png", b"x", "image/png")}), 400)


def test_pixel_flood_is_413(server):
    started = time.perf_counter()
    body = assert_problem(httpx.post(server.url + "/api/colorize", content=png_claiming(50_000, 50_000)), 413)
    assert "50000×50000" in body["reason"]
    assert time.perf_counter() - started < 2  # refused from the header, nothing decoded


def test_upload_over_the_limit_is_413(server):
    too_big = encoded(5, 64, 64, "JPEG") + b"\x00" * (MAX_UPLOAD_MB * 1024 * 1024)
    assert_problem(httpx.post(server.url + "/api/colorize", content=too_big, timeout=30), 413)


def test_declared_length_over_the_limit_is_refused_before_the_body(server):
    head = (f"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode()
    started = time.perf_counter()
    answer = raw_exchange(server.port, head)  # not a byte of the body is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.perf_counter() - started < 2


def test_streamed_body_is_cut_off_at_the_limit(server):
    """Chunked upload with no Content-Length: the 413 comes while the client is still sending."""
    head = b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"\x00" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = (MAX_UPLOAD_MB + 1) * 16  # one MiB past the limit, and the body never ends (no final chunk)
    answer = raw_exchange(server.port, head, [chunk] * sent)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_page_and_static_files(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    assert_problem(httpx.get(server.url + "/static/../service/__init__.py"), 404)
    assert httpx.get(server.url + "/api/colorize").status_code == 405


# --- nothing on disk ----------------------------------------------------------------------------------------


def test_nothing_from_an_upload_is_written_to_disk(server):
    photo = encoded(6, 1800, 2400, "JPEG")
    assert 1024 * 1024 < len(photo) < MAX_UPLOAD_MB * 1024 * 1024  # past Starlette's 1 MiB spooling threshold
    raw = httpx.post(server.url + "/api/colorize", content=photo, timeout=60)
    multipart = httpx.post(server.url + "/api/colorize", files={"file": ("big.jpg", photo, "image/jpeg")}, timeout=60)
    as_png = httpx.post(server.url + "/api/colorize?format=png", content=photo, timeout=60)
    for response in (raw, multipart, as_png):
        assert response.status_code == 200, response.text
        assert open_image(response.content).size == (2400, 1800)
    assert list(server.sandbox.tmp.iterdir()) == [], "the server wrote to TMPDIR"
    assert list(server.sandbox.cwd.iterdir()) == [], "the server wrote to its working folder"
    if os.geteuid() == 0:  # root ignores file modes: make sure the server had no capabilities to do so
        assert server.sandbox.without_capabilities, "as root, these tests need util-linux's setpriv"
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in status
    # wand's library lookup at start-up (ctypes.util.find_library runs gcc on a temporary file) is allowed;
    # from the moment the server is ready, nothing: these are the uploads of every test in this module
    log = server.log_text()[server.ready_at :]
    assert DISK_WRITE_MARK not in log, [line for line in log.splitlines() if DISK_WRITE_MARK in line]
    assert "Traceback" not in log
    assert httpx.get(server.url + "/healthz").json()["ok"] is True


def test_the_sandbox_catches_a_spooled_upload():
    """The control: Starlette's way of keeping an upload (a SpooledTemporaryFile past 1 MiB) is caught."""
    sandbox = Sandbox()
    try:
        spool = "import tempfile; spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024); spool.write(bytes(2 << 20))"
        run = subprocess.run([*sandbox.prefix, sys.executable, "-c", spool], cwd=sandbox.cwd, env=sandbox.env,
                             capture_output=True, text=True, timeout=60)
        caught = DISK_WRITE_MARK in run.stderr or run.returncode != 0 or not sandbox.is_clean()
        assert caught, run.stderr
    finally:
        sandbox.remove()


# --- overload -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tiny_model_dir):
    live = LiveServer(tiny_model_dir, "--workers", "1", "--queue", "2", "--max-upload-mb", "20")
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def test_overload_is_answered_503_with_retry_after_promptly(small_server):
    photo = encoded(7, 3000, 4000, "JPEG")
    started = time.perf_counter()
    single = httpx.post(small_server.url + "/api/colorize", content=photo, timeout=60)
    one_colourisation = time.perf_counter() - started
    assert single.status_code == 200

    results: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()
    gate = threading.Barrier(12)

    def send() -> None:
        with httpx.Client(timeout=120) as client:
            gate.wait()
            begun = time.perf_counter()
            response = client.post(small_server.url + "/api/colorize", content=photo)
            outcome = (response.status_code, response.headers.get("retry-after"), time.perf_counter() - begun)
            if response.status_code == 200:
                assert open_image(response.content).size == (4000, 3000)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    # the event loop stays free meanwhile: /healthz answers during the burst
    samples = []
    while any(thread.is_alive() for thread in threads):
        samples.append(httpx.get(small_server.url + "/healthz", timeout=2).json())
        time.sleep(0.05)
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _, _ in results)
    assert len(results) == 12 and set(statuses) <= {200, 503}, statuses
    accepted = [result for result in results if result[0] == 200]
    refused = [result for result in results if result[0] == 503]
    assert 1 <= len(accepted) <= 6 and len(refused) >= 6, statuses  # 1 running + 2 waiting at any moment
    for _, retry_after, seconds in refused:
        assert retry_after is not None and int(retry_after) >= 1
        assert seconds < max(0.5, one_colourisation / 2), (seconds, one_colourisation)
    assert samples and all(sample["ok"] for sample in samples)
    assert max(sample["busy"] for sample in samples) == 1  # never more than N = 1 at once
    # never more than N + Q = 3 admitted (between one job ending and the next starting, all 3 may be waiting)
    assert max(sample["busy"] + sample["queued"] for sample in samples) <= 3
    assert any(sample["busy"] == 1 for sample in samples)
    after = httpx.get(small_server.url + "/healthz").json()
    assert after["ok"] and after["busy"] == 0 and after["queued"] == 0
    assert small_server.process.poll() is None
    assert httpx.post(small_server.url + "/api/colorize", content=encoded(8, 64, 64, "PNG"), timeout=30).status_code == 200


# --- under real traffic: slow senders, idle connections, large photos at once, async clients ------------------
# Each of these failed against the service before issue 16 was fixed (see the test's docstring for how).

SLOW_SENDERS = 6
UPLOAD_GRACE_S = 5.0  # koala serve's defaults, which these tests rely on
HEADER_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def traffic_server(tiny_model_dir):
    live = LiveServer(tiny_model_dir, "--workers", "2", "--queue", "4")
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def seconds_until_closed(connection: socket.socket, limit: float) -> tuple[float, bytes]:
    """Wait (reading) until the server closes the connection; (seconds, what it said). ``limit`` if it never does."""
    started = time.perf_counter()
    said = b""
    connection.settimeout(0.5)
    while time.perf_counter() - started < limit:
        try:
            data = connection.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        said += data
    return time.perf_counter() - started, said


def slow_sender(port: int, results: list, stop_after: float) -> None:
    """A client that declares a 200 kB upload and sends it at about 3 bytes a second."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                           b"Content-Length: 200000\r\n\r\n\xff\xd8")
        started = time.perf_counter()
        answer = b""
        connection.settimeout(0.3)
        while time.perf_counter() - started < stop_after and b"\r\n\r\n" not in answer:
            try:
                connection.sendall(b"\x00")
                data = connection.recv(4096)
                if not data:
                    break
                answer += data
            except TimeoutError:
                continue
            except OSError:
                break
        results.append((time.perf_counter() - started, answer))


def test_slow_senders_neither_block_others_nor_stay(traffic_server):
    """Before: six connections trickling their bodies held all six places (2 workers + 4 queued) for up to
    60 s, and every normal upload meanwhile got 503."""
    results: list[tuple[float, bytes]] = []
    senders = [threading.Thread(target=slow_sender, args=(traffic_server.port, results, 40.0))
               for _ in range(SLOW_SENDERS)]
    for sender in senders:
        sender.start()
    time.sleep(1.0)
    health = httpx.get(traffic_server.url + "/healthz").json()
    assert health["busy"] + health["queued"] == 0, health  # they hold no place among the workers and queue
    assert health["receiving"] == SLOW_SENDERS, health

    photo = encoded(20, 300, 400, "JPEG")
    statuses: list[int] = []

    def upload_five() -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(5):
                statuses.append(client.post(traffic_server.url + "/api/colorize", content=photo).status_code)

    uploaders = [threading.Thread(target=upload_five) for _ in range(2)]
    for uploader in uploaders:
        uploader.start()
    for uploader in uploaders:
        uploader.join()
    assert statuses == [200] * 10, statuses  # the slow senders took no place

    for sender in senders:
        sender.join()
    assert len(results) == SLOW_SENDERS
    for seconds, answer in results:  # bounded in time: the grace, then the rate counts
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert seconds < UPLOAD_GRACE_S + 4, seconds
    assert httpx.get(traffic_server.url + "/healthz").json()["receiving"] == 0


def test_idle_and_half_sent_connections_are_closed(traffic_server):
    """Before: a connection that sent nothing was still open after 61 s, one with half a request head after 20 s."""
    silent = socket.create_connection(("127.0.0.1", traffic_server.port))
    half_head = socket.create_connection(("127.0.0.1", traffic_server.port))
    half_head.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\n")
    trickling = socket.create_connection(("127.0.0.1", traffic_server.port))  # a byte a second, never ending
    timings: dict[str, float] = {}

    def watch(name: str, connection: socket.socket) -> None:
        with connection:
            timings[name] = seconds_until_closed(connection, HEADER_TIMEOUT_S + 20)[0]

    watchers = [threading.Thread(target=watch, args=item)
                for item in (("silent", silent), ("half head", half_head))]
    for watcher in watchers:
        watcher.start()
    started = time.perf_counter()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    closed_at = None
    with trickling:
        for byte in head:
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                closed_at = time.perf_counter() - started
                break
            trickling.settimeout(1.0)
            try:
                if trickling.recv(1) == b"":
                    closed_at = time.perf_counter() - started
                    break
            except TimeoutError:
                pass
    for watcher in watchers:
        watcher.join()
    assert timings["silent"] < HEADER_TIMEOUT_S + 3, timings
    assert timings["half head"] < HEADER_TIMEOUT_S + 3, timings
    assert closed_at is not None and closed_at < HEADER_TIMEOUT_S + 3, closed_at

    with socket.create_connection(("127.0.0.1", traffic_server.port)) as kept_alive:  # idle after an answer
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, said = seconds_until_closed(kept_alive, HEADER_TIMEOUT_S + 20)
        assert said.startswith(b"HTTP/1.1 200") and seconds < HEADER_TIMEOUT_S + 3, (seconds, said[:80])


def grey_gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    rows = np.linspace(0, 60 + seed, height, dtype=np.float32)[:, None]
    return ((np.linspace(0, 255, width, dtype=np.float32)[None, :] + rows) % 256).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_grey_17_megapixel_png_is_coloured(traffic_server):
    """Before: 422 "damaged or truncated PNG data" for any 8-bit grey PNG over about 15.5 MP (the limit is 25)."""
    grey = png_bytes(grey_gradient(3600, 4800))
    response = httpx.post(traffic_server.url + "/api/colorize", content=grey, timeout=180)
    assert response.status_code == 200, response.text
    assert response.headers["x-koala-size"] == "4800x3600"
    assert open_image(response.content).size == (4800, 3600)


def post_together(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    responses: list[httpx.Response | None] = [None] * len(bodies)
    gate = threading.Barrier(len(bodies))

    def send(index: int) -> None:
        with httpx.Client(timeout=300) as client:
            gate.wait()
            responses[index] = client.post(url + "/api/colorize", content=bodies[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def assert_coloured_or_busy(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code in (200, 503), response.text  # never 413 / 422 within the limits
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    assert any(response.status_code == 200 for response in responses)


def test_large_photos_at_once_are_coloured_or_told_to_wait(traffic_server):
    """Before: two 17 MP RGB PNGs posted together gave 413 + 200 (ImageMagick's memory limit is per process),
    and a 12 MP grey PNG beside a 24 MP one got 422 "damaged"."""
    pair = [png_bytes(np.stack([grey_gradient(3600, 4800, seed), grey_gradient(3600, 4800, seed)[:, ::-1],
                                grey_gradient(3600, 4800, 2 * seed)], axis=-1)) for seed in (1, 2)]
    assert_coloured_or_busy(post_together(traffic_server.url, pair))
    mixed = [png_bytes(grey_gradient(3000, 4000, 3)),
             png_bytes(np.repeat(grey_gradient(4000, 6000, 4)[..., None], 3, axis=-1))]
    assert_coloured_or_busy(post_together(traffic_server.url, mixed))
    assert httpx.get(traffic_server.url + "/healthz").json()["ok"] is True


def test_forty_async_multipart_uploads_each_get_an_answer(traffic_server):
    """Before: the 503 was sent before the body was read and the connection closed, so the kernel reset it:
    34 of 40 async httpx uploads got ReadError / ConnectionResetError instead of their 503."""
    import asyncio

    photo = encoded(21, 1200, 1600, "JPEG")
    assert len(photo) > 500_000  # still being sent when the answer is known

    async def upload(client: httpx.AsyncClient, index: int):
        try:
            response = await client.post(traffic_server.url + "/api/colorize",
                                         files={"file": (f"photo {index}.jpg", photo, "image/jpeg")})
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        return response.status_code, response.headers.get("retry-after")

    async def burst():
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            return await asyncio.gather(*(upload(client, index) for index in range(40)))

    outcomes = asyncio.run(burst())
    failures = [outcome for outcome in outcomes if not isinstance(outcome, tuple)]
    assert failures == [], failures
    assert {status for status, _ in outcomes} <= {200, 503}, outcomes
    assert any(status == 200 for status, _ in outcomes) and any(status == 503 for status, _ in outcomes), outcomes
    assert all(int(retry_after) >= 1 for status, retry_after in outcomes if status == 503)
    assert httpx.get(traffic_server.url + "/healthz").json()["busy"] == 0


def test_page_states_the_limits_and_has_an_icon(server):
    page = httpx.get(server.url + "/").text
    assert 'id="limit-size"' in page and 'id="limit-pixels"' in page  # filled in from /healthz by app.js
    assert "30 MB" in page and "25 megapixels" in page  # the defaults, until the page knows this server's
    health = httpx.get(server.url + "/healthz").json()
    assert health["max_upload_bytes"] == MAX_UPLOAD_MB * 1024 * 1024 and health["max_pixels"] == 25_000_000
    icon = httpx.get(server.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.content and "/static/favicon.svg" in page


def test_non_ascii_upload_names_are_kept_in_the_download_name(server):
    files = {"file": ("Großvater 1943 外公.png", encoded(22, 64, 80, "PNG"), "image/png")}
    response = httpx.post(server.url + "/api/colorize", files=files, timeout=30)
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    disposition.encode("ascii")  # a header: the UTF-8 name goes percent-encoded in filename*, RFC 6266
    assert 'filename="Gro' in disposition and '-1943-coloured.png"' in disposition  # the ASCII name, for old clients
    assert "filename*=UTF-8''Gro%C3%9Fvater-1943-%E5%A4%96%E5%85%AC-coloured.png" in disposition


def test_a_multi_page_tiff_beyond_the_image_memory_gives_its_first_page(server):
    """Before: "too large (cannot decode (memory allocation failed))": every page was decoded, 8 × 128 MB."""
    pages = [Image.fromarray(np.full((4000, 4000), 40 + 20 * index, dtype=np.uint8)) for index in range(8)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    assert len(buffer.getvalue()) < MAX_UPLOAD_MB * 1024 * 1024
    response = httpx.post(server.url + "/api/colorize?format=png", content=buffer.getvalue(), timeout=120)
    assert response.status_code == 200, response.text
    assert open_image(response.content).size == (4000, 4000)


def test_nice_when_ready_lowers_every_threads_priority():
    """A replica that has loaded its model gives way to one that is starting (serve-replicas uses --nice-when-ready 5)."""
    import subprocess
    import sys

    script = (
        "import os, threading, time\n"
        "from koala.service.endpoints import lower_priority\n"
        "stop = threading.Event()\n"
        "threads = [threading.Thread(target=stop.wait) for _ in range(3)]\n"
        "[thread.start() for thread in threads]\n"
        "before = {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir('/proc/self/task')}\n"
        "lower_priority(3)\n"
        "after = {t: os.getpriority(os.PRIO_PROCESS, t) for t in before}\n"
        "late = []\n"
        "thread = threading.Thread(target=lambda: late.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))\n"
        "thread.start(); thread.join(); stop.set()\n"
        "print(len(before), all(after[t] == min(before[t] + 3, 19) for t in before), late[0] == min(before[threading.main_thread().native_id] + 3, 19))\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    threads, all_lowered, inherited = finished.stdout.split()
    assert int(threads) >= 4 and all_lowered == "True" and inherited == "True"
