"""Built-in plugins: fslm-core's own parts, registered through the same hooks as external plugins.

Their registration hooks are ``tryfirst``, so a name they register keeps its
built-in meaning unless a plugin asks to go first (``tryfirst``) too.
"""
