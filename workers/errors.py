"""Worker-side errors: every backend failure is mapped once, at the provider boundary.

ProviderError (status, type, retryable)
  ├── BackendUnreachable   connect refused/reset, DNS          502, retryable
  ├── BackendTimeout       no answer in time                   504, retryable
  ├── BackendRejected      4xx from the backend                4xx as given, 408/409/429 retryable
  ├── BackendFailed        5xx from the backend                502, retryable
  └── BackendProtocolError unparseable body, truncated stream  502, retryable
"""

from inferq.broker.messages import ErrorInfo


class ProviderError(Exception):
    """A backend call failed; `info()` is what the client will see."""

    status = 502
    type = "api_error"
    retryable = True
    # Whether another model group may do better (a deployment fault, not the request's).
    fallback = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def info(self) -> ErrorInfo:
        """The OpenAI-shaped error for the client."""
        return ErrorInfo(
            status=self.status,
            message=self.message,
            type=self.type,
            code=self.code,
            param=self.param,
        )


class BackendUnreachable(ProviderError):
    """The backend could not be reached at all."""

    type = "service_unavailable"


class BackendTimeout(ProviderError):
    """The backend did not answer in time."""

    status = 504
    type = "timeout"


class BackendRejected(ProviderError):
    """The backend refused the request (4xx); only 408, 409 and 429 are worth retrying."""

    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, param=param, retry_after=retry_after)
        self.retryable = status in (408, 409, 429)
        # Our credentials or model id are wrong at this provider: the request itself is fine.
        self.fallback = self.retryable or status in (401, 403, 404)
        if status in (401, 403):
            # The provider refused *our* credentials, not the client's: a gateway fault.
            self.status = 502
            self.type = "upstream_authentication_error"
            self.message = f"the upstream provider refused inferq's credentials: {message}"
        elif status == 429:
            self.type = "rate_limit_error"


class BackendFailed(ProviderError):
    """The backend answered with a server error."""


class BackendProtocolError(ProviderError):
    """The backend's answer could not be understood, or its stream stopped short."""
