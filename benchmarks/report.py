"""The benchmark's report: results.md (tables), results.png (a chart) and results.json, from its
results dict. Older records (docs/benchmark/) read here too: what a record lacks, its report leaves out."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import step_cost


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def baseline(strategies: list[dict]) -> tuple[dict, str]:
    """The strategy the ratios are to (ratio 1.0), and how a table names it."""
    base = next(s for s in strategies if s["ratios"]["train_seconds"] == 1)
    return base, "fixed" if base["name"] == "fixed" else base["name"]


def setup_lines(results: dict) -> list[str]:
    """Machine, data, model and loop: what the figures below were measured on."""
    meta = results["metadata"]
    machine, setup = meta["machine"], meta["setup"]
    loop = setup.get("loop", {})
    if machine["device"] == "cuda":
        where = f"{machine['device_name']} (CUDA {machine['cuda']}), host CPU {machine['cpu']}"
    else:
        where = (f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, no GPU, "
                 f"{machine.get('allocator', 'allocator not recorded')}")
    how = ("each strategy in a fresh process of its own, from the same saved model, seed and batches"
           if setup.get("fresh_processes") else "one strategy after another in one process")
    return [
        f"Machine: {where}; torch {machine['torch']}, transformers {machine['transformers']}; {meta['date']}.",
        f"Data: {meta['data']['source']}, {setup['train_size']:,} training and {setup['test_size']:,} "
        f"test reviews (balanced subsets, seed {setup['seed']}). Model: {meta['model']['name']} "
        f"({meta['model']['layers']} layers, hidden {meta['model']['hidden_size']}). max_len "
        f"{setup['max_len']}, batch size {setup['batch_size']}, {setup['epochs']} epoch(s), token budget "
        f"{setup['max_tokens']:,}, mixed precision: {setup['amp_dtype'] or 'off'}.",
        f"Loop, the same for every strategy: attention backends {loop.get('attention_backends')}, "
        f"widths rounded up to a multiple of {loop.get('pad_to_multiple_of') or '1 (not rounded)'} "
        f"unless a strategy says otherwise, torch.compile {'on (dynamic shapes)' if loop.get('compile') else 'off'}, "
        f"{setup['warmup_steps']} warm-up steps before the first timing; {how}.", ""]


def strategy_table(results: dict) -> list[str]:
    """One row per strategy: steps, shapes, tokens, times (and their ratio to the baseline's),
    peak memory and accuracy, with what the columns mean."""
    strategies, machine = results["strategies"], results["metadata"]["machine"]
    base, base_word = baseline(strategies)
    mem_key = "cuda_peak_mem_mb" if machine["device"] == "cuda" else "peak_mem_mb"
    lines = [f"| Strategy | Train steps | Sequences per step (mean / max) | Widths | Tokens processed (train) "
             f"| Padding efficiency | Train time | × {base_word} | Eval time | × {base_word} | Peak memory | Accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
                  f"{memory_note} during that strategy's training and evaluation. Widths: distinct "
                  "batch widths in one training epoch (each new shape can cost a one-off set-up)."]
    budget = [s for s in strategies if s["name"] == "token_budget" and s["train_steps"] != base["train_steps"]]
    if budget:
        lines.append(f"The token budget changes the number of steps: {budget[0]['train_steps']:,} instead "
                     f"of {base['train_steps']:,}, as each batch holds as many reviews as fit in "
                     f"{results['metadata']['setup']['max_tokens']:,} tokens.")
    return lines + ([] if base["name"] == "fixed" else [f"Fixed padding did not run: ratios are to {base['label']}."])


def rounding_table(strategies: list[dict]) -> list[str]:
    """Strategies whose widths were rounded up (name_x<N>) next to the same strategy unrounded:
    fewer distinct widths for more tokens; did it pay in time?"""
    by_name = {s["name"]: s for s in strategies}
    rows = [(s, by_name.get(s["name"].rsplit("_x", 1)[0])) for s in strategies
            if "_x" in s["name"] and s.get("pad_to_multiple_of")]
    if not rows:
        return []
    lines = ["", "Widths rounded up to a multiple (fewer distinct shapes, more padding), next to the "
                 "same strategy unrounded:", "",
             "| Strategy | Multiple | Widths | Tokens processed | × unrounded | Train time | × unrounded "
             "| Eval time | × unrounded |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, plain in rows:
        ratio = (lambda key: f"{s[key] / plain[key]:.2f}" if plain else "–")  # noqa: E731
        lines.append(f"| {s['label']} | {s['pad_to_multiple_of']} | {s['distinct_widths']} "
                     f"| {s['processed_tokens']:,} | {ratio('processed_tokens')} | {fmt_seconds(s['train_seconds'])} "
                     f"| {ratio('train_seconds')} | {fmt_seconds(s['eval_seconds'])} | {ratio('eval_seconds')} |")
    return lines


def curve_lines(curve: dict | None) -> list[str]:
    """The step-cost curve as a table, with the sentence that reads it."""
    if not curve:
        return []
    lines = ["", f"Step-cost curve, measured first on a throwaway model (batch size {curve['batch_size']}, "
                 f"every position a real token, median of {curve['repeats']} after a warm-up step): "
                 + step_cost.read_curve(curve), "",
             "| Width | Train step | Train tokens/s | of it in the kernel | page faults | Eval step | Eval tokens/s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    unknown = [None] * len(curve["widths"])  # curves recorded before the counters
    return lines + [f"| {w} | {ts:.3f} s | {tr:,.0f} | " + (f"{sy:.3f} s | {pf:,.0f}" if pf is not None else "– | –")
                    + f" | {es:.3f} s | {er:,.0f} |" for w, ts, tr, sy, pf, es, er in zip(
        curve["widths"], curve["train_seconds"], curve["train_tokens_per_second"],
        curve.get("train_system_seconds", unknown), curve.get("train_page_faults", unknown),
        curve["eval_seconds"], curve["eval_tokens_per_second"])]


def timing_lines(results: dict) -> list[str]:
    """Per strategy, the train time the curve predicted next to the one measured, the speed-ups
    both give, and where the training time went (CPU seconds, those in the kernel, where a page
    fault's zeroing goes, page faults a step); nothing without predictions."""
    strategies = results["strategies"]
    base, base_word = baseline(strategies)
    if not all(s.get("predicted_train_seconds") for s in strategies):
        return []
    lines = ["", f"| Strategy | Train time, predicted | measured | measured / predicted | Speed-up over "
                 f"{base_word}: predicted | measured | Eval time, predicted / measured | Train CPU s "
                 "(in the kernel) | Page faults a step |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in strategies:
        predicted, c = s["predicted_train_seconds"], s.get("train_counters", {})
        cells = [fmt_seconds(predicted), fmt_seconds(s["train_seconds"]), f"{s['train_seconds'] / predicted:.2f}",
                 f"{base['predicted_train_seconds'] / predicted:.2f}x", f"{1 / s['ratios']['train_seconds']:.2f}x"]
        cells.append(f"{fmt_seconds(s['predicted_eval_seconds'])} / {fmt_seconds(s['eval_seconds'])}"
                     if s.get("predicted_eval_seconds") else "–")
        cells += ([f"{c['cpu_seconds']:,.0f} ({c['system_seconds']:,.0f})", f"{c['page_faults'] / s['train_steps']:,.0f}"]
                  if "system_seconds" in c else ["–", "–"])  # records made before the counters
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    return lines + ["", "Predicted: each batch's step time read off the curve at its width (linear between "
                        "measured widths), times its rows / the batch size, summed over the epoch's "
                        "batches, known before the epoch runs."]


def markdown_report(results: dict) -> str:
    """results.md: the set-up, the strategies' table, rounding, the curve and its predictions,
    and how each strategy batches."""
    strategies = results["strategies"]
    lines = setup_lines(results) + strategy_table(results) + rounding_table(strategies)
    lines += curve_lines(results.get("step_costs")) + timing_lines(results)
    lines += ["", "How each strategy batches:", "", "| Strategy | Training batches | Evaluation batches |",
              "|---|---|---|"] + [f"| {s['label']} | {s['train_batching']} | {s['eval_batching']} |"
                                  for s in strategies]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, title: str | None = None):
    """Training/evaluation time and tokens per strategy, side by side; returns the figure. With
    predictions, the predicted training time is a bar of its own; each label is the speed-up."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    strategies = results["strategies"]
    epochs = results["metadata"]["setup"]["epochs"]
    names = [s["label"] for s in strategies]
    fig, (ax_time, ax_tokens) = plt.subplots(1, 2, figsize=(12, 0.7 * len(strategies) + 2.5), sharey=True)
    phases = [(f"train ({epochs} epoch{'s' if epochs > 1 else ''})", "train_seconds"), ("evaluate", "eval_seconds")]
    if all(s.get("predicted_train_seconds") for s in strategies):
        phases.insert(1, ("train, predicted from step costs", "predicted_train_seconds"))
    times = dict(strategy=names * len(phases), phase=[p for p, _ in phases for _ in names],
                 seconds=[s[key] for _, key in phases for s in strategies])
    sns.barplot(times, x="seconds", y="strategy", hue="phase", errorbar=None, ax=ax_time)
    ax_time.bar_label(ax_time.containers[0], fontsize=8,
                      labels=[f" {1 / s['ratios']['train_seconds']:.2f}x" for s in strategies])
    ax_time.set_title(f"Time (label: speed-up over {baseline(strategies)[1]})")
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


def write_results(out: Path, results: dict, report: str, fig, seconds: float) -> None:
    """results.json, results.md (the report) and results.png (the figure) in `out`, and say so."""
    import matplotlib.pyplot as plt

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report)
    fig.savefig(out / "results.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    print("\n" + report)
    print(f"Wrote results.json, results.md and results.png to {out} ({seconds:.0f} s in all)")
