"""Bad data files stop train.py before training with a message naming the file, the column and
the line (support/data_files.py reads them). Each case runs train.main in this process: it must
return 2, say what was wrong, and leave the output folder without a checkpoint or a model."""
import json

import pytest

import train
from support.data_files import DataFileError, label_ids, read_table


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def good(tmp_path):
    return write(tmp_path / "train.csv", "text,label\nfine film,pos\ndull film,neg\ngreat,pos\n")


def fails(tmp_path, capsys, *options) -> str:
    """train.py's message for these options, once it has stopped before training."""
    out = tmp_path / "out"
    assert train.main([*map(str, options), "--output_dir", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir()), "it wrote something before stopping"
    return capsys.readouterr().err


def test_a_missing_file_is_named_with_its_option(tmp_path, capsys, good):
    err = fails(tmp_path, capsys, "--train_file", good, "--validation_file", tmp_path / "dev.csv")
    assert f"--validation_file {tmp_path / 'dev.csv'}: no such file" in err


def test_an_unknown_format_is_named(tmp_path, capsys):
    err = fails(tmp_path, capsys, "--train_file", write(tmp_path / "train.xlsx", "x"))
    assert "train.xlsx: unknown format '.xlsx'" in err


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_an_empty_file_is_named(tmp_path, capsys, content):
    err = fails(tmp_path, capsys, "--train_file", write(tmp_path / "train.csv", content))
    assert f"{tmp_path / 'train.csv'}: the file is empty" in err


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path, capsys, good):
    err = fails(tmp_path, capsys, "--train_file", good, "--text_column", "review")
    assert "train.csv: no column 'review' (its columns: text, label); name the right one with --text_column" in err
    err = fails(tmp_path, capsys, "--train_file", good, "--text_pair_column", "hypothesis")
    assert "no column 'hypothesis'" in err and "--text_pair_column" in err


def test_an_empty_text_is_named_with_its_line_and_column(tmp_path, capsys):
    # a quoted text over two lines comes first: the line count follows the file, not the rows
    path = write(tmp_path / "train.csv", 'text,label\n"two\nlines",pos\n"  ",neg\nok,pos\n')
    err = fails(tmp_path, capsys, "--train_file", path)
    assert f"{path}, line 4, column 'text': the text is empty" in err


def test_a_label_outside_the_training_labels_is_named(tmp_path, capsys, good):
    dev = write(tmp_path / "dev.csv", "text,label\nok,pos\nmeh,neutral\n")
    err = fails(tmp_path, capsys, "--train_file", good, "--validation_file", dev)
    assert (f"{dev}, line 3, column 'label': label 'neutral' is not one of the training file's labels "
            "['neg', 'pos']") in err


def test_a_label_outside_the_given_label_set_is_named(tmp_path, capsys, good):
    err = fails(tmp_path, capsys, "--train_file", good, "--class_names", "neg,neutral")
    assert f"{good}, line 2, column 'label': label 'pos' is not one of --class_names's labels" in err


def test_a_missing_label_is_named(tmp_path, capsys):
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,\nc,neg\n")
    assert f"{path}, line 3, column 'label': no label" in fails(tmp_path, capsys, "--train_file", path)


def test_a_single_label_is_not_a_classification(tmp_path, capsys):
    path = write(tmp_path / "train.csv", "text,label\na,pos\nb,pos\n")
    assert "only the label 'pos'" in fails(tmp_path, capsys, "--train_file", path)


def test_a_value_that_is_not_a_number_in_a_regression_label_is_named(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", "\n".join(json.dumps(row) for row in [
        dict(text="a", score=0.5), dict(text="b", score="high"), dict(text="c", score=1)]))
    err = fails(tmp_path, capsys, "--train_file", path, "--regression", "--label_column", "score")
    assert f"{path}, line 2, column 'score': 'high' is not a number" in err


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncaf\u00e9,pos\n".encode("latin-1"))
    assert f"{path}: not UTF-8 text" in fails(tmp_path, capsys, "--train_file", path)


def test_a_line_that_is_not_json_is_named(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    assert f"{path}, line 2: not a JSON object" in fails(tmp_path, capsys, "--train_file", path)


def test_a_test_file_needs_no_labels_and_labels_map_as_the_training_files(tmp_path, good):
    train_table = read_table(good, "text", "label")
    test = read_table(write(tmp_path / "test.csv", "text\nsome film\n"), "text", "label",
                      labels_required=False, option="--test_file")
    assert test.labels is None and test.texts == ["some film"]
    assert label_ids(train_table, ["neg", "pos"]) == [1, 0, 1]
    numbers = read_table(write(tmp_path / "n.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "0"}\n'),
                         "text", "label")
    assert label_ids(numbers, ["0", "1"]) == [1, 0]  # JSON's 1 and a CSV's "1" are one label
    with pytest.raises(DataFileError, match="line 2"):
        label_ids(numbers, ["1", "2"])
