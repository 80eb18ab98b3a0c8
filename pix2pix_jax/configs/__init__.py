"""Configurations: `default.get_config()` is the embedded default."""
