"""What a manager, worker or queue name may be: each backend's rules, checked by one function.

A name becomes part of whatever a backend stores it in (a Redis key, a column, a subject),
so each backend owns its rules: a :class:`NameRules` value that its
:meth:`~qw_core.broker.Role.check_name` applies with :meth:`NameRules.check`. The checks
every backend shares are written once, here: a name is a non-empty string that shows as
what it is (:func:`misleading_character`: no whitespace, controls, invisible or
direction characters, bytes that were not UTF-8).

:data:`PORTABLE` are the strictest rules of qw's backends (the Redis key schema's): the
in-memory backend applies them, so that a test catches a name a server would refuse, and
a name that passes them works on every backend. A test checks that they stay at least as
strict as each backend's own.
"""

from __future__ import annotations

import unicodedata

import attrs

from qw_core.errors import InvalidName

#: What a character of each Unicode category a name may not hold is, for a message: format
#: characters are zero-width ones (U+200B) and direction marks and overrides (U+202E);
#: a surrogate stands for a byte that was not UTF-8.
_MISLEADING = {
    "Cc": "a control character",
    "Cf": "an invisible or text-direction character",
    "Cs": "a byte that is not UTF-8",
    "Co": "a private-use character",
    "Zs": "whitespace",
    "Zl": "whitespace",
    "Zp": "whitespace",
}


def misleading_character(name: str) -> str | None:
    """The first character of ``name`` that would make it display as something else, or
    break a key: whitespace, controls, invisible and direction characters (described, as
    ``"U+202E (an invisible or text-direction character)"``); ``None`` if there is none."""
    for char in name:
        kind = "whitespace" if char.isspace() else _MISLEADING.get(unicodedata.category(char))
        if kind is not None:
            return f"U+{ord(char):04X} ({kind})"
    return None


@attrs.frozen(kw_only=True)
class NameRules:
    """One backend's rules for names, beyond those every backend shares.

    :param max_length: the longest name accepted, in characters.
    :param forbidden: characters a name may not hold, each with what it would break
        (``{":": "its Redis keys"}``).
    :param reserved: names that would read as the storage's own words (``all``, ``job``).
    :param reserved_by: what reserves them, for a message (``"the key schema"``).
    """

    max_length: int
    forbidden: dict[str, str] = attrs.field(factory=dict)
    reserved: frozenset[str] = frozenset()
    reserved_by: str = "the backend"

    def check(self, name: str) -> str:
        """Return ``name`` if these rules (and the shared ones) accept it.

        :raises InvalidName: with a one-line reason.
        """
        if not isinstance(name, str):
            raise InvalidName(f"a name must be a string, not {type(name).__name__}")
        if not name:
            raise InvalidName("a name must not be empty")
        if len(name) > self.max_length:
            raise InvalidName(
                f"name {name[:20]!r}... is {len(name)} characters long; the limit is {self.max_length}"
            )
        if name in self.reserved:
            raise InvalidName(f"name {name!r} is reserved by {self.reserved_by} ({name}:jobs, ...)")
        for char, breaks in self.forbidden.items():
            if char in name:
                raise InvalidName(f"name {name!r} contains {char!r}, which would break {breaks}")
        bad = misleading_character(name)
        if bad is not None:
            raise InvalidName(f"name {name!r} contains {bad}, which would make it show as another name")
        return name

    def at_least_as_strict_as(self, other: NameRules) -> bool:
        """Whether every name these rules accept, ``other`` accepts too."""
        return (
            self.max_length <= other.max_length
            and set(other.forbidden) <= set(self.forbidden)
            and other.reserved <= self.reserved
        )


#: The strictest rules of qw's backends (the Redis key schema's), which the in-memory
#: backend applies: a name they accept works on every backend.
PORTABLE = NameRules(
    max_length=200,
    forbidden={":": "a key schema (':' separates the parts of a key)"},
    reserved=frozenset({"all", "job", "qw"}),
    reserved_by="the key schema",
)
