"""Paging the MDE collections that send no next link once ``$top`` is given.

With ``$top`` the MDE collections (``/api/machines``, ``/api/deviceavinfo``, recommendations,
the vulnerabilities catalogue) answer at most ``top`` records and no ``@odata.nextLink``
(defender-apis.md B.0, F), and each call returns at most 10,000 items. So the collector pages
them itself, with ``$top`` and an increasing ``$skip``, and stops when the service repeats
itself (an ignored ``$skip``, a looping next link), which would otherwise never end.
Each page is saved as JSON lines (``ApiClient.save_odata_page``) and read back a record at a
time: a page of 10,000 machines took about 60 MB decoded whole.
May import ``http.client``, ``http.odata_lines`` and ``http.ratelimit``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from endpoint_forensics.http.client import ApiClient, sanitize_url
from endpoint_forensics.http.odata_lines import SavedPage
from endpoint_forensics.http.ratelimit import RateBudget

__all__ = ["iter_skip_pages"]

log = logging.getLogger(__name__)


def iter_skip_pages(
    client: ApiClient,
    url: str,
    *,
    scope: str,
    budget: RateBudget,
    top: int,
    spool: Callable[[int], Path],
    params: Mapping[str, str] | None = None,
    on_repeat: Callable[[str], None] | None = None,
) -> Iterator[SavedPage]:
    """Yield every page of a collection: ``$top=top`` and an increasing ``$skip`` until a page
    is shorter than ``top``. Page ``n`` is saved to ``spool(n)``; the caller removes it once
    read (a page that repeats an earlier one is removed here).

    A next link, when one comes, is followed verbatim instead (it is opaque), to the end of its
    chain. A page with the same records as an earlier one, or a next link already followed,
    ends the walk: nothing is yielded twice, a warning is logged, and ``on_repeat`` is told why
    (the records after it, if any, were not read).

    Raises:
        WireFormatError: an answer that is not an OData object.
        HttpStatusError: any ``request_json`` 4xx.
        AuthError, TransientError, PermanentError: as ``ApiClient.request_json``.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1: {top}")
    base = {k: v for k, v in (params or {}).items() if k not in ("$top", "$skip")}
    walk = _Walk(client=client, limit_name=budget.limit.name, on_repeat=on_repeat)
    next_url: str | None = url
    next_params: dict[str, str] | None = {**base, "$top": str(top)}
    number = 0
    while next_url is not None:
        page = client.save_odata_page(
            next_url, spool(number), scope=scope, budget=budget, params=next_params
        )
        number += 1
        query = f"?{urlencode(next_params, safe='$')}" if next_params else ""
        where = sanitize_url(next_url + query)
        if not walk.first_sight(page):
            page.lines.unlink(missing_ok=True)
            walk.stop(f"GET {where} repeated an earlier page")
            return
        by_skip = next_params is not None
        walk.received += page.count
        link = page.next_link
        if link is not None:
            if link in walk.links_followed:
                yield SavedPage(page.lines, page.count, None)
                walk.stop(f"GET {where} gave a next link already followed")
                return
            walk.links_followed.add(link)
            next_url, next_params = link, None
        elif by_skip and page.count >= top:
            next_url, next_params = url, {**base, "$top": str(top), "$skip": str(walk.received)}
        else:
            next_url = None
        yield page


@dataclass
class _Walk:
    """What one walk has read: records, page digests and next links, to notice the service
    repeating itself."""

    client: ApiClient
    limit_name: str
    on_repeat: Callable[[str], None] | None
    received: int = 0
    pages_seen: set[bytes] = field(default_factory=set)
    links_followed: set[str] = field(default_factory=set)

    def first_sight(self, page: SavedPage) -> bool:
        """Whether no earlier page had these records (and remember them)."""
        digest = page.digest()
        if digest in self.pages_seen:
            return False
        self.pages_seen.add(digest)
        return True

    def stop(self, what: str) -> None:
        """Count, log and report the repeat that ends the walk."""
        self.client.stats.setdefault(self.limit_name, Counter())["repeated_pages"] += 1
        reason = (
            f"{what}: the service ignored $skip or looped its next link; stopped after "
            f"{self.received} records, so the collection may be incomplete"
        )
        log.warning("%s", reason)
        if self.on_repeat is not None:
            self.on_repeat(reason)
