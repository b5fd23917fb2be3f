"""What one step costs on this device, and the epoch time that predicts.

Whether smart batching saves time depends on one curve: how a step's time grows with the batch's
width. Where it grows with the tokens (or faster), fewer padded tokens are less time; where it is
flat (a fast GPU bound by per-step overhead), smart batching saves little. measure_step_costs (or
measure_for_settings) times the series' own loops on synthetic batches at a few widths;
predict_epoch_seconds turns the curve and an epoch's (width, rows) into seconds; plot_step_costs
draws it; read_curve says in one sentence whether this device is compute- or overhead-bound.
From a shell (settings not given: the profile's; writes step_costs.json and step_costs.png):

    python -m benchmarks.step_cost --profile full --model path/to/model   # 16 x 50..400
    python -m benchmarks.step_cost --profile tiny --repeats 1              # seconds, a check
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import helpers
from benchmarks.measuring import counters_since, machine_info, model_info, process_counters

# read_curve's rule: the elasticity e = log(time ratio) / log(token ratio) between the longest
# and the shortest width (1: time follows tokens, 0: flat).
COMPUTE_BOUND = 0.8  # e >= 0.8: time grows with tokens (or faster)
OVERHEAD_BOUND = 0.3  # e <= 0.3: nearly flat
NOISY = 1.5  # read_curve warns when repeats at one width differ by more than this factor


def default_widths(max_len: int, count: int = 5) -> list[int]:
    """`count` widths from max_len / 8 up to max_len, evenly spaced (400: 50, 138, 225, 312, 400)."""
    shortest = max(2, max_len // 8)
    return sorted({int(round(w)) for w in np.linspace(shortest, max_len, count)})


def synthetic_batch(width: int, rows: int, vocab_size: int, seed: int = 0, pad_share: float = 0.0,
                    pad_id: int = 0) -> dict:
    """A batch dict as batches_from_indices builds it: `rows` x `width` random ids from the upper
    part of the vocabulary (words, not special tokens; the ids do not change the compute), a
    random label each. pad_share > 0 pads the last share of every row but the first (masked)."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)
    input_ids = torch.randint(low, vocab_size, (rows, width), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    padded = int(round(pad_share * width))
    if padded:
        input_ids[1:, width - padded:], attention_mask[1:, width - padded:] = pad_id, 0
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                labels=torch.randint(0, 2, (rows,), generator=generator))


def measure_step_costs(model, optimizer, scheduler, device: torch.device, widths, batch_size: int,
                       repeats: int = 3, warmup: int = 1, amp_dtype: torch.dtype | None = None,
                       max_grad_norm: float = 1.0, pad_share: float = 0.0, seed: int = 0,
                       verbose: bool = True) -> dict:
    """Seconds per training step and per evaluation step at each width, `batch_size` rows each.

    Each width gets `warmup` untimed steps first; then `repeats` rounds time one training step
    (helpers.train_epoch: forward, backward, clipping, AdamW, schedule) and one evaluation step
    (helpers.predict) at every width, the widths in alternating order from round to round so that
    a slow spell on the machine does not land on one width only. Per width: the median of the
    repeats. The model trains on these batches: give it a throwaway model.

    Returns plain lists (JSON-ready): widths, train_seconds, eval_seconds, their tokens per
    second (batch_size x width / seconds), every repeat, a training step's median page faults and
    system seconds (on a CPU, memory faulted in anew each step), and the measurement's settings.
    """
    widths = sorted({int(w) for w in widths})
    if not widths or widths[0] < 1 or repeats < 1:
        raise ValueError(f"need widths >= 1 and repeats >= 1, got {widths} and {repeats}")
    model.to(device)
    config = model.config
    batch = {w: synthetic_batch(w, batch_size, config.vocab_size, seed + w, pad_share, config.pad_token_id or 0)
             for w in widths}
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # as fine_tune's

    counted = {w: [] for w in widths}  # process counters of each timed training step

    def train_step(width, counts=None):
        start = process_counters()
        seconds = helpers.train_epoch(model, [batch[width]], optimizer, scheduler, device, max_grad_norm,
                                      amp_dtype, scaler, verbose=False)["seconds"]
        if counts is not None:  # a timed step, not a warm-up
            counts.append(counters_since(start))
        return seconds

    def eval_step(width):
        return helpers.predict(model, [batch[width]], device, amp_dtype, verbose=False)["seconds"]

    for width in widths:
        for _ in range(warmup):
            train_step(width), eval_step(width)
    train, evals = {w: [] for w in widths}, {w: [] for w in widths}
    for r in range(repeats):
        for width in (widths if r % 2 == 0 else widths[::-1]):
            train[width].append(train_step(width, counted[width]))
            evals[width].append(eval_step(width))
        if verbose:
            print(f"  step costs: round {r + 1}/{repeats} done", flush=True)
    train_seconds = [float(np.median(train[w])) for w in widths]
    eval_seconds = [float(np.median(evals[w])) for w in widths]
    return dict(
        widths=widths, batch_size=batch_size, train_seconds=train_seconds, eval_seconds=eval_seconds,
        train_tokens_per_second=[batch_size * w / s for w, s in zip(widths, train_seconds)],
        eval_tokens_per_second=[batch_size * w / s for w, s in zip(widths, eval_seconds)],
        train_repeats=[train[w] for w in widths], eval_repeats=[evals[w] for w in widths],
        **{f"train_{key}": [float(np.median([c[key] for c in counted[w]])) for w in widths]
           for key in ("page_faults", "system_seconds")},
        repeats=repeats, warmup=warmup, pad_share=pad_share, device=device.type,
        amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype else None)


def measure_for_settings(settings, device: torch.device, widths=None, repeats: int = 3,
                         warmup: int = 1, amp: bool = True, verbose: bool = True, **options) -> dict:
    """measure_step_costs on a fresh throwaway copy of settings' model, at settings.batch_size,
    with the recipe's optimizer; widths default to default_widths(settings.max_len). Mixed
    precision on CUDA when amp (as fine_tune). The model is deleted afterwards."""
    model = helpers.load_model(settings).to(device)
    optimizer, scheduler = helpers.make_optimizer(model, settings, 10 ** 6)  # lr stays ~constant
    amp_dtype = helpers.autocast_dtype(device) if amp else None
    try:
        return measure_step_costs(model, optimizer, scheduler, device,
                                  widths or default_widths(settings.max_len), settings.batch_size,
                                  repeats, warmup, amp_dtype, settings.max_grad_norm,
                                  seed=settings.seed, verbose=verbose, **options)
    finally:
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()


def step_seconds(costs: dict, width: float, phase: str = "train") -> float:
    """Seconds of one step `width` wide with costs["batch_size"] rows, read off the curve.

    Between measured widths: linear interpolation. Below the shortest: the shortest width's time
    (clamped: the per-step overhead does not shrink with the width, so this errs high, by little
    on a flat curve). Above the longest: the last segment's line extended (time keeps growing at
    least that fast, attention being quadratic in the width, so this errs low), flat if that
    segment falls (noise). One width measured: its time everywhere.
    """
    widths, seconds = costs["widths"], costs[f"{phase}_seconds"]
    if len(widths) == 1 or width <= widths[-1]:
        return float(np.interp(width, widths, seconds))
    slope = max(0.0, (seconds[-1] - seconds[-2]) / (widths[-1] - widths[-2]))
    return float(seconds[-1] + slope * (width - widths[-1]))


def predict_epoch_seconds(costs: dict, batch_widths_and_sizes, phase: str = "train") -> float:
    """Predicted seconds for these batches, given as (width, rows) pairs, one per step.

    A step `width` wide costs step_seconds(costs, width) at the curve's batch size; a batch with
    another number of rows costs that times rows / batch_size. The assumption: at a given width, a
    step's time is proportional to its rows, i.e. its tokens (true where compute dominates; where
    per-step overhead dominates it predicts too little for small batches and too much for large
    ones, e.g. a token budget's). phase "eval" uses the evaluation steps' costs.
    """
    size = costs["batch_size"]
    return float(sum(step_seconds(costs, width, phase) * rows / size
                     for width, rows in batch_widths_and_sizes))


def shapes_from_indices(lengths, batch_indices, pad_to: int | None = None,
                        pad_to_multiple_of: int | None = None) -> list[tuple[int, int]]:
    """(width, rows) of each batch of indices, padded as batches_from_indices would pad them:
    the batches' shapes before any batch is built."""
    lengths = np.asarray(lengths)
    return [(helpers.padded_width(int(lengths[idx].max()), pad_to, pad_to_multiple_of), len(idx))
            for idx in batch_indices]


def plot_step_costs(costs: dict, title: str | None = None):
    """Seconds per step (training and evaluation) and tokens per second against the batch's
    width; returns the figure."""
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_rate) = plt.subplots(1, 2, figsize=(11, 3.8))
    for phase, marker in (("train", "o"), ("eval", "s")):
        label = "training step" if phase == "train" else "evaluation step"
        ax_time.plot(costs["widths"], costs[f"{phase}_seconds"], marker=marker, label=label)
        ax_rate.plot(costs["widths"], costs[f"{phase}_tokens_per_second"], marker=marker, label=label)
    rows = costs["batch_size"]
    ax_time.set(xlabel=f"batch width (tokens; {rows} rows)", ylabel="seconds per step",
                title="What a step costs", ylim=(0, None))
    ax_rate.set(xlabel=f"batch width (tokens; {rows} rows)", ylabel="tokens per second",
                title="Throughput (flat: time follows tokens)", ylim=(0, None))
    for ax in (ax_time, ax_rate):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or f"Step costs on {costs.get('device', 'this device')}, median of "
                 f"{costs.get('repeats', '?')} after warm-up", fontsize=10)
    fig.tight_layout()
    return fig


def curve_elasticity(costs: dict, phase: str = "train") -> float:
    """log(time ratio) / log(token ratio) between the longest and the shortest width measured:
    1 when time follows tokens, above 1 when it grows faster, 0 when flat."""
    widths, seconds = costs["widths"], costs[f"{phase}_seconds"]
    if len(widths) < 2:
        raise ValueError("reading a curve needs at least two widths")
    return math.log(seconds[-1] / seconds[0]) / math.log(widths[-1] / widths[0])


def noise(costs: dict, phase: str = "train") -> float:
    """The largest ratio of slowest to fastest repeat at any width (1.0: perfectly steady)."""
    repeats = costs.get(f"{phase}_repeats") or [[s] for s in costs[f"{phase}_seconds"]]
    return max(max(r) / min(r) for r in repeats)


def read_curve(costs: dict, phase: str = "train") -> str:
    """One sentence that reads the curve: compute-bound or overhead-bound, and what that means
    for smart batching. The rule: with the time ratio T and the token ratio N between the longest
    and the shortest width, e = log T / log N; compute-bound if e >= 0.8 (time grows with the
    tokens or faster), overhead-bound if e <= 0.3 (nearly flat), in between otherwise. A caution
    follows when the repeats at one width differ by more than 1.5x (a busy machine)."""
    widths, seconds = costs["widths"], costs[f"{phase}_seconds"]
    e = curve_elasticity(costs, phase)
    rows = costs["batch_size"]
    step = "A training" if phase == "train" else "An evaluation"
    facts = (f"{step} step of {rows} x {widths[-1]} tokens took {seconds[-1]:.3g} s here and one of "
             f"{rows} x {widths[0]} took {seconds[0]:.3g} s: {seconds[-1] / seconds[0]:.1f}x the time for "
             f"{widths[-1] / widths[0]:.1f}x the tokens")
    noisy = noise(costs, phase)
    caveat = (f" (Caution: repeats at one width differed by up to {noisy:.1f}x, so the machine was "
              "busy; measure again.)" if noisy > NOISY else "")
    return _reading(facts, e) + caveat


def _reading(facts: str, e: float) -> str:
    if e >= COMPUTE_BOUND:
        return (f"{facts}, so time grows with the tokens{' or faster' if e > 1.05 else ''} "
                "(compute-bound): every padding token smart batching removes is time saved.")
    if e <= OVERHEAD_BOUND:
        return (f"{facts}, so the curve is nearly flat (overhead-bound): a step costs about the same "
                "whatever its width, and smart batching saves little time here (fewer, fuller steps "
                "would).")
    return (f"{facts}, so time grows with the tokens but more slowly (partly overhead-bound): smart "
            "batching saves time, though less than the share of tokens it removes.")


def main(argv=None) -> dict:
    """The curve from the command line: results in --out as step_costs.json (with the machine,
    its allocator and the model) and step_costs.png."""
    import argparse
    import json

    import matplotlib
    import matplotlib.pyplot

    from support.arguments import add_settings_options, given_settings, whole_number, whole_numbers

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_settings_options(parser, "profile", "model_name", "max_len", "batch_size", "seed")
    parser.add_argument("--widths", type=whole_numbers(), help="comma-separated (default: 5 from max_len / 8 to max_len)")
    parser.add_argument("--repeats", type=whole_number(), default=3)
    parser.add_argument("--pad-share", type=float, default=0.0,
                        help="share of each row (all but the first) that is masked padding")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "outputs" / "step_costs"))
    args = parser.parse_args(argv)
    settings = helpers.get_settings(**given_settings(args))
    device = helpers.get_device(verbose=False, choice=args.device)
    costs = measure_for_settings(settings, device, args.widths, args.repeats, pad_share=args.pad_share)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(costs, machine=machine_info(device), model=model_info(settings))  # what it ran on, allocator included
    (out / "step_costs.json").write_text(json.dumps(record, indent=1) + "\n")
    fig = plot_step_costs(costs)
    fig.savefig(out / "step_costs.png", dpi=150, bbox_inches="tight")
    matplotlib.pyplot.close(fig)
    for w, train, evaluate in zip(costs["widths"], costs["train_seconds"], costs["eval_seconds"]):
        print(f"  {settings.batch_size} x {w:>4}: train {train:.3f} s, eval {evaluate:.3f} s")
    if len(costs["widths"]) > 1:
        print(read_curve(costs))
    print(f"Wrote step_costs.json and step_costs.png to {out}")
    return costs


if __name__ == "__main__":
    main()
