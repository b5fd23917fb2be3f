"""The device and how the loops run on it: CUDA or the CPU, mixed precision, attention kernels.

What the series' loops (helpers.train_epoch, predict, step_peak_memory) do differently on a GPU
lives here, so that helpers.py shows the loops themselves; benchmarks/gpu_check.py measures it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def get_device(verbose: bool = True, choice: str = "auto") -> torch.device:
    """CUDA when there is a GPU, else the CPU, saying which (and what that means for speed);
    choice "cpu" or "cuda" (a command line's --device) forces one, and "cuda" without a GPU stops."""
    if choice != "auto":
        if choice == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device")
        return torch.device(choice)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        if verbose:
            print(f"Using the GPU: {torch.cuda.get_device_name(0)}")
    else:
        device = torch.device("cpu")
        if verbose:
            print("No GPU found: running on the CPU. Fine for the tiny profile; for the full recipe "
                  "in Colab choose Runtime > Change runtime type > GPU.")
    return device


# Attention backends the loops allow for PyTorch's scaled_dot_product_attention, which BERT uses.
# cuDNN attention is left out on purpose: it builds an execution plan for every new input shape,
# so a training step at a batch width seen for the first time costs many times a step at a known
# width (benchmarks/gpu_check.py measures it; the records are in docs/). PyTorch tries it first on
# recent data-centre GPUs (compute capability 9.x / 10.x) when the cuDNN it runs with is new
# enough (see sdp_utils.cpp), and smart batching meets a new width at most of a small subset's
# steps, and on all of IMDB once per distinct length. Flash and memory-efficient attention have
# no per-shape set-up; math is the fallback that always works, and what a CPU training step runs
# (the CPU's flash kernel refuses dropout > 0).
ATTENTION_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def attention_backends():
    """Context manager: run attention with the ATTENTION_BACKENDS only, read when it is entered
    (set support.device.ATTENTION_BACKENDS = None to let PyTorch choose, as benchmarks/gpu_check.py does
    to compare). Every training and evaluation loop of the series runs inside it, on every device."""
    backends = ATTENTION_BACKENDS
    return contextlib.nullcontext() if backends is None else sdpa_kernel(list(backends))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where the GPU computes in it, else float16; None on the CPU.

    bfloat16 needs compute capability 8.0 (Ampere: A100, L4, RTX 30xx) or newer. We do not ask
    torch.cuda.is_bf16_supported(): it also says yes on a T4 (7.5, Colab's free GPU), which
    emulates bfloat16 slowly without tensor cores. float16 runs there natively, with a GradScaler
    (see `fine_tune`).
    """
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_inputs(batch: Mapping, device: torch.device, labels: bool = True) -> dict:
    """What the model takes from a batch dict, on `device`: everything but the dataset "index"
    (and, with labels=False, the labels). To a GPU the tensors go from pinned (page-locked) host
    memory with non_blocking=True: the copy then runs alongside the GPU's work instead of
    holding up the CPU."""
    skip = {"index"} if labels else {"index", "labels"}
    tensors = {k: v for k, v in batch.items() if k not in skip}
    if device.type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True)
            for k, v in tensors.items()}
