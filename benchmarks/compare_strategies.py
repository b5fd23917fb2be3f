"""Five ways to batch the same data, one after another in one process: tokens, time, memory, accuracy.

1. fixed           every sequence padded to max_len, batches in random order (the recipe's
                   "old approach", helpers.make_fixed_batches)
2. dynamic         the same random batches, each padded only to its own longest sequence
3. smart           the recipe's smart batching: sort by length, random contiguous runs
                   (helpers.smart_batch_indices, as in make_smart_batches)
4. length_grouped  Hugging Face's LengthGroupedSampler (what Trainer uses with
                   train_sampling_strategy="group_by_length", formerly group_by_length=True),
                   its indices cut into batches of batch_size, each padded to its longest
5. token_budget    helpers.SmartBatchSampler with max_tokens: as many sequences per batch as fit
                   in len(batch) * longest <= max_tokens (short reviews in large batches, long
                   ones in small); by default helpers.token_budget, batch_size x the mean length,
                   which keeps about batch_size's number of optimizer steps

Every strategy trains a fresh copy of the same model (same seed) for --epochs on the same training
subset with helpers.fine_tune, then evaluates on the same test subset with helpers.evaluate,
batched its own way (see EVAL_BATCHING). Batches are built before each epoch's timer starts, so
the training time is the model's work; building them is timed separately (build_seconds).

Three timings, so that a busy machine shows rather than misleads:

* The step-cost curve (step_cost.py), measured first: seconds per step at --curve-widths, from
  which each strategy's epoch time is predicted before it runs (predicted_train_seconds).
* Interleaved rounds (--rounds, --round-steps): each round trains a few steps of every strategy,
  in rotating order, each from the same saved model and optimizer state; every round gives each
  strategy's speed-up against fixed padding, and the report gives the median over rounds with
  its spread (train_speedup, train_speedup_spread). A slow spell hits one round of every
  strategy, not one strategy's whole epoch.
* One full epoch per strategy, one after another (train_seconds): the accuracy, memory and token
  counts come from these. Each epoch and evaluation also records where its time went
  (train_counters, eval_counters: CPU seconds, page faults, the machine's steal time), so that a
  slow epoch tells a process doing more work from one kept waiting.

    python benchmarks/compare_strategies.py --quick                    # tiny profile, seconds
    python benchmarks/compare_strategies.py --data aclImdb_v1.tar.gz --model bert-base-uncased \\
        --train-size 2000 --test-size 2000 --out docs/benchmark

Writes results.json, results.md and results.png to --out, and step_costs.png (the curve).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))  # helpers.py
sys.path.insert(0, str(BENCHMARKS))  # batching_speed.py
import helpers  # noqa: E402
from support import device as device_support, memory, models  # noqa: E402
import step_cost  # noqa: E402
from batching_speed import construction_table  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Batching:
    """What a strategy's batches are built from: the split's lengths and the run's settings."""

    lengths: np.ndarray
    batch_size: int
    max_len: int
    max_tokens: int
    seed: int


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way to batch: its label, how it batches for training and evaluation (in words and as
    a function giving batch indices), and whether its batches are padded to max_len."""

    name: str
    label: str
    train_batching: str
    eval_batching: str
    train_indices: Callable[[Batching, int], list]  # (data, epoch) -> that epoch's batches
    eval_indices: Callable[[Batching], list]
    pad_to_max_len: bool = False
    pad_to_multiple_of: int | None = None  # this strategy's own width bucketing


def length_grouped_batches(lengths, batch_size: int, seed: int) -> list[np.ndarray]:
    """LengthGroupedSampler's index order cut into consecutive batches, as a DataLoader would."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(batch_size, lengths=[int(n) for n in lengths],
                                   generator=torch.Generator().manual_seed(seed))
    order = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def budget_batches(d: Batching, epoch: int | None) -> list[np.ndarray]:
    """SmartBatchSampler with a token budget: shuffled for training (epoch given), sorted for eval."""
    sampler = helpers.SmartBatchSampler(d.lengths, None, max_tokens=d.max_tokens, seed=d.seed,
                                        shuffle=epoch is not None)
    sampler.set_epoch(epoch or 0)
    return sampler.batches()


def random_batches(d: Batching, epoch: int) -> list[np.ndarray]:
    return helpers.fixed_batch_indices(len(d.lengths), d.batch_size, d.seed + epoch)


def input_order_batches(d: Batching) -> list[np.ndarray]:
    return helpers.fixed_batch_indices(len(d.lengths), d.batch_size, shuffle=False)


def smart_batches(d: Batching, epoch: int) -> list[np.ndarray]:
    return helpers.smart_batch_indices(d.lengths, d.batch_size, seed=d.seed + epoch)


def sorted_batches(d: Batching) -> list[np.ndarray]:
    return helpers.sorted_batch_indices(d.lengths, d.batch_size)


SMART_WORDS = "random contiguous runs of the length-sorted order, each padded to its longest"
SORTED_WORDS = "sorted by length (sorted_batch_indices), each batch padded to its longest"
STRATEGY_LIST = [
    Strategy("fixed", "Fixed padding to max_len",
             "random order, every sequence padded to max_len", "input order, padded to max_len",
             random_batches, input_order_batches, pad_to_max_len=True),
    Strategy("dynamic", "Dynamic padding, random order",
             "the same random batches as fixed, each padded to its longest",
             "input order (unsorted), each batch padded to its longest",
             random_batches, input_order_batches),
    Strategy("smart", "Smart batching (recipe)", SMART_WORDS, SORTED_WORDS,
             smart_batches, sorted_batches),
    Strategy("length_grouped", "HF LengthGroupedSampler",
             "LengthGroupedSampler indices (random mega-batches of up to 50 batches, sorted within), "
             "cut into batch_size, each padded to its longest",
             "LengthGroupedSampler, seeded (as Trainer evaluates with group_by_length)",
             lambda d, epoch: length_grouped_batches(d.lengths, d.batch_size, d.seed + epoch),
             lambda d: length_grouped_batches(d.lengths, d.batch_size, d.seed)),
    Strategy("token_budget", "SmartBatchSampler, token budget",
             "runs of the length-sorted order with len(batch) * longest <= max_tokens, in random "
             "order, each padded to its longest",
             "sorted by length with the token budget (SmartBatchSampler, shuffle=False)",
             budget_batches, lambda d: budget_batches(d, None)),
    Strategy("smart_bucketed", "Smart batching, widths rounded up to x8",
             SMART_WORDS + ", rounded up to a multiple of 8", SORTED_WORDS + ", rounded up to x8",
             smart_batches, sorted_batches, pad_to_multiple_of=8),
]
STRATEGIES = {s.name: s for s in STRATEGY_LIST}
DEFAULT_STRATEGIES = ("fixed", "dynamic", "smart", "length_grouped", "token_budget")
QUICK_SIZES = dict(train_size=256, test_size=256)


def build_batches(strategy: Strategy, split: helpers.TokenizedDataset, indices, pad_id: int,
                  max_len: int, pad_to_multiple_of: int | None):
    """(batch dicts, token counts) for these batch indices, padded the strategy's way."""
    multiple = strategy.pad_to_multiple_of or pad_to_multiple_of
    pad_to = max_len if strategy.pad_to_max_len else None
    batches = helpers.batches_from_indices(split.input_ids, split.labels, indices, pad_id, pad_to, multiple)
    return batches, helpers.count_tokens(split.lengths, indices, pad_to, multiple)


def step_shapes(batches: list[dict]) -> dict:
    """Sequences per step and batch widths: why strategies differ in steps, memory and speed."""
    rows = np.array([b["input_ids"].shape[0] for b in batches])
    widths = np.array([b["input_ids"].shape[1] for b in batches])
    return dict(steps=len(batches), sequences_per_step_mean=float(rows.mean()),
                sequences_per_step_max=int(rows.max()), largest_batch_tokens=int((rows * widths).max()),
                distinct_widths=len(set(widths.tolist())))


# ----------------------------------------------------------------------------------------------
# Running one strategy.
# ----------------------------------------------------------------------------------------------

def release_memory() -> None:
    """Free what the previous strategy left, so that the next one starts from the same baseline
    (memory.reset_peak_memory then hands freed heap back to the OS before resetting the peak)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_strategy(strategy: Strategy, settings, train: helpers.TokenizedDataset,
                 test: helpers.TokenizedDataset, pad_id: int, max_tokens: int,
                 device: torch.device, amp: bool, verbose: bool = True, curve: dict | None = None) -> dict:
    """Train a fresh model with this strategy's batches, evaluate it, and measure both; with a
    step-cost curve, also predict both times from the batches' shapes (before they run)."""
    data = {split: Batching(dataset.lengths, settings.batch_size, settings.max_len, max_tokens,
                            settings.seed) for split, dataset in (("train", train), ("test", test))}
    padding = (pad_id, settings.max_len, settings.pad_to_multiple_of)
    counts, shapes, build_seconds, predicted = [], [], [0.0], [0.0]

    def batches_for_epoch(epoch):
        start = time.perf_counter()
        indices = strategy.train_indices(data["train"], epoch)
        batches, tokens = build_batches(strategy, train, indices, *padding)
        counts.append(tokens)
        shapes.append(step_shapes(batches))
        build_seconds[0] += time.perf_counter() - start
        if curve:
            predicted[0] += step_cost.predict_epoch_seconds(curve, step_cost.batch_shapes(batches))
        return batches

    release_memory()
    memory.reset_peak_memory(None)  # the process's peak RSS, on every device
    if device.type == "cuda":
        memory.reset_peak_memory(device)
    start_mem = memory.process_memory_mb("VmRSS")

    model = helpers.load_model(settings)
    counters = process_counters()
    history = helpers.fine_tune(model, batches_for_epoch, settings, device, amp=amp, verbose=verbose)
    train_counters = counters_since(counters)

    start = time.perf_counter()
    test_indices = strategy.eval_indices(data["test"])
    batches, eval_counts = build_batches(strategy, test, test_indices, *padding)
    eval_build_seconds = time.perf_counter() - start
    counters = process_counters()
    evaluation = helpers.evaluate(model, batches, device, amp=amp, verbose=verbose)
    eval_counters = counters_since(counters)
    if len(evaluation["index"]) != len(test):
        raise RuntimeError(f"{strategy.name}: evaluated {len(evaluation['index'])} of {len(test)} test reviews")

    peak_mem = memory.peak_memory_mb(None)
    cuda_peak = memory.peak_memory_mb(device) if device.type == "cuda" else None
    eval_shapes = step_shapes(batches)
    predicted_eval = step_cost.predict_epoch_seconds(curve, step_cost.batch_shapes(batches), "eval") if curve else None
    del model, batches
    padded = sum(c["processed_tokens"] for c in counts)
    real = sum(c["real_tokens"] for c in counts)
    return dict(
        name=strategy.name, label=strategy.label,
        train_batching=strategy.train_batching, eval_batching=strategy.eval_batching,
        processed_tokens=padded, real_tokens=real, efficiency=real / padded,
        train_seconds=sum(h["seconds"] for h in history),
        train_steps=sum(h["steps"] for h in history),
        train_steps_per_epoch=[h["steps"] for h in history],
        sequences_per_step_mean=float(np.mean([s["sequences_per_step_mean"] for s in shapes])),
        sequences_per_step_max=max(s["sequences_per_step_max"] for s in shapes),
        largest_batch_tokens=max(s["largest_batch_tokens"] for s in shapes),
        distinct_widths=max(s["distinct_widths"] for s in shapes),
        mean_loss_last_epoch=float(np.mean(history[-1]["losses"])),
        build_seconds=build_seconds[0],
        eval_processed_tokens=eval_counts["processed_tokens"], eval_real_tokens=eval_counts["real_tokens"],
        eval_efficiency=eval_counts["efficiency"], eval_steps=len(test_indices),
        eval_distinct_widths=eval_shapes["distinct_widths"],
        eval_seconds=evaluation["seconds"], eval_build_seconds=eval_build_seconds,
        accuracy=evaluation["accuracy"],
        peak_mem_mb=peak_mem, start_mem_mb=start_mem, cuda_peak_mem_mb=cuda_peak,
        predicted_train_seconds=predicted[0] if curve else None, predicted_eval_seconds=predicted_eval,
        train_counters=train_counters, eval_counters=eval_counters,  # wall, CPU, page faults, steal
    )


# ----------------------------------------------------------------------------------------------
# Interleaved rounds: speed-ups that a busy machine cannot bias towards one strategy.
# ----------------------------------------------------------------------------------------------

def interleaved_schedule(names: list[str], rounds: int) -> list[list[str]]:
    """The order of each round: every strategy once, the list rotated by one place a round, so
    that no strategy always runs first (just after the state is restored) or last. With rounds a
    multiple of len(names), each strategy runs in every position equally often."""
    n = len(names)
    return [list(names[r % n:]) + list(names[:r % n]) for r in range(rounds)]


def round_slices(batch_tokens, rounds: int, steps: int) -> list[np.ndarray]:
    """Which of an epoch's batches each round runs: `steps` of them (fewer if the epoch is
    short), positions in the epoch, in epoch order.

    Every round gets a sample of the same kind: the batches sorted by their tokens (rows x width)
    are sampled at rounds x steps evenly spaced points, dealt to the rounds in a snake order
    (0, 1, .., R-1, R-1, .., 1, 0, 0, 1, ..), so that no round gets only the cheap end. When
    rounds x steps covers the epoch, the rounds together run each batch once; with fewer batches
    than rounds, a batch can serve two rounds."""
    n = len(batch_tokens)
    by_cost = np.argsort(np.asarray(batch_tokens), kind="stable")
    points = max(rounds, min(n, rounds * steps))
    picks = by_cost[((np.arange(points) + 0.5) * n / points).astype(int)]
    lap, position = np.divmod(np.arange(points), rounds)
    owner = np.where(lap % 2 == 0, position, rounds - 1 - position)
    return [np.sort(picks[owner == r]) for r in range(rounds)]


def run_rounds(strategies: list[Strategy], settings, train: helpers.TokenizedDataset, pad_id: int,
               max_tokens: int, device: torch.device, amp: bool, rounds: int, steps: int,
               verbose: bool = True) -> dict[str, dict]:
    """Time slices of every strategy's first epoch in interleaved rounds (see round_slices and
    interleaved_schedule), each slice from the same saved model, optimizer and schedule state
    and the same dropout seed. Each round estimates a strategy's epoch time as its slice's time
    x its epoch's steps / the slice's steps. Returns per strategy the slices' steps and seconds
    and those estimates, round by round."""
    data = Batching(train.lengths, settings.batch_size, settings.max_len, max_tokens, settings.seed)
    padding = (pad_id, settings.max_len, settings.pad_to_multiple_of)
    plans = {}
    for strategy in strategies:
        indices = strategy.train_indices(data, 0)
        multiple = strategy.pad_to_multiple_of or settings.pad_to_multiple_of
        shapes = step_cost.shapes_from_indices(train.lengths, indices, settings.max_len
                                               if strategy.pad_to_max_len else None, multiple)
        slices = round_slices([w * rows for w, rows in shapes], rounds, steps)
        plans[strategy.name] = dict(steps=len(indices), batches=[build_batches(
            strategy, train, [indices[i] for i in part], *padding)[0] for part in slices])

    release_memory()
    helpers.set_seed(settings.seed)
    model = helpers.load_model(settings).to(device)
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    optimizer, scheduler = helpers.make_optimizer(model, settings, max(p["steps"] for p in plans.values()))
    step_model = torch.compile(model, dynamic=True) if settings.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def train_slice(batches):
        return helpers.train_epoch(step_model, batches, optimizer, scheduler, device, settings.max_grad_norm,
                                   amp_dtype, scaler, verbose=False)["seconds"]

    # One step first (compiling, with --compile), so that every slice starts with AdamW's state.
    train_slice(plans[strategies[0].name]["batches"][0][:1])
    saved = [copy.deepcopy(x.state_dict()) for x in (model, optimizer, scheduler, scaler)]
    timings = {s.name: dict(round_steps=[], round_seconds=[], round_epoch_seconds=[]) for s in strategies}
    for r, order in enumerate(interleaved_schedule([s.name for s in strategies], rounds)):
        for name in order:
            for part, state in zip((model, optimizer, scheduler, scaler), saved):
                part.load_state_dict(copy.deepcopy(state))  # a copy: AdamW updates its state in place
            helpers.set_seed(settings.seed + r)  # the same dropout for every strategy in a round
            batches = plans[name]["batches"][r]
            seconds = train_slice(batches)
            timing = timings[name]
            timing["round_steps"].append(len(batches))
            timing["round_seconds"].append(seconds)
            timing["round_epoch_seconds"].append(seconds * plans[name]["steps"] / len(batches))
        if verbose:
            print(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{name} {timings[name]['round_seconds'][-1]:.2f} s" for name in order), flush=True)
    return timings  # the model and its saved state go with this frame; run_strategy frees them


def add_round_speedups(strategies: list[dict], timings: dict[str, dict], base_name: str,
                       epochs: int = 1) -> None:
    """Each strategy's speed-up against the baseline in each round (the baseline's estimated
    epoch time / its own), and over the rounds: train_speedup (the median), train_speedup_spread
    ([smallest, largest]), train_seconds_interleaved (the median epoch estimate x epochs, to set
    beside train_seconds)."""
    base = timings[base_name]["round_epoch_seconds"]
    for s in strategies:
        timing = timings[s["name"]]
        speedups = [b / own for b, own in zip(base, timing["round_epoch_seconds"])]
        s.update(timing, round_speedups=speedups, train_speedup=float(np.median(speedups)),
                 train_speedup_spread=[min(speedups), max(speedups)],
                 train_seconds_interleaved=epochs * float(np.median(timing["round_epoch_seconds"])))


def add_ratios(strategies: list[dict]) -> str:
    """Each strategy's times, tokens and memory as a ratio to the baseline's (1.0 for it): fixed
    padding when it ran, else the first strategy. Returns the baseline's name."""
    base = next((s for s in strategies if s["name"] == "fixed"), strategies[0])
    keys = ["train_seconds", "eval_seconds", "processed_tokens", "eval_processed_tokens", "peak_mem_mb"]
    if base.get("cuda_peak_mem_mb"):
        keys.append("cuda_peak_mem_mb")
    for s in strategies:
        s["ratios"] = {k: s[k] / base[k] if base[k] else None for k in keys}
    return base["name"]


# ----------------------------------------------------------------------------------------------
# Metadata and reports.
# ----------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    import transformers

    try:
        cores_available = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_available = os.cpu_count()
    info = dict(
        cpu=cpu_model(), cores=os.cpu_count(), cores_available=cores_available,
        torch_threads=torch.get_num_threads(),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        python=platform.python_version(), platform=platform.platform(),
        torch=torch.__version__, transformers=transformers.__version__,
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        cuda=torch.version.cuda if device.type == "cuda" else None,
    )
    return info


def process_counters() -> dict:
    """Where time goes, so far: this process's CPU seconds, its page faults (memory it had to get
    from the kernel again) and the machine's steal time (CPU time a shared host gave to other
    guests; Linux only, else None). Wall time against CPU seconds and steal tells a process doing
    more work from a process kept waiting."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()  # cpu user nice ... steal
        steal = int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        steal = None
    return dict(wall_seconds=time.perf_counter(), cpu_seconds=usage.ru_utime + usage.ru_stime,
                page_faults=usage.ru_minflt, steal_seconds=steal)


def counters_since(start: dict) -> dict:
    now = process_counters()
    return {key: None if value is None or now[key] is None else now[key] - value for key, value in start.items()}


def describe_source(source: str) -> str:
    """A data source or model as it should appear in a report: a local path by its name only."""
    return f"{Path(source).name} (local)" if os.sep in source or os.path.exists(source) else source


def model_info(settings) -> dict:
    config = models.model_config(settings)
    return dict(name=describe_source(settings.model_name), model_type=config.model_type,
                layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                vocab_size=config.vocab_size)


def command_line(argv) -> str:
    """The command as run, with absolute paths cut to their last part (they only mean something
    on the machine that ran it)."""
    parts = [Path(a).name if os.path.isabs(a) else a for a in map(str, argv)]
    return " ".join(["python", "benchmarks/compare_strategies.py", *parts])


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def markdown_report(results: dict) -> str:
    meta, strategies = results["metadata"], results["strategies"]
    machine, setup = meta["machine"], meta["setup"]
    base = next(s for s in strategies if s["ratios"]["train_seconds"] == 1)
    base_word = "fixed" if base["name"] == "fixed" else base["name"]
    loop = setup.get("loop", {})
    if machine["device"] == "cuda":
        where = f"{machine['device_name']} (CUDA {machine['cuda']}), host CPU {machine['cpu']}"
    else:
        where = f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, no GPU"
    lines = [
        f"Machine: {where}; torch {machine['torch']}, transformers {machine['transformers']}; {meta['date']}.",
        f"Data: {meta['data']['source']}, {setup['train_size']:,} training and {setup['test_size']:,} "
        f"test reviews (balanced subsets, seed {setup['seed']}). Model: {meta['model']['name']} "
        f"({meta['model']['layers']} layers, hidden {meta['model']['hidden_size']}). max_len "
        f"{setup['max_len']}, batch size {setup['batch_size']}, {setup['epochs']} epoch(s), token budget "
        f"{setup['max_tokens']:,}, mixed precision: {setup['amp_dtype'] or 'off'}.",
        f"Loop, the same for every strategy: attention backends {loop.get('attention_backends')}, "
        f"widths rounded up to a multiple of {loop.get('pad_to_multiple_of') or '1 (not rounded)'}, "
        f"torch.compile {'on (dynamic shapes)' if loop.get('compile') else 'off'}, "
        f"{setup['warmup_steps']} warm-up steps before the first timing.",
        "",
        f"| Strategy | Train steps | Sequences per step (mean / max) | Widths | Tokens processed (train) "
        f"| Padding efficiency | Train time | × {base_word} | Eval time | × {base_word} | Peak memory | Accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mem_key = "cuda_peak_mem_mb" if machine["device"] == "cuda" else "peak_mem_mb"
    for s in strategies:
        r = s["ratios"]
        lines.append(
            f"| {s['label']} | {s['train_steps']:,} "
            f"| {s.get('sequences_per_step_mean', float('nan')):.1f} / {s.get('sequences_per_step_max', '?')} "
            f"| {s.get('distinct_widths', '?')} | {s['processed_tokens']:,} | {s['efficiency']:.1%} "
            f"| {fmt_seconds(s['train_seconds'])} | {r['train_seconds']:.2f} "
            f"| {fmt_seconds(s['eval_seconds'])} | {r['eval_seconds']:.2f} "
            f"| {s[mem_key]:,.0f} MiB | {s['accuracy']:.3f} |")
    real = {s["real_tokens"] for s in strategies}
    tokens_note = (f"Every strategy trains on the same {next(iter(real)):,} real tokens"
                   if len(real) == 1 else "Real training tokens differ between strategies")
    memory_note = ("the CUDA allocator's peak" if mem_key == "cuda_peak_mem_mb" else
                   "the process's peak resident memory (model, data and Python included)")
    lines += ["", f"{tokens_note}; 'tokens processed' also counts the padding. Peak memory: "
                  f"{memory_note} during that strategy's training and evaluation."]
    budget = [s for s in strategies if s["name"] == "token_budget" and s["train_steps"] != base["train_steps"]]
    if budget:
        lines.append(f"The token budget changes the number of steps: {budget[0]['train_steps']:,} "
                     f"instead of {base['train_steps']:,}, as each batch holds as many reviews as fit in "
                     f"{setup['max_tokens']:,} tokens.")
    lines.append("Widths: the number of distinct batch widths in one training epoch (each new "
                 "shape can cost a one-off set-up on a GPU).")
    if base["name"] != "fixed":
        lines.append(f"Fixed padding did not run: ratios are to {base['label']}.")
    lines += timing_report(results, base)
    lines += ["", "How each strategy batches:", "",
              "| Strategy | Training batches | Evaluation batches |", "|---|---|---|"]
    lines += [f"| {s['label']} | {s['train_batching']} | {s['eval_batching']} |" for s in strategies]
    if results.get("construction"):
        lines += ["", "Building one epoch of smart batches (synthetic IMDB-like lengths, batch size "
                  f"{setup['batch_size']}): helpers.smart_batch_indices next to the recipe's list "
                  "deletion.", "",
                  "| Sequences | Ours | Recipe | Recipe / ours | Identical batches |",
                  "|---:|---:|---:|---:|:---:|"]
        for row in results["construction"]:
            if row["recipe_seconds"] is None:
                recipe, ratio, same = "not run", "", ""
            else:
                recipe = f"{row['recipe_seconds']:.3f} s"
                ratio = f"{row['recipe_seconds'] / row['smart_seconds']:.1f}"
                same = "yes" if row["identical"] else "no"
            lines.append(f"| {row['n']:,} | {row['smart_seconds']:.3f} s | {recipe} | {ratio} | {same} |")
    return "\n".join(lines) + "\n"


def fmt_speedup(s: dict) -> str:
    """The interleaved speed-up as "1.52x (1.41-1.63)": median over rounds (smallest-largest)."""
    low, high = s["train_speedup_spread"]
    return f"{s['train_speedup']:.2f}x ({low:.2f}-{high:.2f})"


def timing_report(results: dict, base: dict) -> list[str]:
    """The step-cost curve and, per strategy, the predicted train time next to the measured ones
    (full epoch, interleaved rounds); nothing for a record made before these existed."""
    strategies, setup = results["strategies"], results["metadata"]["setup"]
    curve = results.get("step_costs")
    predicted = all(s.get("predicted_train_seconds") for s in strategies)
    rounds = all(s.get("train_speedup_spread") for s in strategies)
    lines = []
    if curve:
        lines += ["", f"Step-cost curve, measured first on a throwaway model (batch size "
                      f"{curve['batch_size']}, every position a real token, median of {curve['repeats']} "
                      "after a warm-up step): " + step_cost.read_curve(curve), "",
                  "| Width | Train step | Train tokens/s | Eval step | Eval tokens/s |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {w} | {ts:.3f} s | {tr:,.0f} | {es:.3f} s | {er:,.0f} |" for w, ts, tr, es, er in zip(
            curve["widths"], curve["train_seconds"], curve["train_tokens_per_second"],
            curve["eval_seconds"], curve["eval_tokens_per_second"])]
    if not (predicted or rounds):
        return lines
    base_word = "fixed" if base["name"] == "fixed" else base["name"]
    lines += ["", f"| Strategy | Train time, predicted | measured (full epoch) | measured / predicted "
                  f"| interleaved estimate | Speed-up over {base_word}: predicted | full epoch "
                  "| interleaved, median (min-max) | Eval time, predicted / measured |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in strategies:
        cells = ["–"] * 8
        if predicted:
            cells[0] = fmt_seconds(s["predicted_train_seconds"])
            cells[2] = f"{s['train_seconds'] / s['predicted_train_seconds']:.2f}"
            cells[4] = f"{base['predicted_train_seconds'] / s['predicted_train_seconds']:.2f}x"
            if s.get("predicted_eval_seconds"):
                cells[7] = f"{fmt_seconds(s['predicted_eval_seconds'])} / {fmt_seconds(s['eval_seconds'])}"
        cells[1] = fmt_seconds(s["train_seconds"])
        cells[5] = f"{1 / s['ratios']['train_seconds']:.2f}x"
        if rounds:
            cells[3] = fmt_seconds(s["train_seconds_interleaved"])
            cells[6] = fmt_speedup(s)
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    if predicted:
        lines += ["", "Predicted: each batch's step time read off the curve at its width (linear "
                      "between measured widths), times its rows / the batch size, summed over the "
                      "epoch's batches, known before the epoch runs."]
    if rounds:
        lines += [f"Interleaved: {setup.get('rounds')} rounds; in each, {setup.get('round_steps')} "
                  "training steps of every strategy (a sample of its epoch's batches across their "
                  "sizes), each from the same saved model and optimizer state, the order rotated "
                  "every round. A round estimates an epoch as the sample's time x the epoch's steps / "
                  "the sample's; the speed-up is the median over rounds, in brackets the smallest "
                  f"and largest. Full epoch: one strategy after another, {base_word}'s time / its own."]
    return lines


def plot_results(results: dict, title: str | None = None):
    """Training/evaluation time and tokens per strategy, side by side; returns the figure. With
    predictions, the predicted training time is a bar of its own; with interleaved rounds, each
    strategy's label is its speed-up over them (median, smallest-largest)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    strategies = results["strategies"]
    epochs = results["metadata"]["setup"]["epochs"]
    names = [s["label"] for s in strategies]
    fig, (ax_time, ax_tokens) = plt.subplots(1, 2, figsize=(12, 0.7 * len(strategies) + 2.5), sharey=True)
    train = f"train ({epochs} epoch{'s' if epochs > 1 else ''})"
    phases = [(train, "train_seconds"), ("evaluate", "eval_seconds")]
    if all(s.get("predicted_train_seconds") for s in strategies):
        phases.insert(1, ("train, predicted from step costs", "predicted_train_seconds"))
    times = dict(strategy=names * len(phases), phase=[p for p, _ in phases for _ in names],
                 seconds=[s[key] for _, key in phases for s in strategies])
    sns.barplot(times, x="seconds", y="strategy", hue="phase", errorbar=None, ax=ax_time)
    if all(s.get("train_speedup_spread") for s in strategies):
        labels = [f" {fmt_speedup(s)}" for s in strategies]
        ax_time.set_title("Time (label: speed-up, interleaved rounds:\nmedian (smallest-largest))")
    else:
        labels = [f" {s['ratios']['train_seconds']:.2f}x" for s in strategies]
        ax_time.set_title("Time (label: train time / fixed padding's)")
    ax_time.bar_label(ax_time.containers[0], fontsize=8, labels=labels)

    most = max(s["processed_tokens"] for s in strategies)
    scale, unit = (1e6, "million") if most >= 1e6 else (1e3, "thousand")
    for key, color, label in (("processed_tokens", "lightgray", "processed (padding included)"),
                              ("real_tokens", "tab:green", "real tokens")):  # real drawn over processed
        sns.barplot(x=[s[key] / scale for s in strategies], y=names, color=color, label=label,
                    errorbar=None, ax=ax_tokens)
    ax_tokens.bar_label(ax_tokens.containers[0], labels=[f" {s['efficiency']:.0%}" for s in strategies],
                        fontsize=8)
    ax_tokens.set(xlabel=f"{unit} tokens (training)", title="Tokens (label: padding efficiency)")
    for ax in (ax_time, ax_tokens):
        ax.set_ylabel(None)
        ax.margins(x=0.4 if ax is ax_time else 0.15)  # room for the labels at the ends of the bars
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3 if ax is ax_time else 2,
                  frameon=False, fontsize=8)
    meta = results["metadata"]
    fig.suptitle(title or f"{meta['model']['name']} on {meta['data']['source']}, "
                 f"{meta['machine']['device_name']}", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------

ALL = "all"  # --train-size all: the whole split (None would mean "not given")


def size_arg(text: str) -> int | str:
    if text.lower() in ("all", "none"):
        return ALL
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1 or 'all'")
    return size


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny profile: synthetic data, tiny model, small subsets (seconds)")
    parser.add_argument("--data", help="aclImdb folder or .tar.gz, or a helpers data source "
                                       "(default: the profile's, or $SMART_BATCHING_DATA)")
    parser.add_argument("--model", help="hub name or local folder (default: the profile's); "
                        f"'{models.RANDOM_BERT_BASE}': bert-base's shape, random weights (GPU timings)")
    parser.add_argument("--tokenizer", help="tokenizer name or folder, when not the model's own "
                        f"(needed with {models.RANDOM_BERT_BASE})")
    parser.add_argument("--train-size", type=size_arg, help="training subset ('all' for 25,000; "
                        f"default {QUICK_SIZES['train_size']} with --quick, else "
                        "the full profile's comparison_size, 2,000)")
    parser.add_argument("--test-size", type=size_arg, help="test subset (defaults as --train-size)")
    parser.add_argument("--max-len", type=int, help="default 400 (128 with --quick)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, help="token budget of token_budget (default "
                        "helpers.token_budget: batch_size x the mean training length; the recorded "
                        "run of 2026-11-24 used batch_size x max_len)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("on", "off"), default="on",
                        help="CUDA only: autocast (bf16 where supported, else fp16)")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: "
                             f"{','.join(DEFAULT_STRATEGIES)}); ratios are to fixed if it runs, "
                             "else to the first")
    parser.add_argument("--pad-to-multiple-of", type=int, help="loop setting for every strategy: "
                        "round batch widths up to a multiple of this")
    parser.add_argument("--compile", action="store_true", help="loop setting for every strategy: "
                        "train through torch.compile(dynamic=True), compile time included")
    parser.add_argument("--construction-sizes", help="sequence counts for the batch-construction "
                        "timing (default 25000,1000000; 25000,100000 with --quick; 'none' skips it)")
    parser.add_argument("--max-recipe-n", type=int, default=1_000_000,
                        help="time the recipe's list deletion only up to this many sequences")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--curve-widths", default="auto", help="batch widths of the step-cost curve "
                        "measured first, comma-separated ('auto': 5 from max_len / 8 to max_len; "
                        "'none' skips it, and the predictions)")
    parser.add_argument("--curve-repeats", type=int, help="timed repeats per width, the median "
                        "kept (default 3; 1 with --quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds for the speed-ups (default 5; "
                        "3 with --quick; 0: none, speed-ups from the full epochs only)")
    parser.add_argument("--round-steps", type=int, help="training steps of each strategy in each "
                        "round (default 4; 2 with --quick)")
    parser.add_argument("--out", default=str(BENCHMARKS.parent / "outputs" / "benchmark"))
    parser.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    args = parser.parse_args(argv)
    args.strategies = list(dict.fromkeys(s for s in args.strategies.split(",") if s))
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown or not args.strategies:
        parser.error(f"unknown strategies {sorted(unknown)}: choose from {', '.join(STRATEGIES)}")
    quick = dict(rounds=3, round_steps=2, curve_repeats=1)
    normal = dict(rounds=5, round_steps=4, curve_repeats=3)
    for key in quick:
        if getattr(args, key) is None:
            setattr(args, key, (quick if args.quick else normal)[key])
    if args.rounds < 0 or args.round_steps < 1 or args.curve_repeats < 1:
        parser.error("--rounds must be >= 0, --round-steps and --curve-repeats >= 1")
    text = args.curve_widths.lower()
    try:
        args.curve_widths = (None if text == "none" else "auto" if text == "auto"
                             else sorted({int(w) for w in text.split(",") if w}))
    except ValueError:
        parser.error(f"--curve-widths {args.curve_widths!r}: expected 'auto', 'none' or whole numbers")
    if isinstance(args.curve_widths, list) and (len(args.curve_widths) < 2 or args.curve_widths[0] < 1):
        parser.error("--curve-widths needs at least two widths >= 1")
    return args


def make_settings(args):
    """The profile's settings with the command line on top (the environment in between)."""
    overrides = dict(batch_size=args.batch_size, epochs=args.epochs,
                     pad_to_multiple_of=args.pad_to_multiple_of, compile=args.compile)
    for key, value in (("data_source", args.data), ("model_name", args.model),
                       ("tokenizer_name", args.tokenizer), ("max_len", args.max_len),
                       ("train_size", args.train_size), ("test_size", args.test_size)):
        if value is not None:
            overrides[key] = None if value == ALL else value
    if args.quick:
        for key, value in QUICK_SIZES.items():
            overrides.setdefault(key, value)
        return helpers.get_settings("tiny", **overrides)
    settings = helpers.get_settings("full", **overrides)
    # Sizes not given here: the profile's, as notebooks 05-07 use them (settings.comparison_sizes:
    # 2,000 of each split in the full profile, $SMART_BATCHING_COMPARISON_SIZE to change it).
    for key, size in zip(("train_size", "test_size"), settings.comparison_sizes()):
        if key not in overrides:
            setattr(settings, key, size)
    return settings


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return helpers.get_device(verbose=False)
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    return torch.device(choice)


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = make_settings(args)
    device = pick_device(args.device)
    amp = args.amp == "on" and device.type == "cuda"
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    if args.max_tokens is not None and args.max_tokens < settings.max_len:
        raise SystemExit(f"--max-tokens {args.max_tokens} is below max_len {settings.max_len}: the longest "
                         "reviews would not fit in any batch")
    verbose = not args.quiet
    # Five model loads would print five identical load reports ("classifier ... newly initialized").
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"Comparing {len(args.strategies)} batching strategies on {device.type}"
          f" ({'quick, tiny profile' if args.quick else 'real mode'}):")
    print(settings.describe())

    started = time.perf_counter()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    machine = machine_info(device)  # now: its load average is the one the run started under
    start = time.perf_counter()
    data = helpers.prepare_data(settings)  # settings' train_size / test_size: the comparison sizes
    train, test, pad_id = data.train, data.test, data.pad_id
    print(f"  loaded and tokenized {len(train):,} + {len(test):,} reviews in "
          f"{time.perf_counter() - start:.1f} s")
    # The budget: given, or batch_size x the training reviews' mean length (helpers.token_budget).
    max_tokens = args.max_tokens or helpers.token_budget(train.lengths, settings.batch_size)
    print(f"Token budget of token_budget: {max_tokens:,} tokens"
          + ("" if args.max_tokens else f" (batch size {settings.batch_size} x the mean length)"))

    print(f"Warm-up: {args.warmup_steps} training steps on a throwaway model")
    warm_up_batches, _ = build_batches(STRATEGIES["fixed"], train, helpers.fixed_batch_indices(
        len(train), settings.batch_size, settings.seed)[:max(args.warmup_steps, 0)], pad_id,
        settings.max_len, settings.pad_to_multiple_of)
    helpers.warm_up(settings, warm_up_batches, device, args.warmup_steps, amp)

    curve = None
    if args.curve_widths:
        widths = step_cost.default_widths(settings.max_len) if args.curve_widths == "auto" else args.curve_widths
        if widths[-1] > settings.max_len:
            raise SystemExit(f"--curve-widths up to {widths[-1]}: above max_len {settings.max_len}")
        print(f"\nStep-cost curve: batch size {settings.batch_size}, widths {widths}, median of "
              f"{args.curve_repeats} after a warm-up step", flush=True)
        curve = step_cost.measure_for_settings(settings, device, widths, args.curve_repeats, amp=amp,
                                               verbose=verbose)
        for name, seconds in (("train", curve["train_seconds"]), ("eval", curve["eval_seconds"])):
            print(f"  {name}: " + ", ".join(f"{w}: {s:.3f} s" for w, s in zip(widths, seconds)))
        print("  " + step_cost.read_curve(curve))

    chosen = [STRATEGIES[name] for name in args.strategies]
    timings = None
    if args.rounds:
        print(f"\nInterleaved rounds: {args.rounds} x {args.round_steps} training steps of each "
              "strategy, each from the same model state, in rotating order", flush=True)
        timings = run_rounds(chosen, settings, train, pad_id, max_tokens, device, amp, args.rounds,
                             args.round_steps, verbose)

    strategies = []
    for number, name in enumerate(args.strategies, start=1):
        strategy = STRATEGIES[name]
        print(f"\n[{number}/{len(args.strategies)}] {strategy.label}: train on "
              f"{strategy.train_batching}; evaluate on {strategy.eval_batching}", flush=True)
        result = run_strategy(strategy, settings, train, test, pad_id, max_tokens, device, amp, verbose,
                              curve)
        strategies.append(result)
        predicted = result["predicted_train_seconds"]
        print(f"  => {result['train_steps']:,} steps, {result['processed_tokens']:,} tokens processed "
              f"({result['efficiency']:.1%} real), train {result['train_seconds']:.2f} s"
              + (f" (predicted {predicted:.2f} s)" if predicted is not None else "") + ", "
              f"eval {result['eval_seconds']:.2f} s, accuracy {result['accuracy']:.3f}, "
              f"peak memory {result['peak_mem_mb']:,.0f} MiB"
              + (f" (CUDA {result['cuda_peak_mem_mb']:,.0f} MiB)" if result["cuda_peak_mem_mb"] else ""),
              flush=True)
        c = result["train_counters"]
        print(f"     training used {c['cpu_seconds']:,.1f} CPU s in {c['wall_seconds']:,.1f} s, "
              f"{c['page_faults'] / max(result['train_steps'], 1):,.0f} page faults a step"
              + (f", steal {c['steal_seconds']:.1f} s" if c["steal_seconds"] is not None else ""), flush=True)
    base_name = add_ratios(strategies)
    if timings:
        add_round_speedups(strategies, timings, base_name, settings.epochs)

    sizes_text = args.construction_sizes or ("25000,100000" if args.quick else "25000,1000000")
    sizes = [] if sizes_text.lower() == "none" else [int(s) for s in sizes_text.split(",") if s]
    construction = []
    if sizes:
        print("\nBuilding one epoch of smart batches: ours next to the recipe's list deletion")
        construction = construction_table(sizes, settings.batch_size, settings.max_len,
                                          args.max_recipe_n, repeats=1 if args.quick else 3,
                                          seed=settings.seed)

    setup = dict(train_size=len(train.input_ids), test_size=len(test.input_ids),
                 max_len=settings.max_len, batch_size=settings.batch_size, epochs=settings.epochs,
                 max_tokens=max_tokens, learning_rate=settings.learning_rate, seed=settings.seed,
                 amp=amp, amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
                 warmup_steps=args.warmup_steps, profile=settings.profile, quick=args.quick,
                 rounds=args.rounds, round_steps=args.round_steps,
                 curve_widths=curve["widths"] if curve else None,
                 curve_repeats=args.curve_repeats if curve else None,
                 loop=dict(attention_backends=[b.name for b in device_support.ATTENTION_BACKENDS],
                           pad_to_multiple_of=settings.pad_to_multiple_of, compile=settings.compile,
                           fused_adamw=device.type == "cuda"))
    train_lengths = train.lengths
    results = dict(
        metadata=dict(
            date=date,
            command=command_line(argv if argv is not None else sys.argv[1:]),
            machine=machine,
            data=dict(source=describe_source(settings.data_source),
                      train_mean_tokens=float(train_lengths.mean()),
                      train_truncated_share=float((train_lengths == settings.max_len).mean())),
            model=model_info(settings), setup=setup,
            total_seconds=time.perf_counter() - started),
        strategies=strategies,
        construction=construction,
        step_costs=curve,
    )
    if curve:
        import matplotlib.pyplot as plt

        fig = step_cost.plot_step_costs(curve, f"Step costs, {describe_source(settings.model_name)} on "
                                               f"{machine['device_name']}, batch size {settings.batch_size}")
        fig.savefig(out / "step_costs.png", dpi=150, bbox_inches="tight")
        plt.close(fig)
    write_results(out, results, markdown_report(results), plot_results(results),
                  time.perf_counter() - started)
    return results


def write_results(out: Path, results: dict, report: str, fig, seconds: float) -> None:
    """results.json, results.md (the report) and results.png (the figure) in `out`, and say so."""
    import matplotlib.pyplot as plt

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report)
    fig.savefig(out / "results.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    print("\n" + report)
    print(f"Wrote results.json, results.md and results.png to {out} ({seconds:.0f} s in all)")


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # a script writes the chart to a file; no window
    main()
