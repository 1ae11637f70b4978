#!/usr/bin/env bash
# Installs the system packages lop builds and runs with (Debian; run as root). Safe to run again.
set -euo pipefail
packages=(libpq-dev libopenblas-dev libcurl4-openssl-dev libpng-dev libjpeg62-turbo-dev postgresql pkg-config python3 python3-numpy)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (lop needs Swift 6)" >&2; exit 1; }
