"""Sinks: destinations for record batches, one interface (``contracts.Sink``)."""
