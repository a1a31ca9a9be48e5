"""What the hardware computes natively: one answer for the training loop's autocast and the probe's
solver passes, and the machine's name for provenance.

bf16 is worth using only where the hardware has it: on a CPU without AVX512-BF16 / AMX-BF16,
PyTorch emulates bf16 matrix products, and they run many times slower than float32.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_info() -> str:
    """/proc/cpuinfo, or '' where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    flags = set()
    for line in cpu_info().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(f in flags for f in _BF16_CPU_FLAGS)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively (CUDA with bf16, or a CPU with
    AVX512-BF16 / AMX-BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def use_bf16(precision: str, device: torch.device | str) -> bool:
    """The precision *used* for a setting: ``bf16`` / ``fp32`` as asked, ``auto`` by the hardware."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    return native_bf16(device)


def resolved_precision(precision: str, device: torch.device | str) -> str:
    """'bf16' or 'fp32': what ``precision`` resolves to on ``device`` (recorded, compared on resume)."""
    return "bf16" if use_bf16(precision, device) else "fp32"


def machine(device: torch.device | str) -> str:
    """e.g. 'AMD EPYC, 2 CPU threads' or 'NVIDIA H100 80GB HBM3'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    names = [ln.split(":", 1)[1].strip() for ln in cpu_info().splitlines() if ln.startswith("model name")]
    return f"{names[0] if names else platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
