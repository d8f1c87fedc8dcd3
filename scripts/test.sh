#!/usr/bin/env bash
# Install into .venv (with the dev, cluster and agents extras: the cluster tests start a local Ray, the agents tests
# run real pipecat pipelines and livekit-agents classes), install Debian's chromium for the browser test if
# missing, and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
"$VPY" -m pip install --quiet -e '.[dev,cluster,agents]'
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser test will fail" >&2
fi
exec "$VPY" -m pytest "$@"
