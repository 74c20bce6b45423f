"""Every hand-written mutant in ``tools/mutants.py`` still applies: its text is found
exactly once in its file. A change that rewrites the code a mutant edits must move the
mutant with it, or the mutation run stops at that mutant instead of testing it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_mutants() -> object:
    spec = importlib.util.spec_from_file_location("qw_tools_mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves the class's annotations through it
    spec.loader.exec_module(module)
    return module


MUTANTS = load_mutants().MUTANTS  # type: ignore[attr-defined]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{n}" for n in range(1, len(MUTANTS) + 1)])
def test_each_mutant_edits_text_found_once_in_its_file(mutant: object) -> None:
    source = (ROOT / mutant.path).read_text(encoding="utf-8")  # type: ignore[attr-defined]
    assert source.count(mutant.original) == 1, mutant.rule  # type: ignore[attr-defined]
    assert mutant.original != mutant.mutated  # type: ignore[attr-defined]
