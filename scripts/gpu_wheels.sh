#!/usr/bin/env bash
# Download the wheels the GPU device image lacks (PyAV, pyloudnorm; Python 3.12, x86-64) into .whl,
# which git ignores here (.git/info/exclude). Carry .whl to the device; bench/gpu_suite.py installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av>=12" "pyloudnorm>=0.1.1"
ls -l .whl
