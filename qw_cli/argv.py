"""A small parser for the original tools' docopt grammar, without docopt.

The original ``qw-manager`` and ``qw-client`` were docopt programs, and scripts call them
with docopt's conventions, which click and argparse do not share: ``-h`` is ``--host``
(help is ``--help`` only), options may come anywhere among the positional words, long
options may be shortened to any unambiguous prefix (``--wor 4``), a short option's value
may be glued on (``-p6380``), and ``--help``/``--version`` win wherever they appear. This
module implements exactly that much; each tool then matches the positional words against
its usage patterns itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


class UsageError(Exception):
    """The command line does not fit the usage; the message says why, in one line."""


@attrs.frozen
class Option:
    """One option of the usage text: ``-h --host=<host>`` is ``Option("--host", "-h", takes_value=True)``."""

    long: str
    short: str | None = None
    takes_value: bool = False


@attrs.frozen
class Parsed:
    """Options given (by long name, without dashes; flags map to ``True``) and positional words."""

    options: dict[str, str | bool]
    words: list[str]


def parse(argv: Sequence[str], options: Sequence[Option]) -> Parsed:
    """Split ``argv`` into options and positional words, as docopt would.

    :raises UsageError: an unknown or ambiguous option, a missing value, an option given
        twice, or a value given to a flag.
    """
    given: dict[str, str | bool] = {}
    words: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            words.extend(args)
            break
        if arg.startswith("--"):
            _long(arg, args, options, given)
        elif arg.startswith("-") and arg != "-":
            _short(arg, args, options, given)
        else:
            words.append(arg)
    return Parsed(given, words)


def _long(arg: str, rest: list[str], options: Sequence[Option], given: dict[str, str | bool]) -> None:
    name, has_value, value = arg.partition("=")
    exact = [o for o in options if o.long == name]
    matches = exact or [o for o in options if o.long.startswith(name)]
    if not matches:
        raise UsageError(f"{name} is not an option")
    if len(matches) > 1:
        raise UsageError(f"{name} is ambiguous: {', '.join(o.long for o in matches)}")
    option = matches[0]
    if not option.takes_value:
        if has_value:
            raise UsageError(f"{option.long} takes no value")
        _store(option, True, given)
        return
    if not has_value:
        if not rest:
            raise UsageError(f"{option.long} requires a value")
        value = rest.pop(0)
    _store(option, value, given)


def _short(arg: str, rest: list[str], options: Sequence[Option], given: dict[str, str | bool]) -> None:
    letters = arg[1:]
    while letters:
        letter, letters = letters[0], letters[1:]
        found = [o for o in options if o.short == f"-{letter}"]
        if not found:
            raise UsageError(f"-{letter} is not an option")
        option = found[0]
        if not option.takes_value:
            _store(option, True, given)
            continue
        if not letters:
            if not rest:
                raise UsageError(f"-{letter} requires a value")
            letters = rest.pop(0)
        _store(option, letters, given)
        return


def _store(option: Option, value: str | bool, given: dict[str, str | bool]) -> None:
    key = option.long.lstrip("-")
    if key in given:
        raise UsageError(f"{option.long} is given twice")
    given[key] = value
