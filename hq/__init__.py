"""The headquarters service: ingest, receipts, operations page."""
