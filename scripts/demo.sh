#!/usr/bin/env bash
# demo.sh - set up, build, and show Kiln reading the MLP model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
set -x
./build/tools/kiln check models/mlp.kl
./build/tools/kiln dump models/mlp.kl --stage=graph
