"""Reading and writing data files, line by line, keeping every line number.

Reading never validates content; it only turns bytes into ``Row``s (a parsed object, or the
reason it could not be parsed) so that validation can report every problem with its line.
A UTF-8 BOM and CRLF line endings are accepted.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from tunesmith.errors import DataError

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Row:
    """One record of a file: ``value`` when it parsed, else ``error`` (code, message)."""

    line: int
    value: Any = None
    error: tuple[str, str] | None = None
    raw: str | None = None  # the line as text, kept for rows that did not parse


def is_csv(path: Path) -> bool:
    return path.suffix.lower() in {".csv", ".tsv"}


def read_rows(path: Path) -> Iterator[Row]:
    """Every non-blank record of a JSONL or CSV file, with its 1-based line number."""
    yield from (_read_csv(path) if is_csv(path) else _read_jsonl(path))


def json_lines(path: str | Path, what: str = "") -> Iterator[tuple[str, Any]]:
    """(``"file:line"``, parsed value) for each non-blank line of a JSONL file, for readers that
    stop at the first bad line: a missing file or a line that is not JSON is a DataError naming
    it (``what``, e.g. ``"--human "``, prefixes the file's name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}{path}: no such file")
    for row in _read_jsonl(path):
        where = f"{path}:{row.line}"
        if row.error:
            raise DataError(f"{where}: not JSON ({row.error[1]})" if row.error[0] == "invalid_json"
                            else f"{where}: {row.error[1]}")
        yield where, row.value


def _decoded_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, decode error) for each line; undecodable bytes are replaced in the text."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            raw = raw.rstrip(b"\r\n")
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield number, raw.decode("utf-8", errors="replace"), f"invalid UTF-8 at byte {e.start}"


def _read_jsonl(path: Path) -> Iterator[Row]:
    for number, text, decode_error in _decoded_lines(path):
        if decode_error:
            yield Row(number, error=("invalid_utf8", decode_error), raw=text)
            continue
        if not text.strip():
            continue
        try:
            yield Row(number, value=json.loads(text))
        except json.JSONDecodeError as e:
            yield Row(number, error=("invalid_json", f"invalid JSON: {e.msg} (column {e.colno})"), raw=text)


def _read_csv(path: Path) -> Iterator[Row]:
    # Decode line by line first so a bad byte is reported on its own line and the rest of the
    # file is still read; csv then parses the text (quoted fields may span lines).
    lines: list[str] = []
    for number, text, decode_error in _decoded_lines(path):
        if decode_error:
            yield Row(number, error=("invalid_utf8", decode_error), raw=text)
            lines.append("")
        else:
            lines.append(text)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    for cells in reader:
        line = start
        start = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if len(cells) != len(header):
            yield Row(line, error=("wrong_column_count", f"expected {len(header)} columns ({', '.join(header)}), found {len(cells)}"),
                      raw=",".join(cells))
            continue
        yield Row(line, value=dict(zip(header, cells)))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSONL (UTF-8, no ASCII escaping); returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_csv(path: Path, records: Iterable[dict[str, Any]], fields: list[str]) -> int:
    """Write records as CSV (TSV for a ``.tsv`` path) with a header of ``fields``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore",
                                delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
            count += 1
    return count
