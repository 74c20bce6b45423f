"""Optional plugins that ship with qw-core but load only when asked for (``-p``).

Each may need an optional extra (``pip install 'qw-core[prometheus]'``); none is imported
by qw unless a user names it.
"""
