"""The HTTP facade: OpenAI-compatible routes that turn requests into jobs and replies into SSE."""
