"""Fine-tune a BERT-style classifier with smart batching from the command line: the Hugging Face
Trainer (smart_trainer.SmartBatchingTrainer) on your CSV / JSON-lines files, or on IMDB.

    python train.py --train_file train.csv --validation_file dev.csv --test_file test.csv \\
        --model bert-base-uncased --output_dir outputs/mine                         # one device
    torchrun --nproc-per-node 2 train.py --profile tiny --output_dir outputs/train  # IMDB, 2 processes
    python train.py ... --resume_from_checkpoint outputs/mine/checkpoint-500        # after a crash

The options are the Trainer's own (transformers.TrainingArguments: --learning_rate,
--num_train_epochs, --per_device_train_batch_size, --seed, --save_steps, --eval_strategy, --bf16,
--resume_from_checkpoint, ...), the series' settings (--profile, --data, --model, --tokenizer,
--max-len, --train-size, --test-size, --pad-to-multiple-of: support/arguments.py) and this
script's (ScriptOptions below: --train_file and the other files, --text_column,
--text_pair_column for sentence pairs, --label_column, --class_names, --regression, --max_tokens,
--overwrite_output_dir). A value given on the command line wins; one not given comes from the
profile (or SMART_BATCHING_*), never from a TrainingArguments default. A named model (--model)
trains with the recipe's settings (the "full" profile), never the tiny profile's, which are the
offline 2-layer model's.

Checkpoints, resuming, mixed precision, logging and several processes (torchrun, accelerate
launch: every process runs this file; on a machine without GPUs they are CPU processes on gloo)
are the Trainer's. Each process trains on its share of the smart batches (the Trainer's world size
and rank are SmartBatchSampler's); predictions come back in the data's order. Rank 0 writes
OUTPUT_DIR/model (weights, tokenizer, id2label / label2id) and OUTPUT_DIR/results.json; every
process then waits for the others before any leaves. An output folder that holds a run is not
overwritten unless --overwrite_output_dir (or a resume) says so. Bad input (a missing file or
column, an empty file or text, a label outside the label set, a regression label that is not a
number, an impossible set-up) stops every process before training with a message naming the file,
column, line or option.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

RANK = int(os.environ.get("RANK", "0"))  # torchrun (and accelerate launch) set it
# The series' settings as options (support/arguments.py); batch size, epochs, learning rate and
# seed are TrainingArguments' options instead (see TRAINER_SETTINGS).
SETTINGS_OPTIONS = ("profile", "data_source", "model_name", "tokenizer_name", "max_len", "train_size",
                    "test_size", "pad_to_multiple_of")
# TrainingArguments field -> the setting it carries. Given on the command line, it overrides the
# profile; not given, the profile's value becomes the Trainer's.
TRAINER_SETTINGS = dict(learning_rate="learning_rate", num_train_epochs="epochs",
                        per_device_train_batch_size="batch_size", seed="seed",
                        warmup_steps="warmup_steps", weight_decay="weight_decay",
                        adam_epsilon="adam_epsilon", max_grad_norm="max_grad_norm")
RUN_FILES = ("results.json", "model", "trainer_state.json")  # what says a folder holds a run


@dataclasses.dataclass
class ScriptOptions:
    """train.py's own options (the data, the labels, the batching); the rest are the Trainer's."""

    train_file: str | None = dataclasses.field(default=None, metadata=dict(
        help="your training data, .csv / .tsv / .json / .jsonl (JSON lines); without it: IMDB (--data)"))
    validation_file: str | None = dataclasses.field(default=None, metadata=dict(
        help="held-out labelled data: evaluated at the end (and during training with --eval_strategy)"))
    test_file: str | None = dataclasses.field(default=None, metadata=dict(
        help="data to predict (labels optional); predictions go to OUTPUT_DIR/results.json"))
    text_column: str = dataclasses.field(default="text", metadata=dict(help="the column of the texts"))
    text_pair_column: str | None = dataclasses.field(default=None, metadata=dict(
        help="a second text column, for sentence pairs (NLI, paraphrase)"))
    label_column: str = dataclasses.field(default="label", metadata=dict(help="the column of the labels"))
    class_names: str | None = dataclasses.field(default=None, metadata=dict(
        help="the label set in id order, comma-separated (default: the training file's labels, sorted)"))
    regression: bool = dataclasses.field(default=False, metadata=dict(
        help="labels are numbers to predict (one output, mean squared error), not classes"))
    max_tokens: str | None = dataclasses.field(default=None, metadata=dict(
        help="a token budget per batch (len x longest) instead of a batch size; 'auto': helpers.token_budget"))
    fail_fast: bool = dataclasses.field(default=False, metadata=dict(
        help="each process's costliest batch at step 2, so that running out of memory happens at once"))
    overwrite_output_dir: bool = dataclasses.field(default=False, metadata=dict(
        help="train into an output folder that already holds a run"))
    save_batches: bool = dataclasses.field(default=False, metadata=dict(
        help="each process writes the indices of the batches it trained on to OUTPUT_DIR/batches/"))


class SetupError(Exception):
    """An option that cannot work with this data or this many processes: (option, message)."""


def build_parser():
    from transformers import HfArgumentParser, TrainingArguments

    from support.arguments import add_settings_options

    class Parser(HfArgumentParser):
        def error(self, message):  # under torchrun: one message, from rank 0, and every rank stops
            if RANK == 0:
                self.print_usage(sys.stderr)
                print(f"{self.prog}: error: {message}", file=sys.stderr)
            sys.exit(2)

    parser = Parser((TrainingArguments, ScriptOptions), prog="train.py",
                    description=__doc__.split("\n")[0])
    add_settings_options(parser, *SETTINGS_OPTIONS)
    return parser


def given_options(parser, argv) -> dict:
    """The options given on the command line (by dest), whatever their spelling: parsed once more
    with every default suppressed, so that what is absent was not given."""
    saved = {action: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved.items():
            action.default = default
    return vars(given)


def settings_for(parser, given: dict):
    """helpers.Settings from the profile, SMART_BATCHING_* and the options given (TrainingArguments'
    among them); a named model (--model, SMART_BATCHING_MODEL) gets the recipe's ("full") settings
    where the profile would be the tiny one, which is the offline 2-layer model's."""
    import helpers
    from support.arguments import given_settings
    from support.models import TINY_MODEL

    options = given_settings(argparse.Namespace(**given))  # the settings' options given
    overrides = {setting: given[field] for field, setting in TRAINER_SETTINGS.items() if field in given}
    if "num_train_epochs" in given:
        epochs = given["num_train_epochs"]
        if epochs != int(epochs) or epochs < 1:
            parser.error(f"argument --num_train_epochs: a whole number >= 1 (smart batches are drawn "
                         f"per epoch), got {epochs}")
        overrides["epochs"] = int(epochs)
    for field, test in (("learning_rate", lambda v: 0 < v < math.inf), ("seed", lambda v: v >= 0),
                        ("per_device_train_batch_size", lambda v: v >= 1)):
        if field in given and not test(given[field]):
            parser.error(f"argument --{field}: {given[field]} is out of range")
    try:
        settings = helpers.get_settings(**{**options, **overrides})
        if settings.profile == "tiny" and settings.model_name != TINY_MODEL:
            if given.get("profile") == "tiny":
                parser.error(f"argument --profile: tiny is the offline 2-layer model's; the model "
                             f"{settings.model_name} trains with the recipe's settings: leave --profile out")
            options["profile"] = "full"  # a named model: never the tiny profile's lr, sizes or data
            settings = helpers.get_settings(**{**options, **overrides})
        return settings
    except ValueError as error:
        parser.error(str(error))


def parse_args(argv=None):
    """(TrainingArguments, ScriptOptions, helpers.Settings). The settings become the Trainer's
    defaults, so that an option not given keeps the profile's value."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    given = given_options(parser, argv)
    settings = settings_for(parser, given)
    from support.environment import output_dir

    parser.set_defaults(**{field: getattr(settings, setting) for field, setting in TRAINER_SETTINGS.items()},
                        per_device_eval_batch_size=settings.batch_size, report_to="none",
                        output_dir=str(output_dir("train")) if "output_dir" not in given else None,
                        use_cpu=processes_on_cpus(parser))
    training_args, options, *_ = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    check_options(parser, options, given, settings)
    return training_args, options, settings


def processes_on_cpus(parser) -> bool:
    """Whether a launcher started several processes on a machine without GPUs: then they are
    CPU processes on gloo (use_cpu), which Accelerate makes of them only when told so (without it
    every process would train alone on all the data). More processes than GPUs is an error."""
    import torch

    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not torch.cuda.is_available():
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    if per_machine > torch.cuda.device_count():  # before any process waits for another
        parser.error(f"argument --nproc-per-node: {per_machine} processes on this machine but "
                     f"{torch.cuda.device_count()} GPU(s): start at most that many, or hide the GPUs "
                     "(CUDA_VISIBLE_DEVICES=) to run the processes on the CPU with gloo")
    return False


def check_options(parser, options: ScriptOptions, given: dict, settings) -> None:
    """Options that contradict each other, or a value out of range, named before anything runs."""
    if options.max_tokens not in (None, "auto") and not (options.max_tokens.isdigit()
                                                         and int(options.max_tokens) >= 1):
        parser.error(f"argument --max_tokens: expected a whole number >= 1 or 'auto', got {options.max_tokens!r}")
    if options.max_tokens is not None and "per_device_train_batch_size" in given:
        parser.error("argument --per_device_train_batch_size: --max_tokens sets each batch's size; give one of them")
    own = options.train_file is not None
    for dest, option in (("data_source", "--data"), ("train_size", "--train-size"),
                         ("test_size", "--test-size")):
        if own and dest in given:
            parser.error(f"argument {option}: chooses IMDB's data; with --train_file every row of your files "
                         "is used")
    if not own and (options.validation_file or options.test_file):
        parser.error("argument --train_file: needed with --validation_file / --test_file")
    if options.regression and options.class_names:
        parser.error("argument --class_names: a regression has no label set")
    if options.save_batches and given.get("dataloader_num_workers", 0):
        parser.error("argument --save_batches: records batches in the training process; "
                     "leave --dataloader_num_workers at 0")


def check_output_dir(training_args, options: ScriptOptions) -> None:
    """A folder that holds a run (a model, results, checkpoints) is kept unless asked otherwise."""
    out = Path(training_args.output_dir)
    if options.overwrite_output_dir or training_args.resume_from_checkpoint or not out.is_dir():
        return
    held = sorted(p.name for p in out.iterdir() if p.name in RUN_FILES or p.name.startswith("checkpoint-"))
    if held:
        raise SetupError("--output_dir", f"{out} already holds a run ({', '.join(held[:4])}): choose another "
                         "folder, --overwrite_output_dir to train over it, or --resume_from_checkpoint")


def check_setup(options: ScriptOptions, settings, train_lengths, world_size: int):
    """(batch_size, max_tokens) for the training sampler, once it can work here; else a SetupError."""
    import helpers

    longest = int(train_lengths.max())
    batch_size = settings.batch_size
    max_tokens = None if options.max_tokens in (None, "auto") else int(options.max_tokens)
    if options.max_tokens == "auto":
        max_tokens = max(helpers.token_budget(train_lengths, batch_size), longest)
    if max_tokens is not None:
        batch_size = None  # the budget sets each batch's size
        if max_tokens < longest:
            raise SetupError("--max_tokens", f"{max_tokens} is below the longest text, {longest} tokens "
                             f"(max_len {settings.max_len}): raise it or lower --max-len")
    fewest = min(len(helpers.smart_batch_indices(train_lengths, batch_size, settings.seed + epoch,
                                                 max_tokens)) for epoch in range(settings.epochs))
    if fewest < world_size:
        option = "--max_tokens" if max_tokens is not None else "--per_device_train_batch_size"
        raise SetupError(option, f"{len(train_lengths)} training texts make {fewest} batch"
                         f"{'es' if fewest > 1 else ''} an epoch, fewer than the {world_size} processes: "
                         "lower it, add training data or start fewer processes (--nproc-per-node)")
    return batch_size, max_tokens


def weights_fingerprint(model) -> str:
    """sha256 of every parameter's name and bytes: equal on two processes iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# The data: your files, or IMDB as in the notebooks.
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Data:
    """The tokenized splits (validation and test may be None) and what the model needs to know."""

    tokenizer: object
    train: object
    validation: object
    test: object
    names: list[str] | None  # the label names in id order; None for a regression
    test_texts: int = 0


def as_dataset(table, tokenizer, max_len: int, labels):
    """A datasets.Dataset of the file's rows tokenized without padding (token_type_ids too for
    pairs), their labels and their index (so that a batch can be traced back to its rows)."""
    import datasets

    import helpers

    encoded = helpers.tokenize_without_padding(table.texts, tokenizer, max_len, verbose=False,
                                               text_pairs=table.pairs)
    columns = dict(encoded) if table.pairs is not None else dict(input_ids=encoded)
    columns["index"] = list(range(len(table.texts)))
    if labels is not None:
        columns["labels"] = labels
    return datasets.Dataset.from_dict(columns)


def read_label_names(options: ScriptOptions, table) -> list[str] | None:
    """--class_names, else the training file's labels sorted; a classifier needs two or more."""
    from support.data_files import DataFileError, label_names

    if options.regression:
        return None
    if options.class_names:
        names = [n.strip() for n in options.class_names.split(",")]
        if "" in names or len(set(names)) != len(names):
            raise SetupError("--class_names", f"{options.class_names!r}: each name once, none empty")
    else:
        names = label_names(table)
    if len(names) < 2:
        raise DataFileError(f"{table.path}, column {table.label_column!r}: only the label {names[0]!r}; a "
                            "classifier needs two or more (or --regression for numbers)")
    return names


def load_own_data(options: ScriptOptions, settings) -> Data:
    """Every file read and checked (support/data_files.py), then tokenized."""
    from support.data_files import label_ids, read_table, regression_targets
    import helpers

    columns = dict(text_column=options.text_column, label_column=options.label_column,
                   pair_column=options.text_pair_column)
    train = read_table(options.train_file, **columns, option="--train_file")
    names = read_label_names(options, train)
    tables = dict(train=train)
    for split in ("validation", "test"):
        path = getattr(options, f"{split}_file")
        if path:
            tables[split] = read_table(path, **columns, labels_required=split == "validation",
                                       option=f"--{split}_file")
    given_by = "--class_names" if options.class_names else "the training file"
    labels = {split: None if table.labels is None else regression_targets(table) if names is None
              else label_ids(table, names, given_by) for split, table in tables.items()}
    tokenizer = helpers.load_tokenizer(settings)
    sets = {split: as_dataset(table, tokenizer, settings.max_len, labels[split])
            for split, table in tables.items()}
    return Data(tokenizer, sets["train"], sets.get("validation"), sets.get("test"), names,
                len(tables["test"].texts) if "test" in tables else 0)


def load_imdb(settings, verbose: bool) -> Data:
    """IMDB's train and test splits as the notebooks load them (helpers.prepare_data)."""
    import helpers

    data = helpers.prepare_data(settings, verbose=verbose)
    return Data(data.tokenizer, data.train, None, data.test, ["neg", "pos"], len(data.test))


# ----------------------------------------------------------------------------------------------
# Several processes: every process decides together, and leaves together.
# ----------------------------------------------------------------------------------------------

def gather(value) -> list:
    """Every process's value, on every process (one process: [value])."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def stop_together(error: str | None) -> None:
    """All processes go on, or all stop (one process alone waiting for the others would hang);
    rank 0 prints the first process's message."""
    errors = [e for e in gather(error) if e]
    if errors:
        if RANK == 0:
            print(errors[0], file=sys.stderr)
        raise SystemExit(2)


def attempt(step, *args):
    """(step's value, None), or (None, the message that names what was wrong)."""
    from support.data_files import DataFileError

    try:
        return step(*args), None
    except SetupError as e:
        return None, f"train.py: error: argument {e.args[0]}: {e.args[1]}"
    except (DataFileError, ValueError, OSError, RuntimeError) as e:
        return None, f"train.py: error: {e}"


def prepare(training_args, options: ScriptOptions, settings):
    """(data, batch_size, max_tokens) once every process has its data and the set-up can work;
    else every process stops with the first process's message (printed by rank 0)."""
    rank, world = training_args.process_index, training_args.world_size

    def load():
        check_output_dir(training_args, options)
        if options.train_file:
            return load_own_data(options, settings)
        return load_imdb(settings, verbose=rank == 0)

    data, error = attempt(load) if rank == 0 else (None, None)
    stop_together(error)  # rank 0 first: a download or a cache happens once, the others read it
    if data is None:
        data, error = attempt(load)
    if data is not None:
        import helpers

        lengths = helpers.sequence_lengths(data.train)
        batching, error = attempt(check_setup, options, settings, lengths, world)
    stop_together(error)
    return (data, *batching)


def leave_together(trainer) -> None:
    """Every process waits here for the others, rank 0's saving included, so that no process
    tears the process group down (or exits) while a peer still works: a process that leaves
    early can abort in the process group's teardown, failing the whole run."""
    trainer.accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------------------------
# Training, predictions, results.
# ----------------------------------------------------------------------------------------------

class Recorded:
    """A collate function that records each training batch's row indices, epoch by epoch (the
    rows as the Trainer's loop receives them, after any batches a resume skips)."""

    def __init__(self, collate, log: list):
        self.collate, self.log = collate, log

    def __call__(self, examples):
        self.log[-1].append([int(e["index"]) for e in examples])
        return self.collate(examples)


def record_batches(trainer) -> list:
    """Make the trainer's training loader record its batches; returns the log: one list per epoch."""
    from transformers import TrainerCallback

    log, build = [], trainer.get_train_dataloader

    class NewEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            log.append([])

    def get_train_dataloader():
        loader = build()
        loader.collate_fn = Recorded(loader.collate_fn, log)
        return loader

    trainer.get_train_dataloader = get_train_dataloader
    trainer.add_callback(NewEpoch())
    return log


def compute_metrics(regression: bool):
    """The Trainer's compute_metrics: accuracy for classes, mean squared error for a regression."""
    import numpy as np

    def metrics(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if regression:
            return dict(mse=float(np.mean((logits.reshape(-1) - labels.reshape(-1)) ** 2)))
        return dict(accuracy=float((logits.argmax(-1) == labels).mean()))
    return metrics


def build_trainer(training_args, options: ScriptOptions, settings, data: Data, max_tokens):
    import helpers
    from smart_trainer import SmartBatchingTrainer

    model = helpers.load_model(settings, num_labels=1 if data.names is None else len(data.names))
    if data.names is None:
        model.config.problem_type = "regression"
    else:  # saved with the model: a pipeline() on the folder says the names, not LABEL_0
        model.config.id2label = dict(enumerate(data.names))
        model.config.label2id = {name: i for i, name in enumerate(data.names)}
    return SmartBatchingTrainer(
        model=model, args=training_args, train_dataset=data.train, eval_dataset=data.validation,
        processing_class=data.tokenizer,
        data_collator=helpers.PadCollator(data.tokenizer.pad_token_id, settings.pad_to_multiple_of),
        compute_metrics=compute_metrics(data.names is None), max_tokens=max_tokens,
        fail_fast=options.fail_fast)


def resume_on_cpus(trainer) -> None:
    """Let CPU processes resume whatever the transformers version: some versions load the
    optimizer's state with map_location=args.device, which for each CPU process of a distributed
    run is an indexed device (cpu:0, cpu:1) that torch.load cannot restore to. Plain "cpu" is the
    same memory; GPU runs and single processes are left alone."""
    import torch

    device, load = trainer.args.device, trainer._load_optimizer_and_scheduler
    if device.type != "cpu" or device.index is None:
        return

    def load_on_cpu(checkpoint):
        torch_load = torch.load

        def cpu_load(*args, **kwargs):
            if isinstance(kwargs.get("map_location"), torch.device) and kwargs["map_location"].type == "cpu":
                kwargs["map_location"] = "cpu"
            return torch_load(*args, **kwargs)

        torch.load = cpu_load
        try:
            return load(checkpoint)
        finally:
            torch.load = torch_load

    trainer._load_optimizer_and_scheduler = load_on_cpu


def predict_test(trainer, data: Data) -> dict:
    """Predictions on the test split, in its rows' order (every process gets all of them)."""
    output = trainer.predict(data.test)
    logits = output.predictions
    result = dict(rows=len(logits), logits=logits.tolist())
    if data.names is None:
        result["predictions"] = logits.reshape(-1).tolist()
    else:
        ids = logits.argmax(-1)
        result.update(predictions=ids.tolist(), predicted_labels=[data.names[i] for i in ids])
    result.update({key.removeprefix("test_"): value for key, value in (output.metrics or {}).items()
                   if key in ("test_accuracy", "test_mse", "test_loss")})
    return result


def resume_point(training_args):
    """--resume_from_checkpoint: a checkpoint folder, or True/last: the output folder's latest."""
    value = training_args.resume_from_checkpoint
    return True if str(value).lower() in ("true", "last") else value


def write_results(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"saved the model and its tokenizer to {out / 'model'}, results to {out / 'results.json'}")


def run(training_args, options: ScriptOptions, settings) -> None:
    import torch.distributed as dist

    data, batch_size, max_tokens = prepare(training_args, options, settings)
    rank, out = training_args.process_index, Path(training_args.output_dir)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{training_args.world_size} process(es) on {training_args.device}; settings:\n{settings.describe()}")
    if options.save_batches:  # the rows' index reaches the collator, which drops it before the model
        training_args.remove_unused_columns = False
    trainer = build_trainer(training_args, options, settings, data, max_tokens)
    used = record_batches(trainer) if options.save_batches else None
    resume_on_cpus(trainer)
    trained = trainer.train(resume_from_checkpoint=resume_point(training_args))
    results = dict(command=sys.argv, world_size=training_args.world_size,
                   backend=dist.get_backend() if dist.is_initialized() else None,
                   device=str(training_args.device), settings=dataclasses.asdict(settings),
                   batch_size=batch_size, max_tokens=max_tokens, label_names=data.names,
                   train=trained.metrics, steps=trainer.state.global_step,
                   log_history=trainer.state.log_history)
    if data.validation is not None:
        results["validation"] = trainer.evaluate()
    if data.test is not None:
        results["test"] = predict_test(trainer, data)
    fingerprints = gather(weights_fingerprint(trainer.model))
    results.update(weights_sha256=fingerprints, weights_identical=len(set(fingerprints)) == 1)
    if used is not None:
        (out / "batches").mkdir(parents=True, exist_ok=True)
        (out / "batches" / f"rank{rank}.json").write_text(json.dumps(used))
    trainer.save_model(str(out / "model"))  # rank 0 writes; with the tokenizer and the label names
    if rank == 0:
        write_results(out, results)
    leave_together(trainer)


def main(argv=None) -> int:
    import torch.distributed as dist

    try:
        training_args, options, settings = parse_args(argv)
        run(training_args, options, settings)
        print(f"train.py: process {RANK} done")
        return 0
    except SystemExit as stop:
        return 2 if stop.code else 0
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
