"""A paged source read from a folder of JSON Lines page files.

Naming: a page file is a ``.jsonl`` file of the folder whose name ends in its page number just
before ``.jsonl``: ``page-0001.jsonl``, ``page-2.jsonl`` and ``devices_003.jsonl`` are pages 1, 2
and 3 (leading zeros do not matter; ``page-0001.jsonl`` is the suggested form, it sorts by name).
Other files (and ``.jsonl`` files without a trailing number) are ignored. The pages must be
numbered 1..N without a gap, each number once: a gap, a page 0 or two files of one number is a
:class:`SourceError` naming the page, raised before any page is read. The highest-numbered file is
the last page. A folder without page files is an error too: a delta with no rows is one empty
``page-0001.jsonl``.

Each non-blank line is one JSON object, a row. A line that is not valid JSON or not an object does
not stop the sync: it is delivered in the page's rows as a :class:`~dbtools.upsert.writers.RowError`
(as ``dbtools ingest`` does with such a line), whose ``row_number`` is its position in the page's
rows (from 1, the number a writer gives a valid row there) and whose reason names the file and the
line, so a writer files it in the reject table with the page's other rejects.

``since`` is not applied: the files are a snapshot, taken by whoever wrote them, and every row in
them is delivered (the session still records ``since`` as the session's start of changes).
``first_page`` skips the files of earlier pages without reading them.

Files are read one page at a time, when the page is asked for, as UTF-8 (a byte-order mark is
allowed).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..upsert.writers import RowError
from .source import Page, SourceError

#: A page file's name: anything, then the page number, then ``.jsonl``.
PAGE_FILE = re.compile(r"^(?P<stem>.*?)(?P<number>\d+)\.jsonl$", re.IGNORECASE)


class JsonLinesSource:
    """Pages read from ``folder``'s page files (see the module docstring for the naming rule)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def describe(self) -> str:
        return f"JSON Lines pages in {self.folder}"

    def page_files(self) -> list[Path]:
        """The page files, page 1 first; a SourceError when the folder's pages are not 1..N."""
        if not self.folder.is_dir():
            raise SourceError(f"{self.describe()}: {self.folder} is not a folder")
        found: dict[int, Path] = {}
        for path in self.folder.iterdir():
            match = PAGE_FILE.match(path.name)
            if match is None or not path.is_file():
                continue
            number = int(match.group("number"))
            if number in found:
                first, second = sorted((found[number].name, path.name))
                raise SourceError(f"{self.describe()}: {first} and {second} are both page {number}; "
                                  "keep one file per page number")
            found[number] = path
        if not found:
            raise SourceError(f"{self.describe()}: no page files (page-0001.jsonl, page-0002.jsonl, ...); "
                              "a delta without rows is one empty page-0001.jsonl")
        if 0 in found:
            raise SourceError(f"{self.describe()}: {found[0].name} is page 0; pages are numbered from 1")
        last = max(found)
        missing = [n for n in range(1, last + 1) if n not in found]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SourceError(f"{self.describe()}: page {missing[0]}{more} is missing: the files run to page {last} "
                              f"({found[last].name}); pages must be numbered 1..N without a gap")
        return [found[n] for n in range(1, last + 1)]

    def pages(self, since: dt.datetime | None = None, first_page: int = 1) -> Iterator[Page]:
        """Pages ``first_page``..N of the folder; ``since`` is not applied (the files are a snapshot)."""
        if first_page < 1:
            raise SourceError(f"{self.describe()}: first page {first_page}: pages are numbered from 1")
        files = self.page_files()
        if first_page > len(files):
            raise SourceError(f"{self.describe()}: page {first_page} was asked for, but the last page is "
                              f"{len(files)} ({files[-1].name})")
        for number in range(first_page, len(files) + 1):
            path = files[number - 1]
            yield Page(number, read_page(path), is_last=number == len(files))


def read_page(path: Path) -> list[dict[str, Any] | RowError]:
    """The rows of one page file; a line that is not a JSON object becomes a RowError."""
    rows: list[dict[str, Any] | RowError] = []
    try:
        with path.open(encoding="utf-8-sig") as stream:
            for line_number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    rows.append(RowError(len(rows) + 1, f"{path.name} line {line_number}: not valid JSON: "
                                                        f"{exc.msg} at column {exc.colno}"))
                    continue
                if not isinstance(row, dict):
                    rows.append(RowError(len(rows) + 1, f"{path.name} line {line_number}: not a JSON object"))
                    continue
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return rows


__all__ = ["JsonLinesSource", "PAGE_FILE", "read_page"]
