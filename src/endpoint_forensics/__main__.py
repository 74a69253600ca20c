"""``python -m endpoint_forensics``: the ``epf`` command. May import ``cli``."""

from endpoint_forensics.cli.commands import main

main()
