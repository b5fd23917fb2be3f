"""The GPU check: does smart batching save time on this GPU, and if not, why? One command.

    python benchmarks/gpu_check.py --data aclImdb_v1.tar.gz --tokenizer path/to/bert-base-uncased

needs only the IMDB archive (or an aclImdb folder) and a folder with the bert-base-uncased
vocabulary; the model is bert-base's shape with random weights (`random-bert-base`): the timings
of pretrained weights would be the same. About 7 minutes on an H100 (estimated; see the README
for what has been measured). It runs, each part with its own time limit:

0. The step-cost curve (step_cost.py): seconds per training and per evaluation step at five
   widths from max_len / 8 to max_len, at the recipe's batch size, median of 3 after a warm-up:
   does time here follow the tokens (smart batching pays) or stay flat (per-step overhead)?
1. Per-shape set-up cost: one training step and one inference step at batch widths never seen
   before, then the same widths again, through helpers.train_epoch / helpers.predict, for three
   attention set-ups: PyTorch's own choice (cuDNN attention allowed), the series' choice
   (device_support.ATTENTION_BACKENDS: flash, memory-efficient, math) and the math backend alone.
2. Host-device synchronisations per training step, counted with CUDA's sync debug mode, with
   the line of code that made each.
3. benchmarks/compare_strategies.py (its own curve, the epoch times it predicts, and speed-ups
   from interleaved rounds) on one full epoch of the 25,000 training reviews with fixed
   padding, smart batching, smart batching with widths rounded up to x8, and the token budget
   (6,400 tokens by default), bf16, each evaluated on the same 5,000 test reviews (sorted where
   the strategy sorts).
4. With --compile: smart batching once more, trained through torch.compile(dynamic=True), its
   compile time counted in the epoch.

Writes results.json, results.md and results.png to --out (the benchmark's own files go under
benchmark/ and compile/). `--quick` runs it all on the tiny profile, on the CPU if there is no
GPU, in a minute: a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))
import helpers  # noqa: E402
import step_cost  # noqa: E402
from support import device as device_support, models  # noqa: E402
from compare_strategies import fmt_speedup, machine_info, model_info, write_results  # noqa: E402

ATTENTION_SETUPS = {  # name -> what device_support.ATTENTION_BACKENDS is set to
    "PyTorch's choice (cuDNN allowed)": None,
    "this series (flash, efficient, math)": device_support.ATTENTION_BACKENDS,
    "math only": (SDPBackend.MATH,),
}
GPU_STRATEGIES = "fixed,smart,smart_bucketed,token_budget"
# Targets from the project's GPU issue (H100/H200, bert-base shape, bf16, one full epoch).
TARGETS = dict(smart_train=1.4, token_budget_train=1.6, smart_eval=1.5, first_over_seen=1.5)


# ----------------------------------------------------------------------------------------------
# 1. What a never-seen batch width costs.
# ----------------------------------------------------------------------------------------------

def probe_batch(width: int, batch_size: int, vocab_size: int, pad_id: int, seed: int) -> dict:
    """A batch of random token ids, `width` wide; its first row is half padding, as in real
    batches, so attention gets a mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch_size, width), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[0, width // 2:], attention_mask[0, width // 2:] = pad_id, 0
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                labels=torch.randint(0, 2, (batch_size,), generator=generator))


def shape_cost(settings, device: torch.device, widths: list[int], amp: bool, pad_id: int) -> dict:
    """Median seconds of a training and an inference step at widths seen for the first time, and
    at the same widths seen before, through the series' own loops."""
    model = helpers.load_model(settings).to(device)
    optimizer, scheduler = helpers.make_optimizer(model, settings, 10 ** 6)
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    batch = lambda width: probe_batch(width, settings.batch_size, model.config.vocab_size, pad_id, width)  # noqa: E731

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
    result = {key: float(np.median(values)) for key, values in times.items()}
    result["train_ratio"] = result["train_first"] / result["train_seen"]
    result["predict_ratio"] = result["predict_first"] / result["predict_seen"]
    result["widths"] = widths
    return result


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


# ----------------------------------------------------------------------------------------------
# 2. Where the loop waits for the GPU.
# ----------------------------------------------------------------------------------------------

def count_syncs(settings, device, amp: bool, pad_id: int, steps: int = 5) -> dict | None:
    """Synchronising CUDA calls during `steps` training steps (varying widths), by source line."""
    if device.type != "cuda":
        return None
    model = helpers.load_model(settings).to(device)
    optimizer, scheduler = helpers.make_optimizer(model, settings, 10 ** 6)
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    batches = [probe_batch(64 + 8 * i, settings.batch_size, model.config.vocab_size, pad_id, i)
               for i in range(steps)]
    helpers.train_epoch(model, batches[:1], optimizer, scheduler, device, amp_dtype=amp_dtype,
                        verbose=False)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            helpers.train_epoch(model, batches, optimizer, scheduler, device, amp_dtype=amp_dtype,
                                verbose=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    where: dict[str, int] = {}
    for warning in caught:
        if "synchroniz" in str(warning.message).lower():
            key = f"{Path(warning.filename).name}:{warning.lineno}"
            where[key] = where.get(key, 0) + 1
    del model, optimizer
    torch.cuda.empty_cache()
    return dict(steps=steps, syncs=sum(where.values()), where=where)


# ----------------------------------------------------------------------------------------------
# 3 and 4. The strategies on a full epoch, in a subprocess with a time limit.
# ----------------------------------------------------------------------------------------------

def run_benchmark(args, out: Path, extra: list[str], timeout: int) -> dict | None:
    command = [sys.executable, str(BENCHMARKS / "compare_strategies.py"), "--out", str(out),
               "--construction-sizes", "none", "--warmup-steps", "5", "--quiet", *extra]
    if args.quick:
        command += ["--quick", "--train-size", "48", "--test-size", "32", "--max-len", "128"]
    else:
        command += ["--data", args.data, "--model", args.model, "--device", "cuda",
                    "--train-size", args.train_size, "--test-size", args.test_size,
                    "--round-steps", "20"]  # GPU steps are short: longer slices, fewer syncs
        if args.tokenizer:
            command += ["--tokenizer", args.tokenizer]
    print(" ".join(command[1:]), flush=True)
    try:
        completed = subprocess.run(command, timeout=timeout, cwd=BENCHMARKS.parent)
    except subprocess.TimeoutExpired:
        print(f"  stopped after its time limit of {timeout} s")
        return dict(error=f"did not finish within {timeout} s")
    if completed.returncode != 0:
        return dict(error=f"exit code {completed.returncode}")
    return json.loads((out / "results.json").read_text())


# ----------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------

def target_checks(results: dict) -> list[dict]:
    """The GPU issue's targets, each with the measured figure and whether it is met."""
    checks = []
    strategies = {s["name"]: s for s in (results.get("benchmark") or {}).get("strategies", [])}
    fixed = strategies.get("fixed")
    for name, key, what, target in (("smart", "train_seconds", "smart batching trains", "smart_train"),
                                    ("token_budget", "train_seconds", "the token budget trains", "token_budget_train"),
                                    ("smart", "eval_seconds", "sorted evaluation runs", "smart_eval")):
        if fixed and name in strategies:
            speedup, how = fixed[key] / strategies[name][key], "full epochs"
            if key == "train_seconds" and strategies[name].get("train_speedup"):
                speedup, how = strategies[name]["train_speedup"], "interleaved rounds, median"
            checks.append(dict(check=f"{what} >= {TARGETS[target]}x faster than fixed padding",
                               measured=f"{speedup:.2f}x ({how})", met=speedup >= TARGETS[target]))
    ours = next((p for p in results.get("probe", []) if p["setup"].startswith("this series")), None)
    if ours:
        checks.append(dict(check=f"a step at a never-seen width costs <= {TARGETS['first_over_seen']}x "
                                 "one at a seen width (training)",
                           measured=f"{ours['train_ratio']:.2f}x",
                           met=ours["train_ratio"] <= TARGETS["first_over_seen"]))
    return checks


def markdown(results: dict) -> str:
    meta = results["metadata"]
    machine = meta["machine"]
    lines = [f"# GPU check, {meta['date']}", "",
             f"Device: {machine['device_name']} ({machine['device']}); torch {machine['torch']}, "
             f"transformers {machine['transformers']}; model {meta['model']['name']} "
             f"({meta['model']['layers']} layers, hidden {meta['model']['hidden_size']}); "
             f"mixed precision {meta['amp_dtype'] or 'off'}.", ""]
    if meta["quick"]:
        lines += ["**Quick mode (tiny profile): a check that the script runs, not a measurement.**", ""]
    curve = results.get("step_costs")
    if curve:
        lines += ["## 0. What a step costs, by batch width", "",
                  f"Batch size {curve['batch_size']}, every position a real token, median of "
                  f"{curve['repeats']} after a warm-up step. " + step_cost.read_curve(curve), "",
                  "| Width | train step | train tokens/s | eval step | eval tokens/s |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {w} | {ts * 1e3:.1f} ms | {tr:,.0f} | {es * 1e3:.1f} ms | {er:,.0f} |"
                  for w, ts, tr, es, er in zip(curve["widths"], curve["train_seconds"],
                                               curve["train_tokens_per_second"], curve["eval_seconds"],
                                               curve["eval_tokens_per_second"])]
        lines.append("")
    lines += ["## 1. What a never-seen batch width costs", "",
              f"Median of {len(results['probe'][0]['widths'])} widths, batch size {meta['batch_size']}: "
              "a step at a width seen for the first time, then at the same width again.", "",
              "| Attention set-up | train, first | train, seen | first / seen | predict, first "
              "| predict, seen | first / seen |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p in results["probe"]:
        lines.append(f"| {p['setup']} | {p['train_first'] * 1e3:.1f} ms | {p['train_seen'] * 1e3:.1f} ms "
                     f"| {p['train_ratio']:.2f}x | {p['predict_first'] * 1e3:.1f} ms "
                     f"| {p['predict_seen'] * 1e3:.1f} ms | {p['predict_ratio']:.2f}x |")
    syncs = results.get("syncs")
    lines += ["", "## 2. Host-device synchronisations in the training loop", ""]
    if syncs is None:
        lines.append("Not measured (no CUDA device).")
    else:
        lines.append(f"{syncs['syncs']} synchronising calls in {syncs['steps']} training steps:")
        lines += [f"- `{where}`: {count}" for where, count in sorted(syncs["where"].items())]
    for key, title in (("benchmark", "3. One epoch per strategy"), ("compile", "4. With torch.compile")):
        part = results.get(key)
        if part is None:
            continue
        lines += ["", f"## {title}", ""]
        if "error" in part:
            lines.append(f"Did not complete: {part['error']}.")
            continue
        lines += ["| Strategy | steps | widths | tokens processed | train | train, predicted "
                  "| speed-up, interleaved | eval | accuracy |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in part["strategies"]:
            predicted = f"{s['predicted_train_seconds']:.1f} s" if s.get("predicted_train_seconds") else "–"
            speedup = fmt_speedup(s) if s.get("train_speedup_spread") else "–"
            lines.append(f"| {s['label']} | {s['train_steps']:,} | {s['distinct_widths']} "
                         f"| {s['processed_tokens']:,} | {s['train_seconds']:.1f} s "
                         f"({s['ratios']['train_seconds']:.2f}) | {predicted} | {speedup} "
                         f"| {s['eval_seconds']:.1f} s ({s['ratios']['eval_seconds']:.2f}) | {s['accuracy']:.3f} |")
        setup = part["metadata"]["setup"]
        lines.append(f"\n{setup['train_size']:,} training and {setup['test_size']:,} test reviews; "
                     "in brackets: the time as a share of the first row's. Train, predicted: from the "
                     "benchmark's own step-cost curve and the epoch's batch widths. Speed-up, "
                     f"interleaved: over the first row, median of {setup.get('rounds')} interleaved "
                     "rounds (smallest-largest). Accuracy after one epoch from random weights says "
                     "nothing about the strategies.")
    checks = results.get("targets", [])
    if checks:
        lines += ["", "## Targets", "", "| Target | measured | met |", "|---|---:|:---:|"]
        lines += [f"| {c['check']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in checks]
    return "\n".join(lines) + "\n"


def plot(results: dict):
    import matplotlib.pyplot as plt

    fig, (ax_curve, ax_probe, ax_time) = plt.subplots(1, 3, figsize=(19, 4.2))
    curve = results.get("step_costs")
    if curve:
        for phase, marker in (("train", "o"), ("eval", "s")):
            ax_curve.plot(curve["widths"], np.array(curve[f"{phase}_seconds"]) * 1e3, marker=marker,
                          label=f"{'training' if phase == 'train' else 'evaluation'} step")
        ax_curve.set(xlabel=f"batch width (tokens; {curve['batch_size']} rows)", ylabel="ms per step",
                     title="What a step costs (flat: overhead-bound)", ylim=(0, None))
        ax_curve.grid(alpha=0.3)
        ax_curve.legend(fontsize=8)
    probe = results["probe"]
    y = np.arange(len(probe))
    ax_probe.barh(y - 0.2, [p["train_first"] * 1e3 for p in probe], 0.4, label="width seen first time")
    ax_probe.barh(y + 0.2, [p["train_seen"] * 1e3 for p in probe], 0.4, label="width seen before")
    ax_probe.set_yticks(y, [p["setup"] for p in probe])
    ax_probe.invert_yaxis()
    ax_probe.set(xlabel="ms per training step", title="Per-shape set-up cost")
    ax_probe.legend(loc="lower right", fontsize=8)
    bench = results.get("benchmark") or {}
    if "strategies" in bench:
        strategies = bench["strategies"]
        y = np.arange(len(strategies))
        bars = [("train (1 epoch)", "train_seconds"), ("evaluate", "eval_seconds")]
        if all(s.get("predicted_train_seconds") for s in strategies):
            bars.insert(1, ("train, predicted from step costs", "predicted_train_seconds"))
        height = 0.8 / len(bars)
        for k, (label, key) in enumerate(bars):
            offset = (k - (len(bars) - 1) / 2) * height
            ax_time.barh(y + offset, [s[key] for s in strategies], height, label=label)
        for i, s in enumerate(strategies):
            ax_time.text(s["train_seconds"], i - (len(bars) - 1) / 2 * height,
                         f" {s['ratios']['train_seconds']:.2f}x", va="center", fontsize=8)
        ax_time.set_yticks(y, [s["label"] for s in strategies])
        ax_time.invert_yaxis()
        ax_time.margins(x=0.15)
        ax_time.set(xlabel="seconds", title="Time per strategy (label: x first row)")
        ax_time.legend(loc="lower right", fontsize=8)
    machine = results["metadata"]["machine"]
    fig.suptitle(f"GPU check on {machine['device_name']} ({results['metadata']['date'][:10]})", fontsize=10)
    fig.tight_layout()
    return fig


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="aclImdb folder or aclImdb_v1.tar.gz")
    parser.add_argument("--tokenizer", help="a folder (or hub name) with the bert-base-uncased vocabulary")
    parser.add_argument("--model", default=models.RANDOM_BERT_BASE)
    parser.add_argument("--train-size", default="all")
    parser.add_argument("--test-size", default="5000")
    parser.add_argument("--strategies", default=GPU_STRATEGIES)
    parser.add_argument("--max-tokens", type=int, default=16 * 400,
                        help="the token budget's budget (default 6,400 = 16 x 400, as in the first GPU "
                             "run: fewer, fuller steps, what a GPU wants; the CPU benchmark's default, "
                             "16 x the mean length, keeps batch 16's number of steps instead)")
    parser.add_argument("--compile", action="store_true", help="also part 4: smart batching through "
                                                               "torch.compile(dynamic=True)")
    parser.add_argument("--benchmark-timeout", type=int, default=420, help="seconds for part 3")
    parser.add_argument("--compile-timeout", type=int, default=300, help="seconds for part 4")
    parser.add_argument("--quick", action="store_true", help="tiny profile, seconds, any device")
    parser.add_argument("--out", default=str(BENCHMARKS.parent / "outputs" / "gpu_check"))
    args = parser.parse_args(argv)
    if not args.quick:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: this check is for a GPU (--quick runs it small anywhere)")
        if not args.data or (args.model == models.RANDOM_BERT_BASE and not args.tokenizer):
            parser.error("give --data (the IMDB archive) and --tokenizer (bert-base-uncased vocabulary)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.quick:
        settings = helpers.get_settings("tiny")
        device = helpers.get_device(verbose=False)
    else:
        settings = helpers.get_settings("full", model_name=args.model, tokenizer_name=args.tokenizer)
        device = torch.device("cuda")
    amp = device.type == "cuda"
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    pad_id = helpers.load_tokenizer(settings).pad_token_id
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    results = dict(metadata=dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command="python benchmarks/gpu_check.py " + " ".join(
            Path(a).name if Path(a).is_absolute() else a for a in (argv if argv is not None else sys.argv[1:])),
        machine=machine_info(device), model=model_info(settings), quick=args.quick,
        batch_size=settings.batch_size, amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype else None))

    print("0. What a step costs, by batch width", flush=True)
    results["step_costs"] = step_cost.measure_for_settings(
        settings, device, step_cost.default_widths(settings.max_len), repeats=1 if args.quick else 3,
        amp=amp)
    print("  " + step_cost.read_curve(results["step_costs"]), flush=True)
    print("1. Per-shape set-up cost, per attention set-up", flush=True)
    results["probe"] = probe_attention_setups(settings, device, amp, pad_id, 2 if args.quick else 4)
    print("2. Synchronisations per training step", flush=True)
    results["syncs"] = count_syncs(settings, device, amp, pad_id)
    print("3. One epoch per strategy", flush=True)
    budget = ["--max-tokens", str(args.max_tokens)] if not args.quick else []
    results["benchmark"] = run_benchmark(args, out / "benchmark", ["--strategies", args.strategies, *budget],
                                         args.benchmark_timeout)
    if args.compile:
        print("4. Smart batching through torch.compile(dynamic=True)", flush=True)
        results["compile"] = run_benchmark(args, out / "compile", ["--strategies", "smart", "--compile",
                                                                   "--rounds", "0"], args.compile_timeout)
    results["targets"] = target_checks(results)
    results["metadata"]["total_seconds"] = time.perf_counter() - started
    write_results(out, results, markdown(results), plot(results), results["metadata"]["total_seconds"])
    return results


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    main()
