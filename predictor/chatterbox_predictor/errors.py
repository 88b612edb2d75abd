"""The engine's error types, each with its HTTP status (`status`); `api.app.error_response` turns one
into a response, the one place that does.

Retryable errors (the client may try again later) carry `retry_after`; permanent ones say what to fix.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports for a request."""

    status = 500
    retry_after: float | None = None


class InvalidInput(EngineError):
    """The request itself is wrong (bad text, bad parameter): the client must change it."""

    status = 400


class VoiceNotFound(EngineError):
    status = 404


class Unauthorized(EngineError):
    """No API key, or not a configured one."""

    status = 401


class InvalidVoice(InvalidInput):
    """A voice file that is not a loadable voice for this model (never unpickled beyond weights)."""

    status = 422


class InvalidVoiceId(InvalidVoice):
    """A voice id that is not a plain file name stem (path separators, traversal, odd characters)."""

    status = 400


class VoiceExists(EngineError):
    """An upload under a voice id that is taken, without the explicit overwrite flag."""

    status = 409


class VoiceManaged(EngineError):
    """A REST write to a voice id that a `Voice` resource manages (the operator owns its file)."""

    status = 409


class VoiceStoreError(EngineError):
    """The voice directory refused a write (not writable by the server's user, full, read-only): a
    deployment problem that the message names, not the client's."""

    status = 500


class UnusableAudio(InvalidVoice):
    """Reference recordings of which none could be cloned from; the message names each and why."""


class PayloadTooLarge(InvalidInput):
    status = 413


class TextTooLong(PayloadTooLarge):
    pass


class QueueFull(EngineError):
    """More requests wait than the queue holds: retry after a moment (503 with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class EngineNotReady(EngineError):
    status = 503
    retry_after = 5.0


class LanguageUnavailable(EngineError):
    """A language this deployment cannot process (its text-processing data could not be loaded)."""

    status = 501


class GenerationFailed(EngineError):
    """The model failed on a valid request (a bug or a device error); the worker keeps serving."""

    status = 500
