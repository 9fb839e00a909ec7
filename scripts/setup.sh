#!/usr/bin/env bash
# setup.sh - install every Debian 12 package Kiln's build, tests and demo need.
# Idempotent; run as root on a fresh machine.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git  # the toolchain
  llvm-19-dev                           # the backend (LLVM C API)
  libffi-dev libxxhash-dev zlib1g-dev libjansson-dev
  librandom123-dev                      # Philox, header only
  libcmocka-dev                         # unit tests
  clang libclang-rt-dev                 # libFuzzer targets
  clang-format                          # format-check
  graphviz                              # tests render --format=dot with dot
  dataset-fashion-mnist                 # the demo's data (/usr/share/datasets/fashion-mnist)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#packages[@]} packages present"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
