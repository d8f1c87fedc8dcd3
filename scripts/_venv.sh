# Shared by serve.sh and test.sh: make .venv with a Python >= 3.10 and install torch first.
# torch==2.13.0 is pinned first because a bare "torch" requirement can pull a multi-GB CUDA build;
# on a CUDA machine install the build you want into .venv before running these scripts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet torch==2.13.0
fi
