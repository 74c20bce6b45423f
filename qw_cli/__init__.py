"""The ``qw`` command, and the original ``qw-manager`` and ``qw-client`` commands.

One module per concern: :mod:`~qw_cli.main` is the ``qw`` group, :mod:`~qw_cli.errors`
turns failures into one ``qw: error:`` line, :mod:`~qw_cli.options` holds the options
commands share (backend, URL, plugins, JSON output, with their ``QW_*`` environment
variables) and :mod:`~qw_cli.output` prints tables and JSON. Each command lives in its own
module (:mod:`~qw_cli.run`, :mod:`~qw_cli.enqueue`, :mod:`~qw_cli.inspect`,
:mod:`~qw_cli.discover`), with :mod:`~qw_cli.jobinput` reading job data and
:mod:`~qw_cli.embedded` serving ``qw run --embedded``. :mod:`~qw_cli.legacy` is the
original ``qw-manager`` and ``qw-client``, parsed by :mod:`~qw_cli.argv` with the
original docopt grammar.

Start-up stays fast: modules import only click and the light parts of ``qw_core`` at
import time; backends, the manager and fakeredis are imported inside the command that
needs them.
"""

from __future__ import annotations
