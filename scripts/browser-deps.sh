#!/usr/bin/env bash
# Install what the live-view browser test needs on a Debian machine: Debian's
# chromium and the matching chromium-driver (selenium drives it; nothing is
# downloaded outside the system package manager). Idempotent: does nothing when
# both are already installed. Runs as root, or through sudo when available.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "browser-deps: chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "browser-deps: need root (or sudo) to install chromium and chromium-driver" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-deps: apt-get not found; install chromium and chromium-driver with your package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
echo "browser-deps: installed $(chromium --version 2>/dev/null || echo chromium)"
