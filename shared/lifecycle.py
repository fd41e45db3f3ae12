"""The one owner of a version's life: its states, the transitions allowed between them, and the
conditional write that makes each one. Handlers, the worker loop and the CLI move a version only
through `VersionLife`; `shared/records.py` is the DynamoDB adapter that performs the writes.

```
INGESTING ─► COMPUTING ─► LOADING ─► VALIDATING ─► PUBLISHED ─► REPLACED ─► DELETED
                  └──────────────────────►┘  │          ▲            │
                                             ├► OVERTAKEN ─► DELETED  └ rollback ┘
   any building state ─► FAILED ─► (a replay) back to the stage that retries it, or DELETED
```

| state | meaning | entered by (its condition) |
| --- | --- | --- |
| INGESTING | the upload is being validated and split | `create`: the version item does not exist |
| COMPUTING | chunks are being computed | `record_plan`: state INGESTING |
| LOADING | views are being bulk-loaded | `start_loading`: state COMPUTING |
| VALIDATING | every (unit, view) is loaded; the publisher verifies | `claim_publish`: COMPUTING or LOADING and unclaimed, or claimed by the same claimant |
| PUBLISHED | the dataset's pointer names it: readers see it | `make_current`: the pointer's generation as read, then state VALIDATING, REPLACED or OVERTAKEN |
| REPLACED | was published; another version became current; still readable with `?version=` until gc | `make_current` of another version: state PUBLISHED |
| OVERTAKEN | verified, never published: a newer upload was published first | `overtake`: state VALIDATING |
| FAILED | stopped with a reason; a DLQ replay resumes it | `fail`: any building state |
| DELETED | its tables and staging files are gone (gc) | `delete`: REPLACED, OVERTAKEN or FAILED |

Records written before REPLACED and OVERTAKEN existed say SUPERSEDED: they read as REPLACED, and
the conditions of REPLACED's transitions accept the old name too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import ConditionFailed, NotFound

if TYPE_CHECKING:
    from shared.records import DatasetRecord, VersionRecord


class State(StrEnum):
    """The state of one version (see the module's table)."""

    INGESTING = "INGESTING"
    COMPUTING = "COMPUTING"
    LOADING = "LOADING"
    VALIDATING = "VALIDATING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    REPLACED = "REPLACED"
    OVERTAKEN = "OVERTAKEN"
    DELETED = "DELETED"


BUILDING = frozenset({State.INGESTING, State.COMPUTING, State.LOADING, State.VALIDATING})
# FAILED may go back to a building state: a DLQ replay retries once the cause is gone.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.INGESTING: frozenset({State.COMPUTING, State.FAILED}),
    State.COMPUTING: frozenset({State.LOADING, State.VALIDATING, State.FAILED}),
    State.LOADING: frozenset({State.VALIDATING, State.FAILED}),
    State.VALIDATING: frozenset({State.PUBLISHED, State.FAILED, State.OVERTAKEN}),
    State.PUBLISHED: frozenset({State.REPLACED}),
    State.REPLACED: frozenset({State.PUBLISHED, State.DELETED}),
    State.OVERTAKEN: frozenset({State.PUBLISHED, State.DELETED}),
    State.FAILED: frozenset({State.INGESTING, State.COMPUTING, State.LOADING, State.VALIDATING, State.DELETED}),
    State.DELETED: frozenset(),
}
# States a version may be made current from: verified, and its tables were there when it was.
CURRENT_CANDIDATES = frozenset({State.VALIDATING, State.REPLACED, State.OVERTAKEN, State.PUBLISHED})
# States an operator may roll back to: published before, or verified and overtaken; tables kept.
ROLLBACK_TARGETS = frozenset({State.REPLACED, State.OVERTAKEN})
# States a reader may see: verified and flipped to once (REPLACED: its tables stay until gc marks it DELETED).
READABLE_STATES = frozenset({State.PUBLISHED, State.REPLACED})
# Names earlier releases stored, and the state each means now.
LEGACY_NAMES: dict[str, State] = {"SUPERSEDED": State.REPLACED}


def parse_state(name: str) -> State:
    """The state a stored name means (legacy names included)."""
    return LEGACY_NAMES.get(name) or State(name)


def stored_names(states: Iterable[State]) -> list[str]:
    """The names a stored item in one of `states` may carry (legacy names included), for conditions."""
    wanted = set(states)
    names = [s.value for s in wanted]
    names += [legacy for legacy, state in LEGACY_NAMES.items() if state in wanted]
    return sorted(set(names))


def allowed_from(to: State) -> list[str]:
    """The stored names of the states from which `to` may be entered."""
    return stored_names(s for s, targets in TRANSITIONS.items() if to in targets)


class VersionStore(Protocol):
    """The conditional writes `VersionLife` needs (`shared.records.Records` on DynamoDB)."""

    async def create_version(self, record: VersionRecord) -> tuple[VersionRecord, bool]:
        """Write a new version record unless one exists; (the stored record, whether it was created)."""

    async def get_version(self, dataset_id: str, version_id: str) -> VersionRecord:
        """A version's record (`NotFound` when there is none)."""

    async def transition(
        self, dataset_id: str, version_id: str, to: State, *, error: str | None = None, extra: dict[str, Any] | None = None
    ) -> VersionRecord | None:
        """Move a version to `to` if its stored state allows it; the new record, or None when it did not."""

    async def reset_for_retry(self, dataset_id: str, version_id: str, to: State) -> VersionRecord | None:
        """Put a FAILED version back in `to` for a replay; the new record, or None when it was not FAILED."""

    async def claim_publish(self, dataset_id: str, version_id: str, claimant: str, *, to: State, from_states: list[str]) -> bool:
        """Claim the right to ask for publication (one claimant wins) and move the version to `to`."""

    async def get_dataset(self, dataset_id: str, *, consistent: bool = True) -> DatasetRecord:
        """The dataset's pointer record (`NotFound` if it was never published)."""

    async def flip_pointer(
        self, dataset_id: str, version_id: str, *, upload_order: str, seen: DatasetRecord | None, previous: str | None
    ) -> bool:
        """Point the dataset at `version_id` if its pointer is still the `seen` one; whether it flipped."""


class VersionLife:
    """Moves versions through their states, each move one conditional write (see the module's table)."""

    def __init__(self, store: VersionStore) -> None:
        self.store = store

    async def create(self, record: VersionRecord) -> VersionRecord:
        """The version item as stored: created INGESTING, or the one an earlier delivery created."""
        stored, _ = await self.store.create_version(dataclasses.replace(record, state=State.INGESTING))
        return stored

    async def admit(self, version: VersionRecord, stage: State, accepts: frozenset[State] = BUILDING) -> VersionRecord | None:
        """The gate of a handler that does `stage`'s work: the version to work on, None when the
        work is no longer wanted (published, overtaken or deleted meanwhile: a late duplicate).

        A FAILED version is a DLQ replay: it goes back to `stage`, its error and publish claim cleared.
        """
        if version.state == State.FAILED:
            reset = await self.store.reset_for_retry(version.dataset_id, version.version_id, stage)
            # Lost the race to another replay of the same version: it is in `stage` all the same.
            return reset or dataclasses.replace(version, state=stage, error=None)
        return version if version.state in accepts else None

    async def begin(self, dataset_id: str, version_id: str, stage: State, accepts: frozenset[State] = BUILDING) -> VersionRecord | None:
        """`admit` the version as stored now (`NotFound`: a message about a version never created)."""
        return await self.admit(await self.store.get_version(dataset_id, version_id), stage, accepts)

    async def record_plan(
        self, dataset_id: str, version_id: str, *, n_chunks: int, n_cells: int, n_features: int, views: list[str], expected: set[str]
    ) -> VersionRecord | None:
        """INGESTING -> COMPUTING with the plan (chunks, views, the expected `unit:view` keys), in one write."""
        extra = {"n_chunks": n_chunks, "n_cells": n_cells, "n_features": n_features, "views": views, "expected": expected}
        return await self.store.transition(dataset_id, version_id, State.COMPUTING, extra=extra)

    async def start_loading(self, version: VersionRecord) -> None:
        """COMPUTING -> LOADING once a first view is loaded (no-op in any other state)."""
        if version.state == State.COMPUTING:
            await self.store.transition(version.dataset_id, version.version_id, State.LOADING)

    async def claim_publish(self, dataset_id: str, version_id: str, claimant: str) -> bool:
        """-> VALIDATING, the right to ask for publication: true for exactly one claimant (and again
        for the same one on a redelivery, so a crash between the claim and the send loses nothing)."""
        building = [name for name in allowed_from(State.VALIDATING) if parse_state(name) in BUILDING]
        return await self.store.claim_publish(dataset_id, version_id, claimant, to=State.VALIDATING, from_states=building)

    async def fail(self, dataset_id: str, version_id: str, reason: str) -> VersionRecord | None:
        """A building version -> FAILED with the reason (None when it is not building any more)."""
        return await self.store.transition(dataset_id, version_id, State.FAILED, error=reason)

    async def overtake(self, version: VersionRecord) -> None:
        """VALIDATING -> OVERTAKEN: verified, but a newer upload is current already; never published."""
        await self.store.transition(version.dataset_id, version.version_id, State.OVERTAKEN)

    async def pointer(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset's pointer, None before its first publication."""
        try:
            return await self.store.get_dataset(dataset_id)
        except NotFound:
            return None

    async def make_current(self, version: VersionRecord, seen: DatasetRecord | None) -> None:
        """Flip the dataset's pointer to the version (conditional on the generation `seen`), then the
        version PUBLISHED and the one it replaced REPLACED. The publisher's publication and the
        operator's rollback are this one write.

        Raises `ConditionFailed` (retry after a re-read) when the pointer moved since `seen`,
        `NotFound` naming the state when the version may not become current.
        """
        if version.state not in CURRENT_CANDIDATES:
            raise NotFound(f"version {version.version_id} is {version.state.value}: it cannot become current")
        if seen is None or seen.current_version != version.version_id:
            previous = seen.current_version if seen else None
            flipped = await self.store.flip_pointer(
                version.dataset_id, version.version_id, upload_order=version.upload_order, seen=seen, previous=previous
            )
            if not flipped:
                raise ConditionFailed(f"the pointer of {version.dataset_id} moved while making {version.version_id} current", retry_after_s=1)
            replaced = previous
        else:
            replaced = seen.previous_version  # flipped before a crash: finish the state changes
        if replaced:
            await self.store.transition(version.dataset_id, replaced, State.REPLACED)
        await self.store.transition(version.dataset_id, version.version_id, State.PUBLISHED)

    async def delete(self, version: VersionRecord) -> VersionRecord | None:
        """REPLACED, OVERTAKEN or FAILED -> DELETED, once gc removed its tables and staging files."""
        return await self.store.transition(version.dataset_id, version.version_id, State.DELETED)
