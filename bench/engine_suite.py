"""The whole engine bench suite: same as `infinitetalk-live bench` (see streaming/benchmark/suite.py). Prints JSON.

    python bench/engine_suite.py --threads 1                       # tiny random model on CPU
    python bench/engine_suite.py --shape 14b --device cuda --size 448x448 --frames 33 --steps 8
"""

from __future__ import annotations

import sys

from server.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
