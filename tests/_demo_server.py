"""A real demo server for the demo tests: ``python -m sslzoo.demo`` in a subprocess on 127.0.0.1,
with an audit hook (installed before anything is imported) that logs every socket connect and
name lookup the server process makes, so a test can assert that none leaves the machine."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOOK = r'''
import json, sys
_log = open(sys.argv.pop(1), "a", buffering=1)
def _hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        addr = args[1] if event == "socket.connect" else args[-1]
        _log.write(json.dumps({"event": event, "address": addr if isinstance(addr, (str, tuple, list)) else repr(addr)}) + "\n")
    elif event == "socket.getaddrinfo":
        _log.write(json.dumps({"event": event, "address": [args[0] if isinstance(args[0], (str, type(None))) else repr(args[0]), args[1] if isinstance(args[1], (int, str, type(None))) else repr(args[1])]}) + "\n")
sys.addaudithook(_hook)
from sslzoo.demo.__main__ import main
sys.exit(main(sys.argv[1:]))
'''

LOOPBACK_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_local(record: dict) -> bool:
    """A connect/lookup to loopback or a unix socket."""
    addr = record["address"]
    if isinstance(addr, str):  # AF_UNIX path (or repr of bytes: abstract unix socket)
        return True
    host = addr[0] if addr else None
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class DemoServer:
    proc: subprocess.Popen
    url: str
    audit_log: Path
    stderr_path: Path

    def connections(self) -> list[dict]:
        lines = self.audit_log.read_text().splitlines() if self.audit_log.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(workdir: Path, timeout: float = 600.0, concurrency: int = 2) -> DemoServer:
    """Start the server on a free loopback port; wait until its page answers (or raise with its log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log, err = workdir / "audit.jsonl", workdir / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1",
               GRADIO_TEMP_DIR=str(workdir / "gradio-tmp"))
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", HOOK, str(log), "--host", "127.0.0.1", "--port", str(port),
                                 "--concurrency", str(concurrency)], stdout=f, stderr=subprocess.STDOUT, env=env)
    server = DemoServer(proc, f"http://127.0.0.1:{port}/", log, err)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"demo server exited with {proc.returncode}:\n{err.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"demo server did not answer within {timeout:.0f} s:\n{err.read_text()[-4000:]}")


_SHARED: DemoServer | None = None


def shared(tmp_path_factory) -> DemoServer:
    """One server for the whole test session (the API, connection and browser tests share it)."""
    global _SHARED
    if _SHARED is None or not _SHARED.alive():
        import atexit

        _SHARED = start(tmp_path_factory.mktemp("demo-server"))
        atexit.register(_SHARED.stop)
    return _SHARED


def bad_files(directory: Path) -> dict[str, tuple[Path, str]]:
    """Uploads that must give a one-line reason: name -> (file, words the reason contains)."""
    import io
    import struct
    import zlib

    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    text = directory / "notes.png"
    text.write_text("this is a text file, not a PNG\n")
    out["not an image"] = (text, "not an image")
    empty = directory / "empty.jpg"
    empty.write_bytes(b"")
    out["empty"] = (empty, "empty")
    buf = io.BytesIO()
    Image.effect_noise((96, 96), 64).convert("RGB").save(buf, "PNG")
    truncated = directory / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated"] = (truncated, "truncated or corrupt")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a 30000 x 30000 PNG header (900 megapixels) in 60 bytes: PIL's decompression-bomb guard
    bomb = directory / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    out["too many pixels"] = (bomb, "too large")
    return out
