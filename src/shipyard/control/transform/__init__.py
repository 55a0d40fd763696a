"""Batch transform: the CreateTransformJob request, the driver that feeds serving containers
records, record splitting and payloads, JSONPath filters."""
