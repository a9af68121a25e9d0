"""The request body size limit: 413 instead of unbounded memory (checked by `Gate`)."""

from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from inferq.api.errors import GatewayError
from inferq.api.middleware.access import finish_response
from inferq.api.state import CurrentConfig


class PayloadTooLarge(GatewayError):
    """The request body is over the limit."""

    status = 413
    type = "invalid_request_error"


class BodyLimit:
    """Refuses bodies over the configured limit, by Content-Length up front or while reading."""

    def __init__(self, current: CurrentConfig) -> None:
        self._current = current  # the limit can change on reload

    def bound(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        """The 413 for a declared length over the limit, else `receive` wrapped so that reading
        past the limit raises PayloadTooLarge."""
        # Batch input files are bigger than any one request (OpenAI takes up to 200 MB).
        uploading = scope["path"] in ("/v1/files", "/files")
        current = self._current
        max_bytes = current.max_file_bytes if uploading else current.max_request_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) <= max_bytes:
                    return None, receive  # the server delivers no more than it declares
                error = _error(max_bytes, uploading)
                return finish_response(scope, error.response(), error.type), receive
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise _error(max_bytes, uploading)
            return message

        return None, limited


def _error(max_bytes: int, uploading: bool) -> PayloadTooLarge:
    setting = "max_file_bytes" if uploading else "max_request_bytes"
    return PayloadTooLarge(
        f"Request body too large: the limit is {max_bytes} bytes (inferq_settings.{setting}).",
        code="payload_too_large",
    )
