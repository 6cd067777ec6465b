"""Built-in config sources: layers between ``config.toml`` and the environment."""
