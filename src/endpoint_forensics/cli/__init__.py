"""The `epf` command line: parse, call one library function, render.

May import ``cli.commands`` (which imports the rest).
"""

from endpoint_forensics.cli.commands import app, main

__all__ = ["app", "main"]
