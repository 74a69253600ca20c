"""`epf doctor`: checks of a loaded config against the real services, one finding each.

May import nothing (``doctor.run`` is the entry point).
"""
