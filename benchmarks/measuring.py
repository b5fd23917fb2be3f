"""What every measurement records beside its figures: where its time went, and what it ran on."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch

from support import models


def process_counters() -> dict:
    """Where time goes, so far: this process's CPU seconds (system_seconds: those in the kernel,
    where a page fault's zeroing goes), its page faults (memory it had to get from the kernel
    again) and the machine's steal time (CPU time a shared host gave to other guests;
    Linux only, else None): wall time against CPU seconds and steal tells more work from waiting."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()  # cpu user nice ... steal
        steal = int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        steal = None
    return dict(wall_seconds=time.perf_counter(), cpu_seconds=usage.ru_utime + usage.ru_stime,
                system_seconds=usage.ru_stime, page_faults=usage.ru_minflt, steal_seconds=steal)


def counters_since(start: dict) -> dict:
    now = process_counters()
    return {key: None if value is None or now[key] is None else now[key] - value for key, value in start.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_allocator() -> str:
    """The C allocator CPU tensors come from (a preloaded tcmalloc or jemalloc, else glibc's
    malloc) and any MALLOC_* settings: on a CPU it decides how often memory is faulted in anew."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    name = next((f"{n} (preloaded)" for n in ("tcmalloc", "jemalloc", "mimalloc") if f"lib{n}" in maps), "glibc malloc")
    return " ".join([name] + [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")])


def machine_info(device: torch.device) -> dict:
    """The machine, its load when the run started, and the versions that ran: every record names them."""
    import transformers

    cores_available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return dict(
        cpu=cpu_model(), cores=os.cpu_count(), cores_available=cores_available,
        torch_threads=torch.get_num_threads(), allocator=memory_allocator(),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        python=platform.python_version(), platform=platform.platform(),
        torch=torch.__version__, transformers=transformers.__version__, device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        cuda=torch.version.cuda if device.type == "cuda" else None)


def describe_source(source: str) -> str:
    """A data source or model as it should appear in a report: a local path by its name only."""
    return f"{Path(source).name} (local)" if os.sep in source or os.path.exists(source) else source


def model_info(settings) -> dict:
    config = models.model_config(settings)
    return dict(name=describe_source(settings.model_name), model_type=config.model_type,
                layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                vocab_size=config.vocab_size)


def command_line(module: str, argv) -> str:
    """The command as run, absolute paths cut to their last part (only the machine that ran it has them)."""
    parts = [Path(a).name if os.path.isabs(a) else a for a in map(str, argv)]
    return " ".join(["python", "-m", f"benchmarks.{module}", *parts])
