#!/usr/bin/env bash
# Prepare what the GPU device machine lacks, in folders git ignores here (.git/info/exclude):
#   .whl     PyAV and pyloudnorm wheels for its Python 3.12 (x86-64), about 35 MB
#   .golden  the top-level golden parity vectors (no loop/ or wav2vec2_tiny/), about 15 MB
# Carry both to the device; bench/gpu_suite.py installs the wheels and finds .golden.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /.golden/; do
    grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
rm -rf .whl  # one version of each, or pip would see two
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av==18.1.0" "pyloudnorm==0.2.0"  # the versions the suite was checked with (--smoke here)
GOLDEN="${INFINITETALK_GOLDEN:-../shared/golden}"
mkdir -p .golden
find "$GOLDEN" -maxdepth 1 -type f \( -name '*.safetensors' -o -name '*.json' \) -exec cp {} .golden/ \;
du -sh .whl .golden
