"""Ways to batch the same data (benchmarks/strategies.py), each on full epochs: tokens, time, peak
memory, accuracy.

First the step-cost curve (benchmarks/step_cost.py), from which each strategy's training and
evaluation times are predicted from its batches' shapes before it runs. Then each strategy trains
a copy of one saved initial model on the same reviews and evaluates it, in a fresh process of its
own (benchmarks/epoch.py): no strategy inherits another's memory or per-shape caches. Counters
(CPU seconds, those in the kernel, page faults, steal) tell more work from time spent waiting.
`--rounding 8,16,32` adds smart batching with widths rounded up to those multiples (smart_x8, ...).

    python -m benchmarks.compare_strategies --quick                    # tiny profile, seconds
    python -m benchmarks.compare_strategies --data aclImdb_v1.tar.gz --model bert-base-uncased \\
        --train-size 2000 --test-size 2000 --rounding 8,16,32 --out docs/benchmark

Settings not given as options: the profile's (--profile, else $SMART_BATCHING_PROFILE, else full)
with SMART_BATCHING_* on top; sizes not given: the profile's comparison sizes. Writes results.json,
results.md, results.png and step_costs.png to --out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import helpers
from benchmarks import step_cost
from benchmarks.epoch import run_fresh, save_job
from benchmarks.measuring import command_line, describe_source, machine_info, model_info
from benchmarks.report import markdown_report, plot_results, write_results
from benchmarks.strategies import DEFAULT_STRATEGIES, Batching, get_strategy
from support import device as device_support
from support.arguments import add_settings_options, given_settings, whole_number, whole_numbers
from support.environment import ENV_PREFIX, environment_overrides

SETTINGS_OPTIONS = ("profile", "data_source", "model_name", "tokenizer_name", "max_len", "batch_size",
                    "epochs", "seed", "pad_to_multiple_of", "train_size", "test_size")
QUICK = dict(train_size=256, test_size=256, epochs=1)  # --quick, where no option or variable says


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny profile, "
                        f"{QUICK['train_size']} + {QUICK['test_size']} reviews, one epoch (seconds)")
    add_settings_options(parser, *SETTINGS_OPTIONS)
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help="comma-separated names from benchmarks/strategies.py, each may end in _x<N> "
                             "(widths rounded up to a multiple of N); ratios are to fixed if it runs")
    parser.add_argument("--rounding", type=whole_numbers(), default=[], help="multiples, comma-separated: also smart_x<N> for each")
    parser.add_argument("--max-tokens", type=whole_number(), help="token budget of token_budget "
                        "(default helpers.token_budget: batch_size x the mean training length)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("on", "off"), default="on",
                        help="CUDA only: autocast (bf16 where supported, else fp16)")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile(dynamic=True)")
    parser.add_argument("--warmup-steps", type=whole_number(0), default=2,
                        help="untimed steps of a throwaway copy in each strategy's process")
    parser.add_argument("--curve-widths", type=whole_numbers(words=("auto", "none")), default="auto", help="widths of the step-cost curve, comma-"
                        "separated ('auto': 5 from max_len / 8 to max_len; 'none': no curve, no predictions)")
    parser.add_argument("--curve-repeats", type=whole_number(), help="timed repeats per width (default "
                        "3; 1 with --quick)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "outputs" / "benchmark"))
    parser.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser, args) -> None:
    """Strategies, rounding and curve widths parsed, or a parser error naming the option."""
    args.curve_widths = None if args.curve_widths == "none" else args.curve_widths
    names = [s for s in args.strategies.split(",") if s] + [f"smart_x{m}" for m in args.rounding]
    args.strategies = list(dict.fromkeys(names))
    try:
        for name in args.strategies:
            get_strategy(name)
    except KeyError as error:
        parser.error(f"--strategies: {error.args[0]}")
    if not args.strategies:
        parser.error("--strategies: name at least one")
    if isinstance(args.curve_widths, list) and len(args.curve_widths) < 2:
        parser.error("--curve-widths needs at least two widths")
    args.curve_repeats = args.curve_repeats or (1 if args.quick else 3)
    if args.quick and getattr(args, "profile", "tiny") != "tiny":
        parser.error("--quick runs the tiny profile: leave out --profile")


def make_settings(args):
    """The profile's settings, SMART_BATCHING_* on top, the options given on top of both."""
    given = {name for name in vars(args) if name in SETTINGS_OPTIONS}
    if args.quick:
        args.profile = "tiny"
        overrides = {k: v for k, v in QUICK.items() if k not in given and k not in environment_overrides()}
        return helpers.get_settings(**given_settings(args), compile=args.compile, **overrides)
    if "profile" not in given:  # the benchmark measures the recipe unless told otherwise
        args.profile = os.environ.get(ENV_PREFIX + "PROFILE") or "full"
    settings = helpers.get_settings(**given_settings(args), compile=args.compile)
    for key, size in zip(("train_size", "test_size"), settings.comparison_sizes()):
        if key not in given:
            setattr(settings, key, size)
    return settings


def measure_curve(args, settings, device, amp: bool, machine: dict, out: Path) -> dict | None:
    """The step-cost curve on a throwaway model, printed, read and drawn to step_costs.png."""
    if not args.curve_widths:
        return None
    widths = step_cost.default_widths(settings.max_len) if args.curve_widths == "auto" else args.curve_widths
    if widths[-1] > settings.max_len:
        raise SystemExit(f"--curve-widths up to {widths[-1]}: above max_len {settings.max_len}")
    print(f"\nStep-cost curve: batch size {settings.batch_size}, widths {widths}, median of "
          f"{args.curve_repeats} after a warm-up step", flush=True)
    curve = step_cost.measure_for_settings(settings, device, widths, args.curve_repeats, amp=amp,
                                           verbose=not args.quiet)
    print("  " + step_cost.read_curve(curve))
    import matplotlib.pyplot as plt

    fig = step_cost.plot_step_costs(curve, f"Step costs, {describe_source(settings.model_name)} on "
                                           f"{machine['device_name']}, batch size {settings.batch_size}")
    fig.savefig(out / "step_costs.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return curve


def predict(name: str, settings, data, max_tokens: int, curve: dict) -> dict:
    """The curve's training time (all epochs) and evaluation time for this strategy's batches."""
    strategy = get_strategy(name)
    padding = strategy.padding(settings.max_len, settings.pad_to_multiple_of)
    split = {s: Batching(getattr(data, s).lengths, settings.batch_size, settings.max_len, max_tokens,
                         settings.seed) for s in ("train", "test")}
    train = sum(step_cost.predict_epoch_seconds(curve, step_cost.shapes_from_indices(
        split["train"].lengths, strategy.train_indices(split["train"], epoch), *padding))
        for epoch in range(settings.epochs))
    evaluation = step_cost.predict_epoch_seconds(curve, step_cost.shapes_from_indices(
        split["test"].lengths, strategy.eval_indices(split["test"]), *padding), "eval")
    return dict(predicted_train_seconds=train, predicted_eval_seconds=evaluation)


def run_strategies(args, settings, data, max_tokens: int, device, amp: bool, curve) -> list[dict]:
    """Every strategy in a fresh process (benchmarks/epoch.py) on one saved job; their results."""
    results = []
    with tempfile.TemporaryDirectory(prefix="benchmark_job_") as folder:
        work = Path(folder)
        save_job(work, settings, data, max_tokens=max_tokens, device=device.type, amp=amp,
                 warmup_steps=args.warmup_steps, verbose=not args.quiet)
        for number, name in enumerate(args.strategies, start=1):
            strategy = get_strategy(name)
            print(f"\n[{number}/{len(args.strategies)}] {strategy.label}, in a fresh process: train on "
                  f"{strategy.train_batching}; evaluate on {strategy.eval_batching}", flush=True)
            result = run_fresh(work, name)
            result.update(predict(name, settings, data, max_tokens, curve) if curve else
                          dict(predicted_train_seconds=None, predicted_eval_seconds=None))
            print_result(result)
            results.append(result)
    return results


def print_result(r: dict) -> None:
    c, predicted = r["train_counters"], r["predicted_train_seconds"]
    print(f"  => {r['train_steps']:,} steps, {r['processed_tokens']:,} tokens ({r['efficiency']:.1%} real), train "
          f"{r['train_seconds']:.2f} s" + (f" (predicted {predicted:.2f} s)" if predicted else "") + f" with "
          f"{c['cpu_seconds']:,.1f} CPU s ({c['system_seconds']:,.1f} in the kernel), {c['page_faults'] / max(r['train_steps'], 1):,.0f} page faults a step"
          + (f", steal {c['steal_seconds']:.1f} s" if c["steal_seconds"] is not None else "") + f"; eval "
          f"{r['eval_seconds']:.2f} s, accuracy {r['accuracy']:.3f}, peak memory {r['peak_mem_mb']:,.0f} MiB", flush=True)


def add_ratios(strategies: list[dict]) -> None:
    """Each strategy's times, tokens and memory as a ratio to the baseline's (1.0 for it): fixed
    padding when it ran, else the first strategy."""
    base = next((s for s in strategies if s["name"] == "fixed"), strategies[0])
    keys = ["train_seconds", "eval_seconds", "processed_tokens", "eval_processed_tokens", "peak_mem_mb"]
    keys += ["cuda_peak_mem_mb"] if base.get("cuda_peak_mem_mb") else []
    for s in strategies:
        s["ratios"] = {k: s[k] / base[k] if base[k] else None for k in keys}


def metadata(args, argv, settings, data, machine: dict, max_tokens: int, amp_dtype, curve) -> dict:
    """What the run was: command, machine, data, model and every setting the figures depend on."""
    setup = dict(train_size=len(data.train), test_size=len(data.test), max_len=settings.max_len,
                 batch_size=settings.batch_size, epochs=settings.epochs, max_tokens=max_tokens,
                 learning_rate=settings.learning_rate, seed=settings.seed, amp=amp_dtype is not None,
                 amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
                 warmup_steps=args.warmup_steps, profile=settings.profile, quick=args.quick,
                 fresh_processes=True, curve_widths=curve["widths"] if curve else None,
                 curve_repeats=args.curve_repeats if curve else None,
                 loop=dict(attention_backends=[b.name for b in device_support.ATTENTION_BACKENDS],
                           pad_to_multiple_of=settings.pad_to_multiple_of, compile=settings.compile,
                           fused_adamw=machine["device"] == "cuda"))
    lengths = data.train.lengths
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                command=command_line("compare_strategies", sys.argv[1:] if argv is None else argv),
                machine=machine, model=model_info(settings), setup=setup,
                data=dict(source=describe_source(settings.data_source), train_mean_tokens=float(lengths.mean()),
                          train_truncated_share=float((lengths == settings.max_len).mean())))


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings, device = make_settings(args), helpers.get_device(verbose=False, choice=args.device)
    amp = args.amp == "on" and device.type == "cuda"
    if args.max_tokens is not None and args.max_tokens < settings.max_len:
        raise SystemExit(f"--max-tokens {args.max_tokens} is below max_len {settings.max_len}: the longest "
                         "reviews would not fit in any batch")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"Comparing {len(args.strategies)} batching strategies on {device.type}, each in a fresh "
          f"process ({'quick, tiny profile' if args.quick else 'real mode'}):\n{settings.describe()}")
    started, machine = time.perf_counter(), machine_info(device)  # the load average the run started under
    data = helpers.prepare_data(settings)  # train_size / test_size: the comparison sizes
    max_tokens = args.max_tokens or helpers.token_budget(data.train.lengths, settings.batch_size)
    print(f"Token budget of token_budget: {max_tokens:,} tokens")
    curve = measure_curve(args, settings, device, amp, machine, out)
    strategies = run_strategies(args, settings, data, max_tokens, device, amp, curve)
    add_ratios(strategies)
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    results = dict(metadata=metadata(args, argv, settings, data, machine, max_tokens, amp_dtype, curve),
                   strategies=strategies, step_costs=curve)
    results["metadata"]["total_seconds"] = time.perf_counter() - started
    write_results(out, results, markdown_report(results), plot_results(results), time.perf_counter() - started)
    return results


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # a script writes the chart to a file; no window
    main()
