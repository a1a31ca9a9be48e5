"""CI checks of the *installed* package (run with the second venv's python, outside the checkout).

    python installed.py readme-block README.md NAME   print the command block after <!-- ci:NAME -->
    python installed.py imports [--demo]               import every module of the installed sslzoo
    python installed.py demo                           `sslzoo demo` on 127.0.0.1 serves a rotation request
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def readme_block(readme: str, name: str) -> str:
    """The indented command block right after ``<!-- ci:NAME -->`` in README.md, as one shell line."""
    text = Path(readme).read_text(encoding="utf-8")
    m = re.search(rf"<!-- ci:{re.escape(name)} -->\n\n((?:    .*\n)+)", text)
    if not m:
        sys.exit(f"{readme}: no indented command block after <!-- ci:{name} -->")
    return " && ".join(line[4:].strip() for line in m.group(1).splitlines() if line.strip())


def imports(with_demo: bool) -> None:
    """Import every module (``__main__`` modules found, not run). Without the [demo] extra, only the
    demo modules may fail, and only for want of gradio."""
    import sslzoo

    root = Path(sslzoo.__file__).parent
    assert "site-packages" in str(root), f"sslzoo imported from {root}, not from an installed wheel"
    names = ["sslzoo"] + [m.name for m in pkgutil.walk_packages(sslzoo.__path__, "sslzoo.")]
    done, missing_gradio = [], []
    for name in names:
        if name.endswith("__main__"):
            assert importlib.util.find_spec(name) is not None, name
            continue
        try:
            importlib.import_module(name)
            done.append(name)
        except ModuleNotFoundError as e:
            if with_demo or e.name != "gradio" or not name.startswith("sslzoo.demo"):
                raise
            missing_gradio.append(name)
    print(f"imported {len(done)} modules from {root}" +
          (f"; without the [demo] extra {len(missing_gradio)} demo module(s) need gradio" if missing_gradio else ""))
    assert any(n.startswith("sslzoo.zoo.pretexts.") for n in done), "no zoo.pretexts module imported"


def demo() -> None:
    """Start `sslzoo demo` on a free loopback port, send one rotation request through gradio_client
    (what a browser's page does), check the answer, stop the server."""
    from sslzoo import zoo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    server = subprocess.Popen(["sslzoo", "demo", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                sys.exit(f"sslzoo demo exited with {server.returncode}:\n{server.stdout.read()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"sslzoo demo did not answer on {url} within 300 s")
                time.sleep(0.5)
        from gradio_client import Client, handle_file

        boot = next(p for p in zoo.example_images() if "ankle-boot" in p.name)
        client = Client(url, verbose=False, download_files=False)
        turned, label, upright, gallery, summary = client.predict("rotation-alexnet", handle_file(str(boot)), "90°",
                                                                  api_name="/rotation")
        assert label["label"] == "90°", label
        print(f"sslzoo demo on {url}: rotation of {boot.name} turned 90° -> predicted {label['label']}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "readme-block":
        print(readme_block(*args))
    elif cmd == "imports":
        imports("--demo" in args)
    elif cmd == "demo":
        demo()
    else:
        sys.exit(__doc__)
