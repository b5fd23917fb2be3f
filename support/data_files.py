"""Labelled texts from a user's own CSV or JSON-lines file, checked before any training.

    table = read_table("train.csv", text_column="text", label_column="label")
    names = label_names(table)                       # the label set, sorted ("0" < "1" < "10")
    ids = label_ids(table, names)                    # each row's class id, in the file's order

A file is read whole, with the standard library, so that every error can name the file, the
column and the line it is on (the header is line 1 of a CSV): a missing file, an unknown format,
an empty file, a missing column, an empty text, a label outside the label set, a value that is not
a number in a regression label column. Nothing is skipped or repaired: one bad row stops the run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}


class DataFileError(ValueError):
    """Bad input in a data file; the message names the file, and the column and line if any."""


@dataclasses.dataclass
class Table:
    """The columns train.py needs from one file, row by row, with the line each row starts on."""

    path: Path
    texts: list[str]
    pairs: list[str] | None  # the second text of a pair, when a pair column is named
    labels: list | None  # raw values (a CSV's are strings); None when the file has no label column
    lines: list[int]
    label_column: str


def _rows(path: Path):
    """(line, row dict) for every row, and the column names."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataFileError(f"{path}: unknown format {path.suffix!r}; expected one of "
                            f"{', '.join(FORMATS)} (CSV, tab-separated or JSON lines)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFileError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    if kind == "json":
        rows = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise DataFileError(f"{path}, line {line}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{path}, line {line}: a JSON {type(row).__name__}, not an object")
            rows.append((line, row))
        columns = list(dict.fromkeys(key for _, row in rows for key in row))
        return rows, columns
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter="\t" if kind == "tsv" else ",")
    rows, start = [], 2
    for row in reader:
        if None in row:
            raise DataFileError(f"{path}, line {start}: more values than the header's "
                                f"{len(reader.fieldnames)} columns")
        rows.append((start, row))
        start = reader.line_num + 1
    return rows, list(reader.fieldnames or [])


def read_table(path, text_column: str, label_column: str, pair_column: str | None = None,
               labels_required: bool = True, option: str = "--train_file") -> Table:
    """The file's texts (and second texts, and labels), once every one is present and not empty."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{option} {path}: no such file")
    rows, columns = _rows(path)
    if not rows:
        raise DataFileError(f"{path}: the file is empty (no rows{' under its header' if columns else ''})")
    wanted = [(text_column, "--text_column"), (pair_column, "--text_pair_column")]
    if labels_required or label_column in columns:
        wanted.append((label_column, "--label_column"))
    for column, name in wanted:
        if column is not None and column not in columns:
            raise DataFileError(f"{path}: no column {column!r} (its columns: {', '.join(columns)}); "
                                f"name the right one with {name}")
    for column in filter(None, (text_column, pair_column)):
        for line, row in rows:
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                what = "missing" if value is None else "empty" if isinstance(value, str) else \
                    f"a {type(value).__name__}, not a text"
                raise DataFileError(f"{path}, line {line}, column {column!r}: the text is {what}")
    labels = None
    if label_column in columns:
        labels = [row.get(label_column) for _, row in rows]
        for (line, _), value in zip(rows, labels):
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataFileError(f"{path}, line {line}, column {label_column!r}: no label")
    return Table(path, [row[text_column] for _, row in rows],
                 [row[pair_column] for _, row in rows] if pair_column else None, labels,
                 [line for line, _ in rows], label_column)


def _name(value) -> str:
    """A label as the label set holds it: JSON's 1 and a CSV's "1" are the same label."""
    return str(value).strip()


def label_names(table: Table) -> list[str]:
    """The labels that occur, sorted: as numbers when every one is a whole number, else as text."""
    names = sorted({_name(v) for v in table.labels})
    if all(n.lstrip("-").isdigit() for n in names):
        names.sort(key=int)
    return names


def label_ids(table: Table, names: list[str], given_by: str = "the training file") -> list[int]:
    """Each row's index in names; a label outside the set names its file, column and line."""
    ids = {name: i for i, name in enumerate(names)}
    out = []
    for line, value in zip(table.lines, table.labels):
        if _name(value) not in ids:
            raise DataFileError(f"{table.path}, line {line}, column {table.label_column!r}: label "
                                f"{_name(value)!r} is not one of {given_by}'s labels {names}")
        out.append(ids[_name(value)])
    return out


def regression_targets(table: Table) -> list[float]:
    """Each row's label as a float; anything but a finite number names its file, column and line."""
    out = []
    for line, value in zip(table.lines, table.labels):
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise DataFileError(f"{table.path}, line {line}, column {table.label_column!r}: "
                                f"{value!r} is not a number (a regression label must be one)")
        out.append(number)
    return out
