"""One error type per failure class, each with a stable `code` the API returns as is."""

from __future__ import annotations


class DispatcherError(Exception):
    code: str = "error"
    http_status: int = 500
    retry_after_s: int | None = None  # set: the same request may be sent again after this (Retry-After)

    def __init__(self, message: str, *, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class ValidationFailed(DispatcherError):
    code = "validation_error"
    http_status = 422


class TransitionError(DispatcherError):
    code = "invalid_transition"
    http_status = 409

    def __init__(self, *, current: str, new: str, hint: str = "") -> None:
        super().__init__(f"status cannot go from '{current}' to '{new}'{hint}", fields=["status"])
        self.current = current
        self.new = new


class NotFound(DispatcherError):
    code = "not_found"
    http_status = 404


class Conflict(DispatcherError):
    code = "conflict"
    http_status = 409


class ConfigurationError(DispatcherError):
    """Bad or missing settings, reported at start, naming the setting."""

    code = "configuration_error"


class MalformedJson(DispatcherError):
    code = "malformed_json"
    http_status = 400


class Unauthorized(DispatcherError):
    """Missing, unknown or revoked API key."""

    code = "unauthorized"
    http_status = 401


class Forbidden(DispatcherError):
    """A valid key whose role may not do this."""

    code = "forbidden"
    http_status = 403


class SignatureInvalid(DispatcherError):
    """A provider webhook whose signature is missing, wrong or stale."""

    code = "signature_invalid"
    http_status = 403


class Unavailable(DispatcherError):
    """A server the request needs (the database, Redis) does not answer now: nothing was done, and
    the same request may be sent again (503 with Retry-After)."""

    code = "unavailable"
    http_status = 503
    retry_after_s = 5


class BodyTooLarge(DispatcherError):
    code = "body_too_large"
    http_status = 413


class IdempotencyMismatch(DispatcherError):
    """The same Idempotency-Key was sent earlier with a different body."""

    code = "idempotency_mismatch"
    http_status = 422
