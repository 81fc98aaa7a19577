"""The alerts process: incidents from the suite's events and polls, delivered to people."""
