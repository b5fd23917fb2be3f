"""README's "Use it on your own data", run as written: both code blocks under that heading, on a
generated CSV (reviews.csv, 200 rows of `text` and `label` = negative / positive).

What the offline run changes, and nothing else: the model name "bert-base-uncased" becomes the
folder of a tiny BERT saved here (the tiny profile's 2-layer model and tokenizer), since no hub can
be reached; and the plain-lists block's `texts` and `labels` (which the README says the reader
has) are the CSV's texts and their class ids. The blocks run in a temporary folder, where their
relative paths (reviews.csv, outputs/...) land.
"""
import csv
import json
import re
from pathlib import Path

import pytest

import helpers
from support.imdb import synthetic_reviews

README = Path(helpers.__file__).resolve().parent / "README.md"
NAMES, ROWS = ["negative", "positive"], 200


def own_data_blocks() -> list[str]:
    section = README.read_text().split("## Use it on your own data\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A tiny model saved where "bert-base-uncased" would come from, and reviews.csv; in tmp_path."""
    tiny = tmp_path / "tiny-bert"
    settings = helpers.get_settings("tiny")
    helpers.load_model(settings, num_labels=2).save_pretrained(tiny)
    helpers.load_tokenizer(settings).save_pretrained(tiny)
    texts, labels = synthetic_reviews(ROWS, seed=5)
    with open(tmp_path / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *((t, NAMES[y]) for t, y in zip(texts, labels))])
    monkeypatch.chdir(tmp_path)
    return dict(tiny=tiny, texts=texts, labels=list(labels))


def as_written(block: str, tiny: Path) -> str:
    assert block.count('"bert-base-uncased"') >= 1, "the block names its model explicitly"
    return block.replace('"bert-base-uncased"', repr(str(tiny)))


def test_the_readme_has_the_datasets_way_first_then_plain_lists():
    blocks = own_data_blocks()
    assert len(blocks) == 2
    assert "load_dataset(\"csv\"" in blocks[0] and "SmartBatchingTrainer" in blocks[0]
    assert "helpers.fine_tune" in blocks[1]
    section = README.read_text().split("## Use it on your own data\n", 1)[1].split("\n## ", 1)[0]
    assert section.count("\n") <= 45


def test_the_datasets_way_runs_as_written(offline, capsys):
    scope = {}
    exec(compile(as_written(own_data_blocks()[0], offline["tiny"]), "README.md", "exec"), scope)
    assert scope["names"] == NAMES
    assert len(scope["data"]["test"]) == ROWS // 5 and len(scope["data"]["train"]) == ROWS - ROWS // 5
    held_out = scope["held_out"]
    # the predictions line up with the held-out rows' own labels, in their order
    assert held_out.label_ids.tolist() == scope["data"]["test"]["label"]
    assert held_out.predictions.shape == (ROWS // 5, 2)
    config = json.loads(Path("outputs/mine/model/config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and re.search(r"'label': '(negative|positive)'", out)


def test_the_plain_lists_way_runs_as_written(offline, capsys):
    scope = dict(texts=offline["texts"], labels=offline["labels"])
    exec(compile(as_written(own_data_blocks()[1], offline["tiny"]), "README.md", "exec"), scope)
    assert scope["settings"].profile == "full"  # the model it names, never the tiny profile's settings
    train, test = scope["train"], scope["test"]
    assert len(test) == ROWS // 5 and sorted([*train, *test]) == list(range(ROWS))  # held out
    assert sum(len(batch["labels"]) for batch in scope["batches"]) == len(test)
    assert Path("outputs/mine-lists/config.json").exists()
    assert "held-out accuracy" in capsys.readouterr().out
