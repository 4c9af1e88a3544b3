"""LLM failures as values the agent can act on: a short ``code`` to meter and branch on
(``http_429``, ``http_500``, ``timeout``, ``connect``, ``network``, ``bad_response``,
``stream_error``, ``http_401``…), whether trying again may help, and which provider said so.
Messages never carry an API key, a header or a request body."""

from __future__ import annotations

from collections.abc import Sequence

# What the OpenAI SDKs retry, too: request timeout, lock conflict, rate limit, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def status_is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


class LLMError(Exception):
    """One failed attempt (or, as ``LLMGaveUp``, a failed call)."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        retryable: bool,
        provider: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s
        """The provider's own hint (``Retry-After`` and the like) of when to try again."""
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        return f"{where}{self.code}" + (f": {self.message}" if self.message else "")


class LLMGaveUp(LLMError):
    """The call failed for good: the time budget is spent, or every provider refused in a way
    that retrying cannot fix. ``code`` and ``provider`` are those of the last error."""

    def __init__(self, errors: Sequence[LLMError], *, attempts: int, elapsed_s: float) -> None:
        self.errors = tuple(errors)
        """Every attempt's error, oldest first."""
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        last = self.errors[-1] if self.errors else None
        super().__init__(
            last.code if last else "timeout",
            f"gave up after {attempts} attempt(s) in {elapsed_s:.1f}s"
            + (f"; last: {last}" if last else ""),
            retryable=False,
            provider=last.provider if last else "",
            status=last.status if last else None,
        )

    @property
    def last(self) -> LLMError | None:
        return self.errors[-1] if self.errors else None

    def _describe(self) -> str:
        return self.message
