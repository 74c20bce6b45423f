"""qw's built-in behaviour, each an ordinary plugin on the public hooks.

They are listed in :data:`qw_core.plugins.DEFAULT_PLUGINS` and can be blocked by name.
"""
