#!/usr/bin/env bash
# End-to-end check of deploy/nginx.conf: two `koala serve` back ends and Debian's nginx on loopback, in a
# temporary prefix; checks the page, a colourisation through the proxy, 503 + Retry-After under overload,
# six slow senders (they block nobody and are answered 408 within seconds), idle connections closed, and
# that nothing was written to nginx's temporary folders; then stops everything.
#
#   deploy/test_nginx.sh                 # an untrained tiny model is made for the run
#   KOALA_MODEL=models/default deploy/test_nginx.sh
#
# Needs: nginx (nginx-light is enough), curl, the project's venv (or PYTHON=...). Runs as root or not.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/koala-nginx.XXXXXX")
chmod 755 "$PREFIX"                      # nginx's worker runs as nobody when started by root
BACKEND_PIDS=()
NGINX_PID=""

say() { printf '%s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
    set +e
    if [[ -n "$NGINX_PID" ]]; then kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; fi
    for pid in "${BACKEND_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${BACKEND_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$PREFIX"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # url, seconds
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        (( SECONDS < deadline )) || return 1
        sleep 0.3
    done
}

# --- a model and two photos --------------------------------------------------------------------------
MODEL=${KOALA_MODEL:-}
cd "$ROOT"
"$PYTHON" - "$PREFIX" "$MODEL" <<'PY'
import sys
from pathlib import Path

from koala import outputs
from tests.conftest import make_photo

prefix, model = Path(sys.argv[1]), sys.argv[2]
if not model:
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.train import save_head

    folder = prefix / "model"
    folder.mkdir()
    config = ColorizerConfig(fusion=False, embedder="", embedder_weights="")
    save_head(build_colorizer(config), config, folder / "model.keras")
    config.save(folder / "config.json")
(prefix / "small.jpg").write_bytes(outputs.encode_image(make_photo(1, 150, 230), "JPEG"))
(prefix / "large.jpg").write_bytes(outputs.encode_image(make_photo(2, 1800, 2400), "JPEG"))
PY
MODEL=${MODEL:-$PREFIX/model}

# --- two back ends -------------------------------------------------------------------------------------
PORT1=$(free_port); PORT2=$(free_port); FRONT=$(free_port)
for port in "$PORT1" "$PORT2"; do
    "$PYTHON" -m koala serve --model "$MODEL" --port "$port" --workers 1 --queue 2 --receiving 8 --no-access-log \
        >"$PREFIX/backend-$port.log" 2>&1 &
    BACKEND_PIDS+=($!)
done
for port in "$PORT1" "$PORT2"; do
    wait_for "http://127.0.0.1:$port/healthz" 120 || { tail -20 "$PREFIX/backend-$port.log" >&2; fail "back end $port did not start"; }
done
say "back ends ready on $PORT1 and $PORT2"

# --- nginx in the temporary prefix ------------------------------------------------------------------------
mkdir -p "$PREFIX/tmp"
ln -s "$ROOT/koala/static" "$PREFIX/static"
sed -e "s/127.0.0.1:8001/127.0.0.1:$PORT1/; s/127.0.0.1:8002/127.0.0.1:$PORT2/; s/127.0.0.1:8080/127.0.0.1:$FRONT/" \
    "$HERE/nginx.conf" >"$PREFIX/nginx.conf"
"$NGINX" -p "$PREFIX/" -c nginx.conf -t -q -e stderr || fail "nginx -t rejected the configuration"
"$NGINX" -p "$PREFIX/" -c nginx.conf -e stderr -g 'daemon off;' >"$PREFIX/nginx.log" 2>&1 &
NGINX_PID=$!
URL="http://127.0.0.1:$FRONT"
wait_for "$URL/" 20 || { cat "$PREFIX/nginx.log" >&2; fail "nginx did not start"; }
say "nginx ready on $URL"

# --- the page -------------------------------------------------------------------------------------------
curl -fsS "$URL/" | grep -q 'id="file"' || fail "the page is not served at /"
curl -fsS -o /dev/null "$URL/static/app.js" || fail "/static/app.js is not served"
[[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/service.py") == 404 ]] || fail "nginx serves more than the page"
curl -fsS "$URL/favicon.ico" | grep -q '<svg' || fail "no favicon"
say "ok: page and static files"

# --- one colourisation through the proxy (raw body and multipart) ------------------------------------------
code=$(curl -s -o "$PREFIX/out.jpg" -w '%{http_code}' --data-binary @"$PREFIX/small.jpg" -H 'Content-Type: image/jpeg' "$URL/api/colorize")
[[ $code == 200 ]] || fail "colourisation answered $code"
code=$(curl -s -o "$PREFIX/out.png" -w '%{http_code}' -F "file=@$PREFIX/large.jpg" "$URL/api/colorize?format=png")
[[ $code == 200 ]] || fail "multipart colourisation answered $code"
"$PYTHON" -c '
import sys
from PIL import Image
for path, size, kind in ((sys.argv[1], (230, 150), "JPEG"), (sys.argv[2], (2400, 1800), "PNG")):
    with Image.open(path) as image:
        assert image.format == kind and image.size == size, (path, image.format, image.size)
' "$PREFIX/out.jpg" "$PREFIX/out.png" || fail "the coloured photos are not the uploads' size"
say "ok: colourised through nginx at full size (JPEG raw body, PNG from multipart)"

# --- overload: 16 at once against 2 back ends x (1 worker + 2 queued) ---------------------------------------
mkdir -p "$PREFIX/burst"
BURST_PIDS=()
for i in $(seq 1 16); do
    curl -s -o /dev/null -D "$PREFIX/burst/$i.headers" -w '%{http_code} %{time_total}\n' \
        --data-binary @"$PREFIX/large.jpg" "$URL/api/colorize" >"$PREFIX/burst/$i.code" &
    BURST_PIDS+=($!)
done
wait "${BURST_PIDS[@]}" || true
ok=0; busy=0
for i in $(seq 1 16); do
    read -r code seconds <"$PREFIX/burst/$i.code"
    case $code in
        200) ok=$((ok + 1)) ;;
        503) busy=$((busy + 1))
             grep -qi '^retry-after: [0-9]' "$PREFIX/burst/$i.headers" || fail "a 503 came without Retry-After"
             awk -v s="$seconds" 'BEGIN { exit !(s < 1.0) }' || fail "a 503 took $seconds s" ;;
        *) fail "request $i answered $code" ;;
    esac
done
say "overload: $ok coloured, $busy turned away with 503 + Retry-After"
(( ok >= 2 && busy >= 1 )) || fail "expected some 200s and some 503s, got $ok and $busy"
say "ok: 503 + Retry-After when full"

# --- six slow senders and idle connections -------------------------------------------------------------------
"$PYTHON" - "$FRONT" "$PREFIX/small.jpg" <<'PY' || fail "slow senders or idle connections (see above)"
import socket, sys, threading, time

import httpx

port, photo = int(sys.argv[1]), open(sys.argv[2], "rb").read()
answers = []

def slow_sender():  # a 200 kB upload at about 3 bytes a second
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                           b"Content-Length: 200000\r\n\r\n")
        connection.settimeout(0.3)
        started, answer = time.monotonic(), b""
        while time.monotonic() - started < 40 and b"\r\n\r\n" not in answer:
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
        answers.append((time.monotonic() - started, answer[:12]))

def closed_within(connection, limit):
    connection.settimeout(limit)
    started = time.monotonic()
    try:
        connection.recv(1)
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started

senders = [threading.Thread(target=slow_sender) for _ in range(6)]
for sender in senders:
    sender.start()
time.sleep(1)
codes = [httpx.post(f"http://127.0.0.1:{port}/api/colorize", content=photo, timeout=60).status_code for _ in range(10)]
print(f"beside six slow senders: {codes.count(200)} of 10 coloured", file=sys.stderr)
silent = socket.create_connection(("127.0.0.1", port))
for sender in senders:
    sender.join()
print("slow senders answered:", sorted((round(seconds, 1), answer) for seconds, answer in answers), file=sys.stderr)
idle = closed_within(silent, 30)
print(f"a silent connection was closed after {idle} s", file=sys.stderr)
assert codes == [200] * 10, codes
assert all(answer.startswith(b"HTTP/1.1 408") and seconds < 12 for seconds, answer in answers), answers
assert idle is not None and idle < 15, idle
PY
say "ok: six slow senders blocked nobody and were answered 408; an idle connection was closed"

# --- nothing on disk, everything still up -------------------------------------------------------------------
leftovers=$(find "$PREFIX/tmp" -type f | wc -l)
[[ $leftovers == 0 ]] || fail "nginx wrote $leftovers file(s) under its temporary folders"
for port in "$PORT1" "$PORT2"; do
    curl -fsS "http://127.0.0.1:$port/healthz" | grep -q '"ok":true' || fail "back end $port is not healthy"
done
say "ok: nothing in nginx's temporary folders; both back ends healthy"
say "PASS"
