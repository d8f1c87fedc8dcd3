"""Every CUDA figure of the throughput, FlashTalk and FlashHead issues, in one command sized for a short GPU lease.

Runs the benches one after another, each in its own process under a time limit (so one that hangs
or runs out of memory costs only its own slot), stops starting new ones when the budget is spent,
and writes two files: results.json (each bench's JSON, exit code and seconds) and logs.txt (their
stderr). Random weights at the real 14B and 1.3B shapes: no checkpoint needed. A step that this build
cannot run yet (FlashHead Lite before its VAE is ported) is recorded as "not_available" without failing.

    python3 bench/gpu_suite.py                       # on a CUDA machine; files under $OUT or ./gpu_results
    python3 bench/gpu_suite.py --budget 480 --only speed_448,flashtalk
    python3 bench/gpu_suite.py --smoke               # CPU: the same steps at tiny sizes (checks the suite)

A machine without PyAV or pyloudnorm (the device image) gets them as wheels, and the golden parity
vectors do not travel with the checkout: run `scripts/gpu_prepare.sh` here first and carry `.whl`
and `.golden`; the suite installs the wheels into /tmp/site and points the parity step at .golden.
Steps that need several GPUs (sequence parallelism, the split VAE) run only when there are several.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# name, seconds at most, command (CUDA), command (--smoke on CPU). In order of what is worth most if the
# lease runs short; steps that print a JSON line per finished part keep their parts when cut off.
STEPS: list[tuple[str, int, list[str], list[str]]] = [
    ("parity", 60,
     [PY, "bench/cuda_parity.py", "--device", "cuda"],
     [PY, "bench/cuda_parity.py"]),
    # SoulX-FlashHead, the one-GPU model: the 1.3B Pro shape at 512x512 (stage split and real-time factor,
    # then N sessions' chunks in one batched pass); Lite once its VAE is ported (PROBES says why not yet).
    ("flashhead_pro", 90,
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-pro", "--shape", "1.3b", "--device", "cuda",
      "--windows", "3", "--only", "stages"],
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-pro", "--windows", "1", "--only", "stages"]),
    ("flashhead_pro_sessions", 150,
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-pro", "--shape", "1.3b", "--device", "cuda",
      "--windows", "2", "--sessions", "2,4,8", "--only", "sessions"],
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-pro", "--windows", "1", "--sessions", "2",
      "--only", "sessions"]),
    ("flashhead_lite", 150,
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-lite", "--shape", "1.3b", "--device", "cuda",
      "--windows", "2", "--sessions", "2,4,8"],
     [PY, "-m", "server.cli", "bench", "--preset", "flashhead-lite", "--windows", "1", "--sessions", "2"]),
    ("fp8_linears", 45,
     [PY, "bench/fp8_linears.py", "--device", "cuda"],
     [PY, "bench/fp8_linears.py", "--repeats", "2"]),
    ("speed_448", 150,
     [PY, "bench/speed_model.py", "--device", "cuda", "--preset", "14b", "--size", "448x448", "--frames", "33",
      "--steps", "4", "--variants", "eager,fp8,graphs"],
     [PY, "bench/speed_model.py", "--teacache", "2.5"]),
    ("flashtalk", 120,
     [PY, "bench/flashtalk.py", "--device", "cuda", "--chunks", "2"],
     [PY, "bench/flashtalk.py", "--chunks", "1"]),
    ("engine", 150,
     [PY, "-m", "server.cli", "bench", "--shape", "14b", "--device", "cuda", "--size", "448x448", "--frames", "33",
      "--motion-frames", "9", "--steps", "4", "--sessions", "1,2,4", "--only", "stages,offline,sessions,guidance"],
     [PY, "-m", "server.cli", "bench", "--sessions", "1,2", "--only", "stages,offline"]),
    # Compiling the 14B blocks takes minutes: last, and printing each variant as it finishes.
    ("speed_640", 200,
     [PY, "bench/speed_model.py", "--device", "cuda", "--preset", "14b", "--size", "640x640", "--frames", "33",
      "--steps", "4", "--variants", "eager,fp8,compiled", "--fp8-activations", "row"],
     [PY, "bench/speed_model.py", "--teacache", "2.5", "--size", "64x64"]),
]
PROBES: dict[str, list[str]] = {
    "flashhead_lite": [PY, "-c", "from streaming.benchmark.flashhead import unavailable; "
                                 "print(unavailable('flashhead-lite') or '')"],
}
"""Steps that may not be runnable by this build: the probe prints why not (recorded as "not_available",
which does not fail the suite) or nothing."""
MULTI_GPU_STEPS: list[tuple[str, int, list[str]]] = [
    ("parallel_check", 120, ["-m", "model.dit.parallel_check"]),
    ("vae_split", 120, ["bench/vae_split.py", "--device", "cuda", "--size", "768x448", "--frames", "33"]),
]


def _install_wheels(env: dict[str, str]) -> str:
    wheels = sorted(str(p) for p in (REPO / ".whl").glob("*.whl"))
    if not wheels:
        return "no .whl folder: using the machine's packages"
    done = subprocess.run([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", "/tmp/site", *wheels],
                          capture_output=True, text=True)
    if done.returncode:
        return f"installing wheels failed: {done.stderr[-500:]}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, ["/tmp/site", str(REPO), env.get("PYTHONPATH")]))
    return f"installed {len(wheels)} wheels into /tmp/site"


def _last_json(text: str) -> object | None:
    """The last JSON object printed (one line, or indented over several lines), else None."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if not lines[i].startswith("{"):
            continue
        try:
            return json.loads("\n".join(lines[i:]))
        except json.JSONDecodeError:
            try:
                return json.loads(lines[i])
            except json.JSONDecodeError:
                continue
    return None


def _probe(probe: list[str], env: dict[str, str], timeout: float) -> dict | None:
    """None when the step can run; else its entry in results.json: {"not_available": why} when the probe
    says why (not a failure), {"rc": "probe failed", ...} when the probe itself fails or hangs (a failure)."""
    try:
        done = subprocess.run(probe, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": "probe failed", "error": f"probe timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"rc": "probe failed", "error": done.stderr.strip()[-1000:]}
    why = done.stdout.strip()
    return {"not_available": why} if why else None


def _environment(env: dict[str, str]) -> dict:
    probe = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
             "'cuda': torch.version.cuda, 'gpus': torch.cuda.device_count(), "
             "'gpu': torch.cuda.get_device_name(0) if c else None, "
             "'capability': torch.cuda.get_device_capability(0) if c else None}))")
    done = subprocess.run([PY, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO)
    return _last_json(done.stdout) or {"error": done.stderr[-1000:]}  # type: ignore[return-value]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=540, help="seconds for all steps together (default 540)")
    ap.add_argument("--only", help="comma-separated step names")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_results")))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check that every step runs")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if (REPO / ".golden" / "dit_config.json").is_file():
        env.setdefault("INFINITETALK_GOLDEN", str(REPO / ".golden"))
    start = time.monotonic()
    wheels = "smoke run: the machine's packages" if args.smoke else _install_wheels(env)
    results: dict = {"wheels": wheels, "environment": _environment(env), "steps": {}}
    steps = [(name, limit, smoke if args.smoke else cuda) for name, limit, cuda, smoke in STEPS]
    gpus = results["environment"].get("gpus") or 0
    if gpus > 1 and not args.smoke:
        launcher = [PY, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus)]
        steps += [(name, limit, launcher + cmd) for name, limit, cmd in MULTI_GPU_STEPS]
    wanted = set(args.only.split(",")) if args.only else None
    log_path = args.out / "logs.txt"
    with log_path.open("w") as logs:
        for name, limit, cmd in steps:
            if wanted is not None and name not in wanted:
                continue
            left = args.budget - (time.monotonic() - start)
            if left < 30:
                results["steps"][name] = {"skipped": f"budget spent ({args.budget:.0f} s)"}
                continue
            t0 = time.monotonic()
            if name in PROBES and (entry := _probe(PROBES[name], env, min(60.0, left))):
                results["steps"][name] = {**entry, "seconds": round(time.monotonic() - t0, 1)}
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
                print(f"{name}: {entry.get('rc', 'not available')}", flush=True)
                continue
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                                      timeout=min(limit, left))
                rc, stdout, stderr = done.returncode, done.stdout, done.stderr
            except subprocess.TimeoutExpired as exc:
                rc = "timeout"
                stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            seconds = round(time.monotonic() - t0, 1)
            results["steps"][name] = {"rc": rc, "seconds": seconds, "command": " ".join(cmd[1:]),
                                      "result": _last_json(stdout)}
            logs.write(f"===== {name}: rc {rc}, {seconds} s\n{stderr[-20000:]}\n")
            logs.flush()
            (args.out / "results.json").write_text(json.dumps(results, indent=1))  # partial results survive a kill
            print(f"{name}: rc {rc}, {seconds} s", flush=True)
    results["seconds"] = round(time.monotonic() - start, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v.get("rc", v.get("skipped", "not available" if "not_available" in v else None))
                      for k, v in results["steps"].items()}))
    return 0 if all(v.get("rc") == 0 or "not_available" in v for v in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
