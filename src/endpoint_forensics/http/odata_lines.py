"""An OData page's ``value`` records, from its body on disk to JSON lines, one record at a time
(ijson's C parser): a 50,000-record export page (B.5.2, about 35 MB) is never decoded whole,
which took some ten times its size in Python objects. Imports nothing of ours."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ijson
import orjson

__all__ = ["NotAnObject", "SavedPage", "page_to_lines"]


@dataclass(frozen=True)
class SavedPage:
    """An OData page saved as JSON lines: its records are read back one at a time."""

    lines: Path
    count: int  # records
    next_link: str | None

    def records(self) -> Iterator[Any]:
        with self.lines.open("rb") as fh:
            for line in fh:
                yield orjson.loads(line)

    def digest(self) -> bytes:
        """A digest of the records: two pages with the same records have the same one."""
        found = hashlib.blake2b(digest_size=16)
        with self.lines.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                found.update(chunk)
        return found.digest()


class NotAnObject(ValueError):
    """The body is JSON, but not an object: its first token is given."""


def page_to_lines(body: Path, lines: Path) -> tuple[str | None, int]:
    """Write the records of the OData page in ``body`` to ``lines``, a JSON value a line as
    orjson writes it (a ``value`` that is not an array gives none, as ``get_odata_page``
    reads it), and return the page's ``@odata.nextLink`` and the records written.

    Raises:
        NotAnObject: the body is JSON but not an object.
        ijson.JSONError: the body is empty, cut short or not JSON (nothing is written).
    """
    with body.open("rb") as fh:
        _, first, _ = next(ijson.parse(fh), ("", None, None))
    if first is None:
        raise ijson.IncompleteJSONError("an empty body")
    if first != "start_map":
        raise NotAnObject(first)
    with body.open("rb") as fh:
        # This pass reads the whole body (in C) and finds the link wherever the service put
        # it: a page cut short is refused before a record of it is written.
        links = list(ijson.items(fh, "@odata.nextLink"))
    link = links[0] if links and isinstance(links[0], str) and links[0] else None
    written = 0
    with body.open("rb") as fh, lines.open("wb") as out:
        for record in ijson.items(fh, "value.item", use_float=True):
            out.write(orjson.dumps(record) + b"\n")
            written += 1
    return link, written
