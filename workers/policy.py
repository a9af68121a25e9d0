"""What happens to a job after a failed attempt: retry here later, move to a fallback, or fail."""

import random
from dataclasses import dataclass
from enum import StrEnum

from inferq.broker.messages import Job
from inferq.workers.errors import ProviderError

_BASE_BACKOFF = 0.5
_MAX_BACKOFF = 8.0
_MAX_RETRY_AFTER = 60.0


class Action(StrEnum):
    """The three ways a failed attempt can go."""

    RETRY = "retry"  # same group, after `delay`, any deployment may take it
    FALLBACK = "fallback"  # next group of the chain, at once
    FAIL = "fail"  # report the error to the client


@dataclass(frozen=True)
class Step:
    """The decision for one failed attempt."""

    action: Action
    delay: float = 0.0


def backoff(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter; the backend's Retry-After wins when it gives one."""
    if retry_after is not None:
        return min(retry_after, _MAX_RETRY_AFTER)
    exponential = float(_BASE_BACKOFF * 2**retries)
    return min(exponential, _MAX_BACKOFF) * random.uniform(0.5, 1.5)


def next_step(
    job: Job, error: ProviderError, *, visible: bool, default_retries: int, now: float
) -> Step:
    """Decide the next step. Before the client saw any output, retries are invisible; after
    it, only a fallback can carry on (with the partial text as the assistant's prefix)."""
    allowed = job.num_retries if job.num_retries is not None else default_retries
    if error.retryable and not visible and job.retries < allowed:
        delay = backoff(job.retries, error.retry_after)
        if now + delay < job.deadline:
            return Step(Action.RETRY, delay)
    if error.fallback and job.fallbacks:
        return Step(Action.FALLBACK)
    return Step(Action.FAIL)
