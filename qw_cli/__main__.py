"""``python -m qw_cli``: the ``qw`` command without its console script (e.g. in a venv
where qw-core is importable but not installed)."""

from __future__ import annotations

from qw_cli.main import main

if __name__ == "__main__":
    main(prog_name="qw")
