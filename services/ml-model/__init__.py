"""The ml-model service."""
