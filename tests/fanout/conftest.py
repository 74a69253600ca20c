"""The fanned-out collection against Azurite (blobs and queues) and the emulated tenant."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..azurite import Azurite, AzuriteUnavailable, start_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session. Where it cannot run the tests skip, saying why; CI sets
    AZURITE_REQUIRED=1, and then they fail instead."""
    try:
        found = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteUnavailable as exc:
        if os.environ.get("AZURITE_REQUIRED") == "1":
            pytest.fail(f"Azurite is required here (AZURITE_REQUIRED=1): {exc}")
        pytest.skip(f"Azurite cannot run here: {exc}")
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def container(azurite: Azurite) -> Any:
    """A new Blob container of the test's own."""
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(
        azurite.connection_string,
        f"state-{uuid.uuid4().hex[:12]}",
        connection_verify=str(azurite.ca_bundle),
    )
    client.create_container()
    return client


@pytest.fixture
def queue(azurite: Azurite) -> Any:
    """A new Storage queue of the test's own."""
    return another_queue(azurite)


def another_queue(azurite: Azurite) -> Any:
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(
        azurite.connection_string,
        f"work-{uuid.uuid4().hex[:12]}",
        connection_verify=str(azurite.ca_bundle),
    )
    client.create_queue()
    return client


def make_dirs(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
