"""The short soak (issue 5): 8 websocket sessions of real speech in real time for 15 s on the lite
backend, through `bench/soak.py` in its own process (so its RSS is the server's and its clients',
nothing else of the test run). Small frames keep it inside a shared 2-core machine's means."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def test_eight_sessions_hold_25_fps_without_stalls_growth_or_leaks(speech_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--sessions", "8", "--seconds", "15", "--warmup", "5",
         "--size", "64", "--quality", "60", "--chunk-ms", "40", "--speech-dir", str(speech_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    print("\nsoak:", json.dumps({k: v for k, v in r.items() if k != "options"}))
    assert r["sessions"] == 8 and r["sessions_held"] == 8, r
    assert r["errors"] == [] and r["close_codes"] == [1000]
    assert r["stalls"] == 0, r["frame_interval_ms"]
    assert all(abs(f - 25) <= 0.25 for f in r["fps_per_session"]), r["fps_per_session"]  # within 1 %
    assert r["filler_frames_steady"] <= 0.02 * r["frames_steady"], r["filler_frames_steady"]
    assert r["speech_frames"] > 0.3 * r["frames"]  # the clients really spoke
    assert r["rss_mb"]["growth_pct"] < 5.0, r["rss_mb"]
    # Nothing left once every client said bye.
    assert r["tasks"]["after"] <= r["tasks"]["before"], r["tasks"]
    assert set(r["threads"]["names_after"]) <= {"MainThread", "asyncio", "generator-worker", "jpeg"}, r["threads"]
    assert r["engine_sessions_after"] == 0 and r["connections_after"] == 0
    assert r["worker"]["queue_depth_after"] == 0 and r["worker"]["jobs_failed"] == 0
