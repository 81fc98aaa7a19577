"""The paper-trading service."""
