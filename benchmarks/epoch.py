"""One strategy's full epochs (training, then evaluation) in a fresh process of its own.

A process keeps what its earlier work left (memory the allocator holds, kernels and plans set up
per tensor shape), so the benchmark saves one job (settings, tokenized reviews, the initial model)
and runs each strategy on it here, `python -m benchmarks.epoch JOB_FOLDER STRATEGY`, from the same
seed, model and batches. It writes JOB_FOLDER/STRATEGY.json: tokens, steps, widths, times,
accuracy, the process's peak memory and counters (CPU and kernel seconds, page faults, steal).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import helpers
from benchmarks.measuring import counters_since, process_counters
from benchmarks.step_cost import synthetic_batch
from benchmarks.strategies import Batching, build_batches, get_strategy, step_shapes
from support import memory, models

ROOT = Path(__file__).resolve().parents[1]
WARMUP_WIDTH = 8  # warm-up steps this wide: the process's one-off costs, no review batch's shape


def save_job(work: Path, settings, data: helpers.PreparedData, **job) -> None:
    """The job every strategy's process runs: settings (the model: the one saved here), the
    tokenized splits and `job` (max_tokens, device, amp, warmup_steps, verbose)."""
    work.mkdir(parents=True, exist_ok=True)
    helpers.load_model(settings).save_pretrained(work / "model")  # one initial state for all
    arrays = {"pad_id": np.array(data.pad_id)}
    for split in ("train", "test"):
        dataset = getattr(data, split)
        arrays[f"{split}_ids"] = np.concatenate([np.asarray(s, dtype=np.int64) for s in dataset.input_ids])
        arrays[f"{split}_lengths"], arrays[f"{split}_labels"] = dataset.lengths, dataset.labels
    np.savez(work / "data.npz", **arrays)
    model_settings = dataclasses.replace(settings, model_name=str(work / "model"), tokenizer_name=None)
    (work / "job.json").write_text(json.dumps(dict(job, settings=dataclasses.asdict(model_settings))))


def run_fresh(work: Path, name: str) -> dict:
    """Run strategy `name` of the job in `work` in a new interpreter; its result."""
    command = [sys.executable, "-m", "benchmarks.epoch", str(work), name]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed: see its output above")
    return json.loads((work / f"{name}.json").read_text())


def load_job(work: Path):
    """(settings, train, test, pad_id, job) as save_job wrote them."""
    job = json.loads((work / "job.json").read_text())
    arrays = np.load(work / "data.npz")
    splits = {}
    for split in ("train", "test"):
        ends = np.cumsum(arrays[f"{split}_lengths"])[:-1]
        ids = [s.tolist() for s in np.split(arrays[f"{split}_ids"], ends)]
        splits[split] = helpers.TokenizedDataset(ids, arrays[f"{split}_labels"])
    return helpers.Settings(**job["settings"]), splits["train"], splits["test"], int(arrays["pad_id"]), job


def run_strategy(name: str, settings, train, test, pad_id: int, job: dict) -> dict:
    """Train a model from the saved state on this strategy's batches for settings.epochs, then
    evaluate it: times, tokens, shapes, accuracy, peak memory and counters."""
    strategy, device, amp, verbose = get_strategy(name), torch.device(job["device"]), job["amp"], job["verbose"]
    data = {split: Batching(dataset.lengths, settings.batch_size, settings.max_len, job["max_tokens"],
                            settings.seed) for split, dataset in (("train", train), ("test", test))}
    padding = (pad_id, settings.max_len, settings.pad_to_multiple_of)
    counts, shapes = [], []

    def batches_for_epoch(epoch):
        batches, tokens = build_batches(strategy, train, strategy.train_indices(data["train"], epoch), *padding)
        counts.append(tokens)
        shapes.append(step_shapes(batches))
        return batches

    # Warm-up steps of a throwaway copy, WARMUP_WIDTH wide: thread pools and first allocations are
    # paid before the timing, no strategy's shapes are.
    vocab_size = models.model_config(settings).vocab_size
    helpers.warm_up(settings, [synthetic_batch(WARMUP_WIDTH, settings.batch_size, vocab_size, seed)
                               for seed in range(job["warmup_steps"])], device, job["warmup_steps"], amp)
    if device.type == "cuda":
        memory.reset_peak_memory(device)
    memory.reset_peak_memory(None)  # the process's peak RSS (the allocator trimmed first), on every device
    start_mem = memory.process_memory_mb("VmRSS")
    model = helpers.load_model(settings)
    counters = process_counters()
    history = helpers.fine_tune(model, batches_for_epoch, settings, device, amp=amp, verbose=verbose)
    train_counters = counters_since(counters)
    batches, eval_counts = build_batches(strategy, test, strategy.eval_indices(data["test"]), *padding)
    counters = process_counters()
    evaluation = helpers.evaluate(model, batches, device, amp=amp, verbose=verbose)
    eval_counters = counters_since(counters)
    if len(evaluation["index"]) != len(test):
        raise RuntimeError(f"{name}: evaluated {len(evaluation['index'])} of {len(test)} test reviews")
    result = dict(
        name=name, label=strategy.label, train_batching=strategy.train_batching,
        eval_batching=strategy.eval_batching, pad_to_multiple_of=strategy.padding(*padding[1:])[1],
        train_seconds=sum(h["seconds"] for h in history), train_steps=sum(h["steps"] for h in history),
        train_steps_per_epoch=[h["steps"] for h in history],
        mean_loss_last_epoch=float(np.mean(history[-1]["losses"])),
        eval_seconds=evaluation["seconds"], eval_steps=len(batches), accuracy=evaluation["accuracy"],
        eval_distinct_widths=step_shapes(batches)["distinct_widths"],
        peak_mem_mb=memory.peak_memory_mb(None), start_mem_mb=start_mem,
        cuda_peak_mem_mb=memory.peak_memory_mb(device) if device.type == "cuda" else None,
        train_counters=train_counters, eval_counters=eval_counters, process_id=os.getpid())
    return dict(result, **token_figures(counts, shapes, eval_counts))


def token_figures(counts: list[dict], shapes: list[dict], eval_counts: dict) -> dict:
    """Tokens over all epochs and the widest of each epoch's shapes, as the report reads them."""
    processed = sum(c["processed_tokens"] for c in counts)
    real = sum(c["real_tokens"] for c in counts)
    return dict(
        processed_tokens=processed, real_tokens=real, efficiency=real / processed,
        sequences_per_step_mean=float(np.mean([s["sequences_per_step_mean"] for s in shapes])),
        sequences_per_step_max=max(s["sequences_per_step_max"] for s in shapes),
        largest_batch_tokens=max(s["largest_batch_tokens"] for s in shapes),
        distinct_widths=max(s["distinct_widths"] for s in shapes),
        eval_processed_tokens=eval_counts["processed_tokens"], eval_real_tokens=eval_counts["real_tokens"],
        eval_efficiency=eval_counts["efficiency"])


def main(argv=None) -> dict:
    work, name = (Path(argv[0]), argv[1]) if argv else (Path(sys.argv[1]), sys.argv[2])
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # every process would print the same load report
    result = run_strategy(name, *load_job(work))
    (work / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
