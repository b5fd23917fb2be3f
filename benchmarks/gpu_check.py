"""The GPU check: does smart batching save time on this GPU, and if not, why? One command.

    python -m benchmarks.gpu_check --data aclImdb_v1.tar.gz --tokenizer path/to/bert-base-uncased

needs the IMDB archive (or an aclImdb folder) and the bert-base-uncased vocabulary; the model is
bert-base's shape with random weights (`random-bert-base`, timed as pretrained weights would be).
Parts 2 and 3 each have a time limit:

1. Per-shape set-up cost: a training and an inference step at widths never seen before, then at
   the same widths again, for three attention set-ups: PyTorch's choice (cuDNN allowed), the
   series' (device_support.ATTENTION_BACKENDS) and the math backend alone.
2. The benchmark (compare_strategies: the step-cost curve, then each strategy's full epoch in a
   fresh process) with GPU_STRATEGIES on the training reviews, evaluated on CHECK_SETTINGS' test reviews.
3. With --compile: smart batching through torch.compile(dynamic=True), compile time included.

The model and sizes of CHECK_SETTINGS apply where neither an option nor SMART_BATCHING_* sets
them. Writes results.json, results.md and results.png to --out (the benchmark's own under
benchmark/ and compile/). `--quick`: all of it on the tiny profile, a check of the script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend

import helpers
from benchmarks import report, step_cost
from benchmarks.measuring import command_line, machine_info, model_info
from support import device as device_support, models
from support.arguments import add_settings_options, given_settings, whole_number
from support.environment import environment_overrides

ROOT = Path(__file__).resolve().parents[1]
ATTENTION_SETUPS = {  # name -> what device_support.ATTENTION_BACKENDS is set to
    "PyTorch's choice (cuDNN allowed)": None,
    "this series (flash, efficient, math)": device_support.ATTENTION_BACKENDS,
    "math only": (SDPBackend.MATH,),
}
GPU_STRATEGIES = "fixed,smart,smart_x8,token_budget"
CHECK_SETTINGS = dict(model_name=models.RANDOM_BERT_BASE, train_size=None, test_size=5000)
# The targets the GPU check was set (bert-base shape, bf16, one full epoch).
TARGETS = dict(smart_train=1.4, token_budget_train=1.6, smart_eval=1.5, first_over_seen=1.5)


# 1. What a never-seen batch width costs.

def shape_cost(settings, device: torch.device, widths: list[int], amp: bool, pad_id: int) -> dict:
    """Median seconds of a training and an inference step at widths seen for the first time, and
    at the same widths seen before, through the series' own loops."""
    model = helpers.load_model(settings).to(device)
    optimizer, scheduler = helpers.make_optimizer(model, settings, 10 ** 6)
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    batch = lambda width: step_cost.synthetic_batch(  # noqa: E731  (a masked tail, as real batches have)
        width, settings.batch_size, model.config.vocab_size, width, pad_share=0.25, pad_id=pad_id)

    def train_seconds(width):
        return helpers.train_epoch(model, [batch(width)], optimizer, scheduler, device,
                                   amp_dtype=amp_dtype, verbose=False)["seconds"]

    def predict_seconds(width):
        return helpers.predict(model, [batch(width)], device, amp_dtype, verbose=False)["seconds"]

    train_seconds(widths[0] - 1), predict_seconds(widths[0] - 1)  # one-off start-up, not measured
    times = {key: [] for key in ("train_first", "train_seen", "predict_first", "predict_seen")}
    for width in widths:
        times["train_first"].append(train_seconds(width))
        times["train_seen"].append(min(train_seconds(width) for _ in range(2)))
        times["predict_first"].append(predict_seconds(width))
        times["predict_seen"].append(min(predict_seconds(width) for _ in range(2)))
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    r = {key: float(np.median(values)) for key, values in times.items()}
    return dict(r, train_ratio=r["train_first"] / r["train_seen"], predict_ratio=r["predict_first"] / r["predict_seen"],
                widths=widths)


def probe_attention_setups(settings, device, amp: bool, pad_id: int, n_widths: int = 4) -> list[dict]:
    """shape_cost for each attention set-up, each on widths no earlier set-up has used (a plan
    cache is per shape and per process)."""
    rows = []
    original = device_support.ATTENTION_BACKENDS
    try:
        for number, (name, backends) in enumerate(ATTENTION_SETUPS.items()):
            device_support.ATTENTION_BACKENDS = backends
            widths = [101 + 61 * k + 2 * number for k in range(n_widths)]  # up to 290: any BERT
            print(f"  {name}: widths {widths}", flush=True)
            rows.append(dict(setup=name, backends=None if backends is None else [b.name for b in backends],
                             **shape_cost(settings, device, widths, amp, pad_id)))
    finally:
        device_support.ATTENTION_BACKENDS = original
    return rows


# 2 and 3. The strategies on a full epoch, in a subprocess with a time limit.

def run_benchmark(args, settings, out: Path, extra: list[str], timeout: int) -> dict | None:
    """compare_strategies in a subprocess with a time limit: its results, or what went wrong."""
    command = [sys.executable, "-m", "benchmarks.compare_strategies", "--out", str(out),
               "--warmup-steps", "5", "--quiet", *extra]
    if args.quick:
        command += ["--quick", "--train-size", "48", "--test-size", "32", "--max-len", "128"]
    else:
        command += ["--profile", "full", "--data", settings.data_source, "--model", settings.model_name,
                    "--device", "cuda", "--seed", str(settings.seed)]
        command += [f"--{split}-size={size or 'all'}" for split, size in
                    (("train", settings.train_size), ("test", settings.test_size))]
        command += ["--tokenizer", settings.tokenizer_name] if settings.tokenizer_name else []
    print(" ".join(command[1:]), flush=True)
    try:
        completed = subprocess.run(command, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  stopped after its time limit of {timeout} s")
        return dict(error=f"did not finish within {timeout} s")
    if completed.returncode != 0:
        return dict(error=f"exit code {completed.returncode}")
    return json.loads((out / "results.json").read_text())


def target_checks(results: dict) -> list[dict]:
    """The check's targets, each with the measured figure (full epochs) and whether it is met."""
    checks = []
    strategies = {s["name"]: s for s in (results.get("benchmark") or {}).get("strategies", [])}
    fixed = strategies.get("fixed")
    for name, key, what, target in (("smart", "train_seconds", "smart batching trains", "smart_train"),
                                    ("token_budget", "train_seconds", "the token budget trains", "token_budget_train"),
                                    ("smart", "eval_seconds", "sorted evaluation runs", "smart_eval")):
        if fixed and name in strategies:
            speedup = fixed[key] / strategies[name][key]
            checks.append(dict(check=f"{what} >= {TARGETS[target]}x faster than fixed padding",
                               measured=f"{speedup:.2f}x (full epochs)", met=speedup >= TARGETS[target]))
    ours = next((p for p in results.get("probe", []) if p["setup"].startswith("this series")), None)
    if ours:
        checks.append(dict(check=f"a step at a never-seen width costs <= {TARGETS['first_over_seen']}x "
                                 "one at a seen width (training)",
                           measured=f"{ours['train_ratio']:.2f}x",
                           met=ours["train_ratio"] <= TARGETS["first_over_seen"]))
    return checks


def probe_lines(results: dict) -> list[str]:
    """Part 1: the per-shape set-up cost, as a table."""
    return ["", "## 1. What a never-seen batch width costs", "",
            f"Median of {len(results['probe'][0]['widths'])} widths, batch size "
            f"{results['metadata']['batch_size']}: a step at a width seen for the first time, then "
            "at the same width again.", "",
            "| Attention set-up | train, first | train, seen | first / seen | predict, first "
            "| predict, seen | first / seen |", "|---|---:|---:|---:|---:|---:|---:|"] + [
        f"| {p['setup']} | {p['train_first'] * 1e3:.1f} ms | {p['train_seen'] * 1e3:.1f} ms "
        f"| {p['train_ratio']:.2f}x | {p['predict_first'] * 1e3:.1f} ms "
        f"| {p['predict_seen'] * 1e3:.1f} ms | {p['predict_ratio']:.2f}x |" for p in results["probe"]]


def benchmark_lines(part: dict | None, title: str) -> list[str]:
    """Part 2 or 3: the benchmark's own tables (or why there are none)."""
    if part is None:
        return []
    if "error" in part:
        return ["", f"## {title}", "", f"Did not complete: {part['error']}."]
    return (["", f"## {title}", ""] + report.strategy_table(part) + report.curve_lines(part.get("step_costs"))
            + report.timing_lines(part)) + [
        "", "Accuracy after one epoch from random weights says nothing about the strategies."]


def markdown(results: dict) -> str:
    meta = results["metadata"]
    machine, model = meta["machine"], meta["model"]
    lines = [f"# GPU check, {meta['date']}", "",
             f"Device: {machine['device_name']} ({machine['device']}); torch {machine['torch']}, "
             f"transformers {machine['transformers']}; model {model['name']} ({model['layers']} layers, "
             f"hidden {model['hidden_size']}); mixed precision {meta['amp_dtype'] or 'off'}.", ""]
    if meta["quick"]:
        lines += ["**Quick mode (tiny profile): a check that the script runs, not a measurement.**", ""]
    lines += probe_lines(results) + benchmark_lines(results.get("benchmark"), "2. One epoch per strategy")
    lines += benchmark_lines(results.get("compile"), "3. With torch.compile")
    checks = results.get("targets", [])
    if checks:
        lines += ["", "## Targets", "", "| Target | measured | met |", "|---|---:|:---:|"]
        lines += [f"| {c['check']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in checks]
    return "\n".join(lines) + "\n"


def plot(results: dict):
    """Part 1 as a chart (the curve and the strategies have their own, under benchmark/)."""
    import pandas as pd

    probe = results["probe"]
    ms = pd.DataFrame({"width seen first time": [p["train_first"] * 1e3 for p in probe],
                       "width seen before": [p["train_seen"] * 1e3 for p in probe]}, index=[p["setup"] for p in probe])
    ax = ms.plot.barh(figsize=(8, 3), xlabel="ms per training step", ylabel="",
                      title=f"Per-shape set-up cost, {results['metadata']['machine']['device_name']}")
    ax.invert_yaxis()
    ax.figure.tight_layout()
    return ax.figure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_options(parser, "data_source", "model_name", "tokenizer_name", "train_size", "test_size", "seed")
    parser.add_argument("--strategies", default=GPU_STRATEGIES)
    parser.add_argument("--max-tokens", type=whole_number(), default=16 * 400,
                        help="the token budget's budget (default 16 x 400: fewer, fuller steps, what a "
                             "GPU wants; the CPU benchmark's default, 16 x the mean length, keeps batch "
                             "16's number of steps instead)")
    parser.add_argument("--compile", action="store_true", help="also part 3: smart batching through "
                                                               "torch.compile(dynamic=True)")
    parser.add_argument("--benchmark-timeout", type=whole_number(), default=420, help="seconds for part 2")
    parser.add_argument("--compile-timeout", type=whole_number(), default=300, help="seconds for part 3")
    parser.add_argument("--quick", action="store_true", help="tiny profile, seconds, any device")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"))
    args = parser.parse_args(argv)
    if not args.quick:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: this check is for a GPU (--quick runs it small anywhere)")
        settings = check_settings(args)
        if settings.data_source == "auto" or (settings.model_name == models.RANDOM_BERT_BASE
                                              and not settings.tokenizer_name):
            parser.error("give --data (the IMDB archive) and --tokenizer (bert-base-uncased vocabulary)")
    return args


def check_settings(args):
    """The tiny profile with --quick; else the full one, CHECK_SETTINGS where no option or variable says."""
    if args.quick:
        return helpers.get_settings("tiny")
    given = set(vars(args)) | set(environment_overrides())
    args.profile = "full"
    return helpers.get_settings(**given_settings(args), **{k: v for k, v in CHECK_SETTINGS.items() if k not in given})


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = check_settings(args)
    device = helpers.get_device(verbose=False) if args.quick else torch.device("cuda")
    amp = device.type == "cuda"
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    pad_id = helpers.load_tokenizer(settings).pad_token_id
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    results = dict(metadata=dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=command_line("gpu_check", sys.argv[1:] if argv is None else argv),
        machine=machine_info(device), model=model_info(settings), quick=args.quick,
        batch_size=settings.batch_size, amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype else None))
    print("1. Per-shape set-up cost, per attention set-up", flush=True)
    results["probe"] = probe_attention_setups(settings, device, amp, pad_id, 2 if args.quick else 4)
    print("2. One epoch per strategy, each in a fresh process", flush=True)
    budget = ["--max-tokens", str(args.max_tokens)] if not args.quick else []
    results["benchmark"] = run_benchmark(args, settings, out / "benchmark",
                                         ["--strategies", args.strategies, *budget], args.benchmark_timeout)
    if args.compile:
        print("3. Smart batching through torch.compile(dynamic=True)", flush=True)
        results["compile"] = run_benchmark(args, settings, out / "compile", ["--strategies", "smart", "--compile"],
                                           args.compile_timeout)
    results["targets"] = target_checks(results)
    results["metadata"]["total_seconds"] = time.perf_counter() - started
    report.write_results(out, results, markdown(results), plot(results), results["metadata"]["total_seconds"])
    return results


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    main()
