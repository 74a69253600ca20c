"""An OData page's ``value`` records, from its body on disk to JSON lines, one record at a time
(ijson's C parser): a 50,000-record export page (B.5.2, about 35 MB) is never decoded whole,
which took some ten times its size in Python objects. Imports nothing of ours."""

from __future__ import annotations

from pathlib import Path

import ijson
import orjson

__all__ = ["NotAnObject", "page_to_lines"]


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
