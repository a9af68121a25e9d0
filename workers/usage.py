"""Token counts for backends that stream no usage (llama.cpp): counted, and labelled so."""

import math
from typing import Any

# A rough characters-per-token figure for English text with BPE tokenizers.
_CHARS_PER_TOKEN = 4.0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Approximate prompt tokens from the text of the messages, prompt or input."""
    for field in ("prompt", "input"):
        value = body.get(field)
        if isinstance(value, str):
            return max(1, math.ceil(len(value) / _CHARS_PER_TOKEN))
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return max(1, math.ceil(sum(len(v) for v in value) / _CHARS_PER_TOKEN))
        if isinstance(value, list) and value:
            return sum(len(v) if isinstance(v, list) else 1 for v in value)  # token ids
    chars = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
        chars += 4  # role and separators of the chat template
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN))


def with_earlier_tokens(usage: dict[str, Any], tokens: int) -> dict[str, Any]:
    """`usage` of an attempt that carried on an answer whose first `tokens` tokens an earlier
    holder sent: the client's answer holds them too, so its completion counts them."""
    completion = int(usage.get("completion_tokens") or 0) + tokens
    total = int(usage.get("prompt_tokens") or 0) + completion
    return {**usage, "completion_tokens": completion, "total_tokens": total}


def counted_usage(body: dict[str, Any], completion_chunks: int) -> dict[str, int]:
    """Usage for a stream without a usage chunk: one backend chunk ≈ one token."""
    prompt = estimate_prompt_tokens(body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_chunks,
        "total_tokens": prompt + completion_chunks,
    }
