"""Coalescing stream chunks: what arrived in one network read goes back as one reply message.

Consecutive text-only deltas of the same choices merge into one (their `content` joined); any
chunk carrying more (a role change, tool calls, logprobs, a finish_reason) stays its own item, so
nothing the backend said is lost or reordered.
"""

from typing import Any

Choices = list[dict[str, Any]]
_TEXT_ONLY = frozenset({"content"})
_TEXT_OR_ROLE = frozenset({"content", "role"})


class Coalescer:
    """Accumulates chunk `choices` lists between two publishes."""

    def __init__(self, skip_role: bool = False) -> None:
        self._skip_role = skip_role  # continuing an answer: the client has its role already
        self._items: list[Choices] = []
        self._visible = False
        self.finish_reasons: dict[int, str] = {}
        self.content_chunks = 0  # backend chunks carrying output (≈ tokens for llama.cpp)
        self.text_chars = 0

    def add(self, choices: Choices) -> None:
        """Take the choices of one backend chunk."""
        if self._skip_role:
            choices = [
                {**c, "delta": {k: v for k, v in (c.get("delta") or {}).items() if k != "role"}}
                for c in choices
            ]
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content") or choice.get("text")
            if content or delta.get("tool_calls") or delta.get("function_call"):
                self.content_chunks += 1
                self.text_chars += len(content or "")
                self._visible = True
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reasons[int(choice.get("index", 0))] = reason
                self._visible = True
        if self._items and _mergeable(self._items[-1], choices):
            for mine, theirs in zip(self._items[-1], choices, strict=True):
                if "delta" in mine:
                    mine["delta"]["content"] = (mine["delta"].get("content") or "") + (
                        theirs["delta"].get("content") or ""
                    )
                else:
                    mine["text"] = (mine.get("text") or "") + (theirs.get("text") or "")
        else:
            self._items.append(choices)

    @property
    def visible(self) -> bool:
        """True when what is held carries output (text, tool calls) or a finish_reason."""
        return self._visible and bool(self._items)

    def drain(self) -> list[Choices]:
        """Everything accumulated since the last drain."""
        items, self._items = self._items, []
        self._visible = False
        return items

    def __bool__(self) -> bool:
        return bool(self._items)


def _mergeable(previous: Choices, current: Choices) -> bool:
    return len(previous) == len(current) and all(
        _same_text_stream(mine, theirs) for mine, theirs in zip(previous, current, strict=True)
    )


def _same_text_stream(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    if "delta" not in mine and "delta" not in theirs:  # text completions: `text` only
        return (
            mine.get("index") == theirs.get("index")
            and not mine.get("finish_reason")
            and not theirs.get("finish_reason")
            and mine.get("logprobs") is None
            and theirs.get("logprobs") is None
        )
    return (
        mine.get("index") == theirs.get("index")
        and not mine.get("finish_reason")
        and not theirs.get("finish_reason")
        and mine.get("logprobs") is None
        and theirs.get("logprobs") is None
        and "delta" in mine
        and _keys(theirs.get("delta")) <= _TEXT_ONLY
        and _keys(mine["delta"]) <= _TEXT_OR_ROLE
    )


def _keys(delta: Any) -> set[str]:
    return {k for k, v in delta.items() if v is not None} if isinstance(delta, dict) else {"?"}
