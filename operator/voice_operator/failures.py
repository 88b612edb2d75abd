"""Why a sync did not complete, as types: what happens next follows from the type alone.

Every step of a sync (sources.py, reconcile.py) raises one of these; handlers.py maps them onto kopf's
retry semantics in one place, and status.py/reconcile.py publish `reason` as the condition's reason and
the event's. `TemporaryFailure` is retried with backoff (an unreachable source, a 5xx, a ConfigMap not
created yet, a predictor replica that did not confirm); `PermanentFailure` stops until the Voice's spec
changes, and its message says what to fix.
"""

from __future__ import annotations


class SyncFailure(Exception):
    """A sync that did not complete. `reason` is the CamelCase word for the condition and the event."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TemporaryFailure(SyncFailure):
    """Retried with backoff: the cause is expected to go away on its own."""


class PermanentFailure(SyncFailure):
    """Not retried until the spec changes: retrying the same spec would fail the same way."""


class ReloadPending(TemporaryFailure):
    """The file is in place, but a ready predictor replica did not confirm it: retried."""
