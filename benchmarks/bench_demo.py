"""Benchmark of the Gradio demo: latency of each endpoint and throughput under 8 clients.

(a) Latency: one gradio_client calls each endpoint ``--n`` times in a row against one server
    (``python -m sslzoo.demo`` in a subprocess on 127.0.0.1, CPU) with a shipped Fashion-MNIST
    example (uploaded on every call, as a browser does); p50 / p95 per endpoint. Baselines measured
    in the same run, interleaved call by call: the same request as raw HTTP (upload, then gradio's
    REST ``/gradio_api/call`` and its SSE answer, with httpx: no client library), the tab's Python
    function in this process (decode, model, display images) and the bare model forward it makes.
    client / raw is what gradio_client adds; raw / tab fn what the server adds (upload, queue,
    events, PNG encoding of the output images).
(b) Throughput: ``--clients`` threads, each with its own gradio_client, call the endpoints
    round-robin for ``--seconds``; requests/s, p50 / p95 under load, and errors (target: 0).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo.py [--n 30] [--clients 8] [--seconds 30]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the client side too: no telemetry
os.environ["HF_HUB_OFFLINE"] = "1"


def _args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30, help="sequential calls per endpoint for the latency")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=2, help="the server's --concurrency (computations at once)")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    return ap.parse_args()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, concurrency: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sslzoo.demo", "--host", "127.0.0.1", "--port", str(port),
                                 "--concurrency", str(concurrency)], stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, GRADIO_TEMP_DIR=str(log.parent / "gradio-tmp")))
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start")


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _stats(xs) -> tuple[float, float]:
    return _pct(xs, 50) * 1e3, _pct(xs, 95) * 1e3


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    args = _args()
    import torch

    from gradio_client import Client, handle_file

    from sslzoo import zoo
    from sslzoo.demo import _core
    from sslzoo.demo.tabs import classify as classify_tab, jigsaw as jigsaw_tab, models as models_tab, \
        relpatch as relpatch_tab, rotation as rotation_tab
    from sslzoo.zoo.pretexts import jigsaw as jg, relpatch as rp, rotation as rot

    torch.set_num_threads(1)
    ex = {p.name: str(p) for p in zoo.example_images()}
    img = ex["fmnist-0-ankle-boot.png"]
    ROT, JIG, REL = "rotation-alexnet", "jigsaw-alexnet", "relative-patch-alexnet"
    # endpoint -> (client args, tab function call, bare forward)
    models = {n: _core.get_model(n) for n in (ROT, JIG, REL)}
    x = {n: _core.model_input(m, _core.square(_core.load_upload(img))) for n, m in models.items()}
    rot_in = rot.rotate_all(x[ROT][None])[0]
    jig_in = jg.make_puzzle(x[JIG], 7, models[JIG])[0][None]
    rel_in = rp.make_pair(x[REL], 2, models[REL])[0][None]

    def nograd(f):
        def g():
            with torch.inference_mode():
                f()
        return g

    endpoints = {
        "/rotation": ((ROT, "upload", "90°"), lambda: rotation_tab.rotation(ROT, img, "90°"),
                      nograd(lambda: models[ROT].predict_pretext(rot_in))),
        "/jigsaw": ((JIG, "upload", 7), lambda: jigsaw_tab.jigsaw(JIG, img, 7), nograd(lambda: models[JIG].predict_pretext(jig_in))),
        "/relpatch": ((REL, "upload", "top-right"), lambda: relpatch_tab.relpatch(REL, img, "top-right"),
                      nograd(lambda: models[REL].predict_pretext(rel_in))),
        "/classify": ((ROT, "conv3", "upload"), lambda: classify_tab.classify(ROT, "conv3", img),
                      nograd(lambda: models[ROT].classify(x[ROT][None], "conv3"))),
        "/model_info": ((JIG,), lambda: models_tab.model_info(JIG), None),
    }

    def call_args(spec):
        return [handle_file(img) if a == "upload" else a for a in spec]

    import httpx

    http = None  # set once the server is up

    def raw_call(name, spec):
        """The request as a browser makes it: upload the file, POST the call, read the SSE answer."""
        data = []
        for a in spec:
            if a == "upload":
                with open(img, "rb") as f:
                    path = http.post("/gradio_api/upload", files={"files": (Path(img).name, f, "image/png")}).json()[0]
                a = {"path": path, "orig_name": Path(img).name, "meta": {"_type": "gradio.FileData"}}
            data.append(a)
        event_id = http.post(f"/gradio_api/call{name}", json={"data": data}).json()["event_id"]
        event = None
        with http.stream("GET", f"/gradio_api/call{name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                    if event == "error":
                        raise RuntimeError(f"{name}: error event")
        if event != "complete":
            raise RuntimeError(f"{name}: no complete event ({event})")

    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    port = args.port or _free_port()
    t0 = time.perf_counter()
    proc = _start_server(port, args.concurrency, tmp / "server.log")
    url = f"http://127.0.0.1:{port}/"
    print(f"server up in {time.perf_counter() - t0:.1f} s at {url} (--concurrency {args.concurrency}); "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} at start; torch {torch.__version__}, "
          f"1 torch thread in this process and the server")
    try:
        client = Client(url, verbose=False, download_files=False)
        http = httpx.Client(base_url=url.rstrip("/"), timeout=120)
        # (a) latency, sequential
        print(f"\n(a) latency, {args.n} sequential calls per endpoint (ms; ratios of p50s)")
        print(f"{'endpoint':12} {'client p50':>10} {'p95':>7} | {'raw HTTP p50':>12} {'p95':>7} | {'tab fn':>7} "
              f"{'forward':>8} | {'client/raw':>10} {'raw/fn':>7} {'raw/fwd':>8}")
        seq = {}
        for name, (spec, fn, fwd) in endpoints.items():
            for _ in range(3):  # warm up (and first-call caches)
                client.predict(*call_args(spec), api_name=name)
                raw_call(name, spec)
                fn()
                fwd and fwd()
            lat, raw_t, fn_t, fwd_t = [], [], [], []
            for _ in range(args.n):  # interleaved, so drifting machine load hits all four alike
                t = time.perf_counter()
                client.predict(*call_args(spec), api_name=name)
                lat.append(time.perf_counter() - t)
                raw_t += _time(lambda: raw_call(name, spec), 1)
                fn_t += _time(fn, 1)
                if fwd:
                    fwd_t += _time(fwd, 1)
            seq[name] = lat
            p50, p95 = _stats(lat)
            r50, r95 = _stats(raw_t)
            f50 = _stats(fn_t)[0]
            w50 = _stats(fwd_t)[0] if fwd_t else float("nan")
            print(f"{name:12} {p50:10.1f} {p95:7.1f} | {r50:12.1f} {r95:7.1f} | {f50:7.1f} {w50:8.1f} | "
                  f"{p50 / r50:9.1f}x {r50 / f50:6.1f}x {r50 / w50:7.1f}x")

        # (b) throughput, concurrent clients
        names = list(endpoints)
        stop = time.monotonic() + args.seconds
        lock = threading.Lock()
        done: dict[str, list[float]] = {n: [] for n in names}
        errors: list[str] = []

        def worker(i: int):
            c = Client(url, verbose=False, download_files=False)
            k = i
            while time.monotonic() < stop:
                name = names[k % len(names)]
                k += 1
                t = time.perf_counter()
                try:
                    c.predict(*call_args(endpoints[name][0]), api_name=name)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                with lock:
                    done[name].append(time.perf_counter() - t)

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(worker, range(args.clients)))
        wall = time.perf_counter() - t0
        total = sum(len(v) for v in done.values())
        seq_rate = len(names) / sum(statistics.median(seq[n]) for n in names)  # one client, same mix
        print(f"\n(b) {args.clients} concurrent clients for {args.seconds:.0f} s, endpoints round-robin: "
              f"{total} requests in {wall:.1f} s = {total / wall:.2f} requests/s, {len(errors)} errors; "
              f"one client in sequence on the same mix: {seq_rate:.2f} requests/s "
              f"(ratio {total / wall / seq_rate:.2f}x)")
        print(f"{'endpoint':12} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for n in names:
            if done[n]:
                p50, p95 = _stats(done[n])
                print(f"{n:12} {len(done[n]):8d} {p50:8.1f} {p95:8.1f}")
        for e in errors[:5]:
            print("error:", e)
        print(f"load average at the end {os.getloadavg()[0]:.2f}; server alive: {proc.poll() is None}")
        return 1 if errors else 0
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
