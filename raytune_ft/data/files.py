"""Reading local data files: CSV, TSV (the original GLUE layout too), JSON Lines, Parquet.

Each reader returns a Table: the columns asked for, as lists, plus where each row came from,
so that a later check can point at the exact line. What a user has to fix in the file
itself (not UTF-8, a row with too few fields, a line that is not JSON, not Parquet at all)
is a ConfigError naming the file and the line.

Why the standard library's csv module and not pandas: it reports the line of every row, it
never guesses types (a label "1" stays "1", a sentence "NA" stays "NA"), and with quoting
off it reads the GLUE files, whose sentences contain double quotes that are not quoting.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from raytune_ft.errors import ConfigError

# File suffix -> format. TSV fields are taken literally (no quoting), as GLUE writes them;
# CSV follows the usual quoting rules ("a, b" is one field).
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass
class Table:
    source: str  # the file (or hub data set) the rows came from, for messages
    column_names: list[str]  # every column the source has
    columns: dict[str, list]  # the columns asked for that it has
    line_numbers: list[int] | None = None  # each row's line in a text file; None: count rows from 1
    num_rows: int | None = None  # needed only where there are no line numbers

    def __len__(self) -> int:
        return len(self.line_numbers) if self.line_numbers is not None else self.num_rows or 0

    def where(self, row: int) -> str:
        """`file:line` of a row, or `source row N` where there are no lines."""
        if self.line_numbers is not None:
            return f"{self.source}:{self.line_numbers[row]}"
        return f"{self.source} row {row + 1}"


def file_format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def read_table(path: Path, keep: Sequence[str], headerless_names: Sequence[str] | None = None) -> Table:
    """The columns `keep` (those the file has) of a CSV, TSV, JSON Lines or Parquet file.

    headerless_names: names for a delimited file whose first line is data, not a header.
    """
    kind = file_format(path)
    if kind in ("csv", "tsv"):
        return _read_delimited(
            path,
            keep,
            delimiter="," if kind == "csv" else "\t",
            quoting=csv.QUOTE_MINIMAL if kind == "csv" else csv.QUOTE_NONE,
            headerless_names=headerless_names,
        )
    if kind == "jsonl":
        return _read_json_lines(path, keep)
    if kind == "parquet":
        return _read_parquet(path, keep)
    raise ConfigError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(FORMATS)}")


def _utf8_lines(path: Path) -> Iterator[str]:
    """The file's lines, decoded one at a time so that a bad byte is reported with its line.

    Line endings are kept (CRLF too): the csv module needs them to read quoted fields that
    span lines. A byte-order mark at the start is dropped.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            yield line.removeprefix("\ufeff") if number == 1 else line


def _read_delimited(path, keep, delimiter, quoting, headerless_names) -> Table:
    reader = csv.reader(_utf8_lines(path), delimiter=delimiter, quoting=quoting)
    name = "CSV" if delimiter == "," else "TSV"
    try:
        if headerless_names:
            header = list(headerless_names)
        else:
            first = next((row for row in reader if row), None)
            if first is None:
                return Table(str(path), [], {}, [])
            header = [column.strip() for column in first]
        wanted = {column: header.index(column) for column in keep if column in header}
        columns: dict[str, list] = {column: [] for column in wanted}
        line_numbers: list[int] = []
        for row in reader:
            if not row:  # a blank line, often the last one
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{path}:{reader.line_num}: {len(row)} field{'s' * (len(row) != 1)} where the "
                    f"{'header' if not headerless_names else 'layout'} "
                    f"has {len(header)} ({', '.join(header)}); fix the row (a missing or extra "
                    f"{'comma' if delimiter == ',' else 'tab'}?) or remove it"
                )
            for column, position in wanted.items():
                columns[column].append(row[position])
            line_numbers.append(reader.line_num)
    except csv.Error as err:
        raise ConfigError(f"{path}:{reader.line_num}: not readable as {name} ({err}); fix the row") from None
    return Table(str(path), header, columns, line_numbers)


def _read_json_lines(path: Path, keep: Sequence[str]) -> Table:
    column_names: list[str] | None = None
    columns: dict[str, list] = {}
    line_numbers: list[int] = []
    for number, line in enumerate(_utf8_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path}:{number}: not valid JSON ({err.msg}); write one JSON object per line (JSON Lines)"
            ) from None
        if not isinstance(record, dict):
            raise ConfigError(
                f"{path}:{number}: a JSON {type(record).__name__}, not an object; write one JSON object per line"
            )
        if column_names is None:  # the first record names the columns, as a header would
            column_names = list(record)
            columns = {name: [] for name in keep if name in record}
        for name, values in columns.items():
            if name not in record:
                raise ConfigError(
                    f"{path}:{number}: no field {name!r} in this row (the first row has it); add it or remove the row"
                )
            values.append(record[name])
        line_numbers.append(number)
    return Table(str(path), column_names or [], columns, line_numbers)


def _read_parquet(path: Path, keep: Sequence[str]) -> Table:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pyarrow.ArrowInvalid, OSError) as err:
        raise ConfigError(
            f"{path}: not a Parquet file ({str(err).splitlines()[0][:120]}); check the file or its suffix"
        ) from None
    column_names = list(parquet.schema_arrow.names)
    present = [name for name in keep if name in column_names]
    table = parquet.read(columns=present)
    columns = {name: table.column(name).to_pylist() for name in present}
    return Table(str(path), column_names, columns, num_rows=parquet.metadata.num_rows)
