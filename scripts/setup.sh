#!/usr/bin/env bash
# Installs the system packages lop builds and runs with (Debian; run as root). Safe to run again.
set -euo pipefail
packages=(libpq-dev libopenblas-dev libcurl4-openssl-dev libpng-dev libjpeg62-turbo-dev postgresql pkg-config python3 python3-numpy python3-venv curl chromium-headless-shell)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (lop needs Swift 6)" >&2; exit 1; }
# llama.cpp's own GGUF reader (the gguf package, from PyPI) checks lop's GGUF exports in the tests, and
# prometheus_client's parser reads the dashboard's /metrics.
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/.venv-check/bin/python" -c "import gguf, prometheus_client" >/dev/null 2>&1; then
  python3 -m venv --system-site-packages "$root/.venv-check"
  "$root/.venv-check/bin/pip" install --quiet "gguf==0.19.0" "prometheus_client==0.26.0"
fi
