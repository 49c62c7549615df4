#!/usr/bin/env bash
# System packages the tests need (Debian/Ubuntu), installed only when missing:
# GStreamer's RTSP server with Python bindings, used by tests/rtsp_server.py as the
# real RTSP server that the restream (RECORD/push) and live-source (PLAY) tests talk to;
# Mosquitto, the real MQTT broker the mqtt sink tests start on a free loopback port (its
# system service is not used), and openssl for the TLS test's self-signed certificate;
# Prometheus (and promtool), the real server that tests/deploy evaluates the Grafana
# dashboard's queries on and checks deploy/compose/prometheus.yml with;
# iproute2 (ip netns, ss) for the cross-host test and bench (two hosts as network namespaces).
# Idempotent; uses sudo only when not root. Usage: scripts/system-deps.sh
set -euo pipefail

PACKAGES=(
  python3
  python3-gi
  gir1.2-gstreamer-1.0
  gir1.2-gst-plugins-base-1.0
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-tools
  mosquitto
  openssl
  iproute2
  prometheus
)

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: apt-get not found; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "system-deps: installing ${missing[*]}"
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
