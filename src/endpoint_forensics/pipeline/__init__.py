"""One collection run: the plan of what is due (``plan``), typed checkpoints (``checkpoints``),
the run itself (``run``), the run log (``runlog``) and the schedule (``scheduler``).

May import ``sources``, ``sinks`` (the scheduler opens them), ``transforms``, ``http``,
``identity``, ``config``, ``contracts``, ``tables``, ``errors`` and ``runtime``.
"""
