"""The state store in a Blob Storage container (Azure Functions: instances share no disk).

``<prefix>/<file>`` per stored file; a lease is a blob lease on ``leases/<name>`` (60 s,
renewed by a thread every 20 s while held), so a worker that dies loses it within a minute
and another takes the unit over. The lease blob's content is the lease's record (a budget's
calls), written with the lease id, so only the holder can change it. Before the checkpoints
are pushed the lease is renewed: a worker that lost its lease (it stalled past the renewal)
stops there, and its unit is collected again by the one that took it over.

Uses ``azure-storage-blob`` (the ``functions`` extra), imported when a store is made.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from endpoint_forensics.state.store import LeaseLost, _rank, digest, files_in_push_order

__all__ = ["BlobStateStore"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # the longest fixed lease Blob Storage grants (15-60 s, or infinite)


class _BlobLease:
    def __init__(self, name: str, blob: Any, lease: Any, record: bytes, seconds: int) -> None:
        self.name = name
        self.record = record
        self._blob = blob
        self._lease = lease
        self._lost: Exception | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_until_released, args=(seconds / 3,), daemon=True
        )
        self._renewer.start()

    def _renew_until_released(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._lease.renew()
            except Exception as exc:  # expired, broken, or the service unreachable
                self._lost = exc
                return

    def keep(self) -> None:
        if self._lost is None:
            try:
                self._lease.renew()
            except Exception as exc:
                self._lost = exc
        if self._lost is not None:
            raise LeaseLost(
                f"the lease {self.name!r} was lost ({type(self._lost).__name__}): another"
                " worker may hold the unit now, so this one saves nothing more"
            )

    def release(self, record: bytes | None = None) -> None:
        self._stop.set()
        self._renewer.join()
        try:
            if record is not None and self._lost is None:
                self._blob.upload_blob(record, overwrite=True, lease=self._lease)
            self._lease.release()
        except Exception as exc:
            # An expired lease frees itself: nothing to give back. The record is lost, so the
            # next holder counts fewer calls than were made: logged, as it may wait less.
            log.warning("lease %s: not released cleanly (%s)", self.name, type(exc).__name__)


class BlobStateStore:
    """State in one Blob container (``container``: an ``azure.storage.blob.ContainerClient``)."""

    def __init__(self, container: Any, *, lease_seconds: int = LEASE_SECONDS) -> None:
        self.container = container
        self.lease_seconds = lease_seconds
        # What each prefix held when pulled: a push writes only what changed since.
        self._pulled: dict[str, dict[str, str]] = {}

    @classmethod
    def from_url(cls, container_url: str, credential: Any = None, **options: Any) -> BlobStateStore:
        """The container at ``container_url`` (``https://<account>.blob.core.windows.net/<c>``),
        with ``credential`` (a managed identity's, on Functions)."""
        from azure.storage.blob import ContainerClient

        return cls(ContainerClient.from_container_url(container_url, credential, **options))

    def take(self, name: str) -> _BlobLease | None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self.container.get_blob_client(f"leases/{name}")
        for _ in range(2):
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_seconds)
                break
            except ResourceNotFoundError:
                try:  # the first holder ever: the lease blob is made, empty
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass
            except ResourceExistsError:  # LeaseAlreadyPresent: another holder has it
                return None
        else:
            return None
        record = blob.download_blob(lease=lease).readall()
        return _BlobLease(name, blob, lease, bytes(record), self.lease_seconds)

    def pull(self, prefix: str, into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        pulled: dict[str, str] = {}
        for item in self.container.list_blobs(name_starts_with=f"{prefix}/"):
            name = item.name[len(prefix) + 1 :]
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as fh:
                self.container.get_blob_client(item.name).download_blob().readinto(fh)
            pulled[name] = digest(target)
        self._pulled[prefix] = pulled

    def push(self, prefix: str, source: Path, *, under: Any) -> None:
        before = self._pulled.get(prefix)
        if before is None:  # never pulled here: what is stored, by name only
            before = {
                i.name[len(prefix) + 1 :]: ""
                for i in self.container.list_blobs(name_starts_with=f"{prefix}/")
            }
        keep = files_in_push_order(source)
        for name in keep:
            now = digest(source / name)
            if before.get(name) == now:
                continue
            if _rank(name) == 2:
                under.keep()  # the checkpoints only while the unit is still ours
            with (source / name).open("rb") as fh:
                self.container.get_blob_client(f"{prefix}/{name}").upload_blob(fh, overwrite=True)
            before[name] = now
        for name in set(before) - set(keep):
            self.container.get_blob_client(f"{prefix}/{name}").delete_blob()
            del before[name]
        self._pulled[prefix] = before

    def read(self, name: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self.container.get_blob_client(name).download_blob().readall())
        except ResourceNotFoundError:
            return None
