"""Peak memory, per phase: the CUDA allocator's peak on a GPU, the process's peak RSS on the CPU."""

from __future__ import annotations

import resource
from collections.abc import Mapping
from pathlib import Path

import torch

from support.device import attention_backends, autocast_dtype, model_inputs, synchronize


def reset_peak_memory(device: torch.device | None = None) -> None:
    """Start a new peak-memory measurement (CUDA allocator peak, or the process's peak RSS).

    On Linux, writing 5 to /proc/self/clear_refs resets the kernel's resident-set high-water mark
    (VmHWM), so CPU peaks can be measured per phase inside one process, like CUDA's. Before that,
    glibc's malloc_trim hands freed heap pages back to the OS: otherwise memory an earlier, larger
    step freed stays resident, and a later step reuses it without raising the peak at all.
    """
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the baseline may include freed memory still held by the allocator
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: peak_memory_mb then reports the peak since the process started


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory since the last reset, in MiB: CUDA allocations on a GPU, the process's peak RSS
    (everything resident: Python, the model, activations) on the CPU."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = process_memory_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux KiB; lifetime peak


def process_memory_mb(field: str = "VmRSS") -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: peak
    resident), in MiB; None where there is no /proc (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def step_peak_memory(model, batch: Mapping, device: torch.device, optimizer, amp: bool = True) -> dict:
    """Memory of ONE training step (forward, backward, optimizer step) on `batch`, in MiB.

    baseline_mb: in use right before the step (model, optimizer state; on the CPU the whole
    process); peak_mb: the peak during it; extra_mb = peak - baseline: what the step itself needs
    (activations, gradients). `measures` says which memory: CUDA allocations or the process's RSS.
    A fresh AdamW allocates its state (2x the parameters) in its first step: take one warm-up
    step first to see activations and gradients alone. Autocast on CUDA as in `train_epoch`.
    """
    model.train()
    batch = model_inputs(batch, device)
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    reset_peak_memory(device)
    baseline = peak_memory_mb(device)  # right after a reset, the peak is what is in use now
    amp_dtype = autocast_dtype(device) if amp else None
    with attention_backends(), torch.autocast(device.type, dtype=amp_dtype,
                                              enabled=amp_dtype is not None):
        loss = model(**batch).loss
        loss.backward()
    optimizer.step()
    synchronize(device)
    peak = peak_memory_mb(device)
    optimizer.zero_grad(set_to_none=True)  # free the gradients before the next measurement
    return dict(baseline_mb=baseline, peak_mb=peak, extra_mb=peak - baseline,
                measures="CUDA allocated memory" if device.type == "cuda" else "process peak RSS")
