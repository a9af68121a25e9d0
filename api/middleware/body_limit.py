"""Request body size limit as a plain ASGI middleware: 413 instead of unbounded memory."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.errors import GatewayError
from inferq.api.middleware.access import finish_response
from inferq.api.state import CurrentConfig


class PayloadTooLarge(GatewayError):
    """The request body is over the limit."""

    status = 413
    type = "invalid_request_error"


class BodyLimit:
    """Refuses bodies over `max_bytes`, by Content-Length up front or while reading."""

    def __init__(self, app: ASGIApp, current: CurrentConfig) -> None:
        self.app = app
        self._current = current  # the limit can change on reload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Batch input files are bigger than any one request (OpenAI takes up to 200 MB).
        uploading = scope["path"] in ("/v1/files", "/files")
        current = self._current
        max_bytes = current.max_file_bytes if uploading else current.max_request_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                error = self._error(max_bytes, uploading)
                await finish_response(scope, error.response(), error.type)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise self._error(max_bytes, uploading)
            return message

        await self.app(scope, limited, send)

    def _error(self, max_bytes: int, uploading: bool) -> PayloadTooLarge:
        setting = "max_file_bytes" if uploading else "max_request_bytes"
        return PayloadTooLarge(
            f"Request body too large: the limit is {max_bytes} bytes (inferq_settings.{setting}).",
            code="payload_too_large",
        )
