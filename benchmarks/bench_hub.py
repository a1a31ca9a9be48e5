"""Benchmark of the Hub round trip: publish + load of rotation-alexnet against a local test Hub.

The Hub side is tests/_hub_server.py on 127.0.0.1 (stdlib HTTP, files inline), the client the real
huggingface_hub. Each measured step runs in a fresh Python process (huggingface_hub reads
HF_ENDPOINT at import time) that reports the time of the step itself (after imports) and its own
peak RSS (huggingface_hub's client modules are imported before the clock in every step, so
'step' is the operation itself and 'process' the whole command); the steps are interleaved ``--repeats`` times and medians are printed, next to baselines
measured in the same run:

    copy      shutil.copytree of the model directory (what publishing moves, as local I/O)
    local     zoo.load(<the model directory>)            (loading with no Hub at all)
    publish   zoo.publish(dir, repo) to a new repo each time (validate + create_repo + upload)
    hub-cold  zoo.load("hf-hub:REPO") into an empty HF_HOME  (model info, tree, HEAD+GET per file)
    hub-warm  the same again, files cached                   (model info + tree, no file GET)
    offline   HF_HUB_OFFLINE=1, from the cache               (no requests)

Ratios: publish/copy and publish/local (time), hub-*/local (time and peak RSS).

    .venv/bin/python benchmarks/bench_hub.py [--model rotation-alexnet] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from _hub_server import HubServer  # noqa: E402

TOKEN = "hf_bench_token"

# One step in a fresh process: time of the step after imports, and the process's peak RSS (KiB).
CHILD = """
import json, resource, sys, time
op, arg, arg2 = sys.argv[1], sys.argv[2], sys.argv[3]
from sslzoo import zoo
from huggingface_hub import HfApi, ModelCard, snapshot_download  # noqa: F401  (lazy module: import before the clock, every step alike)
t = time.perf_counter()
if op == "load":
    m = zoo.load(arg)
elif op == "publish":
    zoo.publish(arg, arg2)
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _env(hub: HubServer, hf_home: Path, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_TOKEN=TOKEN, HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return env


def _child(env: dict, op: str, arg: str, arg2: str = "-") -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, op, arg, arg2], env=env, capture_output=True, text=True,
                          timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{op} {arg} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(out, wall=wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rotation-alexnet", help="zoo name or model directory to publish")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from sslzoo import zoo

    model_dir = zoo.resolve(args.model)
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    results: dict[str, list[dict]] = {k: [] for k in ("copy", "local", "publish", "hub-cold", "hub-warm", "offline")}
    with HubServer(token=TOKEN) as hub, tempfile.TemporaryDirectory(prefix="bench_hub.") as tmp:
        tmp = Path(tmp)
        for i in range(args.repeats):
            repo = f"bench/{model_dir.name.replace('.', '-')}-{i}"
            t = time.perf_counter()
            shutil.copytree(model_dir, tmp / f"copy{i}")
            results["copy"].append({"s": time.perf_counter() - t, "rss_kb": 0, "wall": 0})
            results["local"].append(_child(_env(hub, tmp / "unused"), "load", str(model_dir)))
            results["publish"].append(_child(_env(hub, tmp / f"pub{i}"), "publish", str(model_dir), repo))
            home = tmp / f"hf{i}"
            n0 = len(hub.hub.requests)
            results["hub-cold"].append(_child(_env(hub, home), "load", f"hf-hub:{repo}"))
            n1 = len(hub.hub.requests)
            results["hub-warm"].append(_child(_env(hub, home), "load", f"hf-hub:{repo}"))
            n2 = len(hub.hub.requests)
            results["offline"].append(_child(_env(hub, home, offline=True), "load", f"hf-hub:{repo}"))
            n3 = len(hub.hub.requests)
            requests = {"hub-cold": n1 - n0, "hub-warm": n2 - n1, "offline": n3 - n2}

    med = {k: {f: statistics.median(r[f] for r in v) for f in ("s", "rss_kb", "wall")} for k, v in results.items()}
    print(f"model {args.model} ({model_dir.name}): {size / 1e6:.2f} MB in {len(list(model_dir.iterdir()))} files; "
          f"{args.repeats} interleaved repeats, medians; each step a fresh process, 'step' = after imports")
    print(f"{'step':10s} {'step s':>9s} {'process s':>10s} {'peak RSS MiB':>13s}  requests to the hub")
    for k, v in med.items():
        rss = f"{v['rss_kb'] / 1024:13.1f}" if v["rss_kb"] else f"{'-':>13s}"
        wall = f"{v['wall']:10.2f}" if v["wall"] else f"{'-':>10s}"
        print(f"{k:10s} {v['s']:9.4f} {wall} {rss}  {requests.get(k, '')}")
    loc = med["local"]
    print("ratios (step time):  publish/copy %.1f   publish/local-load %.2f   hub-cold/local %.2f   "
          "hub-warm/local %.2f   offline/local %.2f" % (
              med["publish"]["s"] / med["copy"]["s"], med["publish"]["s"] / loc["s"], med["hub-cold"]["s"] / loc["s"],
              med["hub-warm"]["s"] / loc["s"], med["offline"]["s"] / loc["s"]))
    print("ratios (process time): publish/local %.2f   hub-cold/local %.2f   hub-warm/local %.2f   offline/local %.2f" % (
        med["publish"]["wall"] / loc["wall"], med["hub-cold"]["wall"] / loc["wall"],
        med["hub-warm"]["wall"] / loc["wall"], med["offline"]["wall"] / loc["wall"]))
    print("ratios (peak RSS):   publish/local %.2f   hub-cold/local %.2f   hub-warm/local %.2f   offline/local %.2f" % (
        med["publish"]["rss_kb"] / loc["rss_kb"], med["hub-cold"]["rss_kb"] / loc["rss_kb"],
        med["hub-warm"]["rss_kb"] / loc["rss_kb"], med["offline"]["rss_kb"] / loc["rss_kb"]))


if __name__ == "__main__":
    main()
