"""The version state machine as data, and its single owner: no stack needed."""

from __future__ import annotations

import re
from pathlib import Path

from shared.lifecycle import BUILDING, LEGACY_NAMES, TRANSITIONS, State, allowed_from, parse_state, stored_names

ROOT = Path(__file__).resolve().parents[2]


def _reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_an_upload_and_deleted_is_final() -> None:
    assert _reachable(State.INGESTING) == set(State)
    assert TRANSITIONS[State.DELETED] == frozenset()
    # Only a building version can fail, and a failed one resumes any stage (a DLQ replay).
    assert {s for s, targets in TRANSITIONS.items() if State.FAILED in targets} == set(BUILDING)
    assert BUILDING <= TRANSITIONS[State.FAILED]


def test_replaced_and_overtaken_are_distinct_lives() -> None:
    # Replaced: was published. Overtaken: verified, never published.
    assert set(allowed_from(State.REPLACED)) == {"PUBLISHED"}
    assert set(allowed_from(State.OVERTAKEN)) == {"VALIDATING"}
    assert State.PUBLISHED in TRANSITIONS[State.REPLACED] and State.PUBLISHED in TRANSITIONS[State.OVERTAKEN]


def test_legacy_superseded_reads_as_replaced_and_is_accepted_by_the_conditions() -> None:
    assert parse_state("SUPERSEDED") == State.REPLACED and parse_state("OVERTAKEN") == State.OVERTAKEN
    assert LEGACY_NAMES == {"SUPERSEDED": State.REPLACED}
    assert stored_names([State.REPLACED]) == ["REPLACED", "SUPERSEDED"]
    assert "SUPERSEDED" in allowed_from(State.DELETED) and "SUPERSEDED" in allowed_from(State.PUBLISHED)
    assert "SUPERSEDED" not in allowed_from(State.REPLACED)


def test_only_the_lifecycle_moves_a_version() -> None:
    """No handler, worker or command writes a state itself: each goes through `VersionLife`."""
    writes = re.compile(r"(?<!life)\.(transition|reset_for_retry|claim_publish|flip_pointer)\(")
    offenders = []
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("cli/**/*.py"), *ROOT.glob("shared/**/*.py")]):
        if path.relative_to(ROOT).as_posix() in ("shared/lifecycle.py", "shared/records.py"):
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if writes.search(line)]
    assert offenders == []
