"""Sources: one function per dataset, each yielding batches of typed rows for one table."""
