"""What a paged source is: pages of rows, numbered from 1, the last one marked.

A source is anything with ``pages(since, first_page)``: it yields :class:`Page` objects for the
rows modified since ``since`` (a naive UTC datetime), starting at page ``first_page`` (a resumed
session asks for the first page it has not received), in page order, and stops after the page
whose ``is_last`` is true. It may stop earlier by raising :class:`SourceError` (a refused
credential, a spent error budget, a page limit reached): the session then stays open and
resumable, and production is untouched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import DbToolsError

if TYPE_CHECKING:
    from ..upsert.writers import RowError


class SourceError(DbToolsError):
    """A source cannot deliver its next page; the message says why and what to do."""


@dataclass(frozen=True)
class Page:
    """One page of a source: its number (1, 2, ...), its rows, and whether it is the last.

    A row is a mapping from field name to value. An item of ``rows`` may instead be a
    :class:`~dbtools.upsert.writers.RowError`: a row the source received but could not read (a line
    that is not a JSON object), so that the session rejects it (a writer files it in the reject
    table) and goes on. Its ``row_number`` is its position in ``rows``, from 1, the number a writer
    gives a valid row in that position; its reason names where it came from.
    """

    number: int
    rows: Sequence[Mapping[str, Any] | RowError]
    is_last: bool


@runtime_checkable
class PagedSource(Protocol):
    """A paged source of rows (see the module docstring)."""

    def pages(self, since: dt.datetime, first_page: int = 1) -> Iterator[Page]:
        ...

    def describe(self) -> str:
        """A short text naming the source, for progress and errors (no credentials)."""
        ...
