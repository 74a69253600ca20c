"""What a browser shows: the workbook's panels answered from a local workspace, as one
self-contained report file (``epf report fleet``). Reads through ``analytics``; never writes."""
