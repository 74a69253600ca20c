"""HTTP to the remote services: the client, its retry policy, rate budgets, TLS trust and paging.

May import nothing (its modules are imported by name).
"""
