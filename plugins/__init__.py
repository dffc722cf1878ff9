"""Built-in plugins: each module is a plugin, registered through the entry-point group `tuneyard`."""
