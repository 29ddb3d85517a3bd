"""Built-in CLI sub-commands (each a plugin module with ``register_commands``)."""
