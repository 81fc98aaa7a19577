"""The market-data service."""
