#!/usr/bin/env bash
# Install into .venv and start the server on its built-in default (lite backend, built-in avatar, 127.0.0.1).
# Extra arguments go to `infinitetalk-live serve` (see `--help`).
source "$(dirname "$0")/_venv.sh"
"$VPY" -m pip install --quiet -e .
exec "$ROOT/.venv/bin/infinitetalk-live" serve "$@"
