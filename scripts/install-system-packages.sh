#!/bin/sh
# Install the Debian/Ubuntu packages named as arguments that are not installed yet (and python3-venv when
# $PYTHON cannot make a virtual environment). Another apt or dpkg run (unattended upgrades, a second terminal)
# is waited for, up to $APT_LOCK_TIMEOUT seconds, instead of failing at once.
set -eu
PYTHON=${PYTHON:-python3}
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}
APT_LOCK_POLL=${APT_LOCK_POLL:-5}
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get: install these yourself (or their equivalents): $*"
  exit 0
fi
missing=""
for package in "$@"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing="$missing python3-venv"
[ -n "$missing" ] || exit 0
echo "installing system packages:$missing"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
apt_get() {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT" "$@"
}
# DPkg::Lock::Timeout makes `install` wait for dpkg's lock; `update` takes the package lists' lock, which apt
# does not wait for, so wait for it here.
waited=0
until output=$(apt_get update -qq 2>&1); do
  case "$output" in
    *"Could not get lock"*|*"Unable to lock"*|*"Unable to acquire"*)
      if awk "BEGIN { exit !($waited >= $APT_LOCK_TIMEOUT) }"; then
        echo "$output" >&2
        exit 1
      fi
      [ "$waited" != 0 ] || echo "another apt is running: waiting for it (up to $APT_LOCK_TIMEOUT s)"
      sleep "$APT_LOCK_POLL"
      waited=$(awk "BEGIN { print $waited + $APT_LOCK_POLL }")
      ;;
    *)
      echo "$output" >&2
      exit 1
      ;;
  esac
done
# shellcheck disable=SC2086  # one word per package
apt_get install -y -qq --no-install-recommends $missing >/dev/null
