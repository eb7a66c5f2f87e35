"""Built-in plugins: fslm-core's own parts, registered through the same hooks as external plugins."""
