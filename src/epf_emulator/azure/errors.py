"""ARM's error answer, shared by the emulated Resource Manager's resources.

Owns ``ArmRefusal``: the status, code and message of an ARM error (``{"error": {"code",
"message"}}`` on the wire, written by ``azure.resource_manager``).

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

__all__ = ["ArmRefusal"]


class ArmRefusal(Exception):
    """An ARM error answer: status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
