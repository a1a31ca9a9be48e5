"""``python -m sslzoo.demo [--host H] [--port P]``: serve the Gradio demo (offline, never shared)."""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sslzoo.demo", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="TCP port")
    p.add_argument("--concurrency", type=int, default=2, help="requests computed at once; the rest queue")
    p.add_argument("--open", action="store_true", help="open a browser on the page")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Serve until interrupted; returns the exit code (``sslzoo demo`` runs this too)."""
    args = parse_args(argv)
    try:
        from .app import launch  # sets the offline environment, then imports gradio
    except ImportError as e:
        print(f"error: the demo needs gradio ({e}); pip install 'sslzoo[demo]'", file=sys.stderr)
        return 1

    try:
        launch(host=args.host, port=args.port, concurrency=args.concurrency, open_browser=args.open)
    except OSError as e:  # port in use, bad host
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
