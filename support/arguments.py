"""Command-line options for the series' settings: one way for train.py and every benchmark.

    parser = argparse.ArgumentParser()
    add_settings_options(parser, "profile", "model_name", "batch_size", "train_size")
    settings = helpers.get_settings(**given_settings(parser.parse_args()))

An option the user does not give is absent from the parsed namespace (argparse.SUPPRESS), so it
never overrides the profile or a SMART_BATCHING_* environment variable: `helpers.get_settings`
applies those first and the options given last. (support/ never imports helpers, so the caller
calls get_settings.) The options work on an `argparse.ArgumentParser` and on transformers'
`HfArgumentParser` (a subclass), whose parse_args_into_dataclasses returns them in its last,
left-over namespace.
"""
from __future__ import annotations

import argparse


def whole_number(minimum: int = 1, allow_all: bool = False):
    """An argparse type: a whole number >= minimum; with allow_all, 'all' (the whole split: None)."""
    def parse(text: str):
        if allow_all and text.lower() == "all":
            return None
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}"
                                             + (" or 'all'" if allow_all else "") + f", got {text!r}")
        return int(text)
    return parse


def whole_numbers(minimum: int = 1, words: tuple[str, ...] = ()):
    """An argparse type: comma-separated whole numbers >= minimum, sorted, each once ("8,32,8":
    [8, 32]); or one of `words` ("auto"), given back in lower case."""
    one = whole_number(minimum)

    def parse(text: str):
        if text.lower() in words:
            return text.lower()
        return sorted({one(part.strip()) for part in text.split(",") if part.strip()})
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def data_source(text: str) -> str:
    from support.imdb import DATA_SOURCES, looks_like_path
    if text in DATA_SOURCES or looks_like_path(text):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATA_SOURCES)} or the path of an "
                                     f"aclImdb folder or .tar.gz archive, got {text!r}")


# setting -> (option, argparse keywords). The setting's name is the option's dest.
OPTIONS = {
    "profile": ("--profile", dict(choices=("full", "tiny", "auto"),
                                  help="full, tiny or auto (default: $SMART_BATCHING_PROFILE, else auto)")),
    "data_source": ("--data", dict(type=data_source, help="auto, tfds, download, synthetic or an aclImdb path")),
    "model_name": ("--model", dict(help="a hub name or a local folder (default: the profile's)")),
    "tokenizer_name": ("--tokenizer", dict(help="a tokenizer name or folder, when not the model's own")),
    "max_len": ("--max-len", dict(type=whole_number(2), help="tokens per text, [CLS] and [SEP] included")),
    "batch_size": ("--batch-size", dict(type=whole_number(), help="sequences per batch")),
    "epochs": ("--epochs", dict(type=whole_number())),
    "learning_rate": ("--lr", dict(type=positive_float, help="learning rate")),
    "seed": ("--seed", dict(type=whole_number(0))),
    "pad_to_multiple_of": ("--pad-to-multiple-of", dict(type=whole_number(),
                                                        help="round each batch's width up to a multiple")),
    "train_size": ("--train-size", dict(type=whole_number(allow_all=True), help="a subset, or 'all'")),
    "test_size": ("--test-size", dict(type=whole_number(allow_all=True), help="a subset, or 'all'")),
    "comparison_size": ("--comparison-size", dict(type=whole_number(allow_all=True),
                                                  help="per split where several models train, or 'all'")),
}


def add_settings_options(parser: argparse.ArgumentParser, *settings: str, **defaults) -> None:
    """Add the options of these settings (names of helpers.Settings fields, or 'profile').
    defaults: a setting's value when its option is not given (instead of the profile's)."""
    unknown = [name for name in settings if name not in OPTIONS]
    if unknown:
        raise ValueError(f"no command-line option for setting(s) {unknown}; known: {sorted(OPTIONS)}")
    for name in settings:
        option, keywords = OPTIONS[name]
        parser.add_argument(option, dest=name, default=defaults.get(name, argparse.SUPPRESS), **keywords)


def given_settings(options: argparse.Namespace) -> dict:
    """The settings given on the command line, for helpers.get_settings(**given_settings(options)):
    an option not given is absent, so the profile's value or the environment's stays."""
    return {name: value for name, value in vars(options).items() if name in OPTIONS}
