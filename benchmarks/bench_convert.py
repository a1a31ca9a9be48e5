"""Converters: max |converted-model features - reference forward| at each tap, per converter.

The checkpoints are the test's (tests/test_convert.py): the original's exact key names, shapes
and wrappers with random values; the reference forward is written there from the original's
layer definitions with plain torch.nn.functional calls. Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/bench_convert.py
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SSLZOO_HOME"] = str(Path(tmp) / "home")  # never touch the real store
        from tests.test_convert import CASES, tap_differences

        print("| converter | input | " + " | ".join(f"tap {i + 1}" for i in range(5)) + " |")
        print("|---|---|" + "---|" * 5)
        for case in CASES:
            work = Path(tmp) / case.source
            work.mkdir()
            diffs, *_ = tap_differences(case, work)
            cells = [f"{tap} {d:.2e} (max {s:.1f})" for tap, (d, s) in diffs.items()]
            cells += [""] * (5 - len(cells))
            print(f"| {case.source} | {case.size} px | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
