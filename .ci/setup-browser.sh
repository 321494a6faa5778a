#!/usr/bin/env bash
# Set-up for the browser test (pytest -m slow tests/test_browser.py): Debian's chromium (apt)
# and the Playwright Python package (pip), each only when it is missing. Playwright drives the
# Debian binary, so no Playwright browser is downloaded (the machine needs only Debian's
# mirrors and PyPI). Run it as root, or as a user with password-less sudo, on Debian.
#   PYTHON=python3.11 .ci/setup-browser.sh    # the Python that runs pytest (default: python3)
set -euo pipefail

python=${PYTHON:-python3}
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi

find_chromium() { command -v chromium || command -v chromium-browser || true; }

did=()
chromium=$(find_chromium)
if [ -z "$chromium" ]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    chromium=$(find_chromium)
    [ -n "$chromium" ] || { echo "setup-browser: apt-get installed chromium, but it is not on PATH" >&2; exit 1; }
    did+=("installed chromium ($chromium)")
else
    did+=("found chromium ($chromium)")
fi

if ! "$python" -c 'import playwright.sync_api' 2>/dev/null; then
    "$python" -m pip install --quiet --disable-pip-version-check playwright
    did+=("installed playwright $("$python" -c 'from importlib.metadata import version; print(version("playwright"))')")
else
    did+=("found playwright $("$python" -c 'from importlib.metadata import version; print(version("playwright"))')")
fi

echo "setup-browser: ${did[0]}; ${did[1]} (for $("$python" -c 'import sys; print(sys.executable)'))"
