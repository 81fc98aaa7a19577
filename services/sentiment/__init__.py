"""The sentiment service."""
