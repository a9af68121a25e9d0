"""Coalescing stream chunks: what arrived in one network read goes back as one reply message.

Consecutive text-only deltas of the same choices merge into one (their `content` joined); any
chunk carrying more (a role change, tool calls, logprobs, a finish_reason) stays its own item, so
nothing the backend said is lost or reordered.
"""

from typing import Any

Choices = list[dict[str, Any]]


class Coalescer:
    """Accumulates chunk `choices` lists between two publishes."""

    def __init__(self, skip_role: bool = False) -> None:
        self._skip_role = skip_role  # continuing an answer: the client has its role already
        self._items: list[Choices] = []
        self._open = False  # the last item is a text run that the next text pieces extend
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
        # Whether the chunk may start a text run (`head`) or extend one (`piece`).
        head = piece = True
        for choice in choices:
            starts, extends = self._take(choice)
            head = head and starts
            piece = piece and extends
        items = self._items
        if piece and self._open and _aligned(items[-1], choices):
            for mine, theirs in zip(items[-1], choices, strict=True):
                if "delta" in mine:
                    mine["delta"]["content"] = (mine["delta"].get("content") or "") + (
                        theirs["delta"].get("content") or ""
                    )
                else:
                    mine["text"] = (mine.get("text") or "") + (theirs.get("text") or "")
        else:
            items.append(choices)
            self._open = head

    def _take(self, choice: dict[str, Any]) -> tuple[bool, bool]:
        """Count what `choice` shows the client; say whether it may start a text run and
        whether it may extend one (one pass: this runs for every token)."""
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
            return False, False
        if choice.get("logprobs") is not None:
            return False, False
        if "delta" not in choice:
            return True, True  # a completion's text
        if not isinstance(choice["delta"], dict):
            return False, False
        starts = extends = True
        for key, value in delta.items():
            if value is not None and key != "content":
                extends = False  # a piece carries content only
                starts = starts and key == "role"  # a run starts with content, maybe a role
        return starts, extends

    @property
    def visible(self) -> bool:
        """True when what is held carries output (text, tool calls) or a finish_reason."""
        return self._visible and bool(self._items)

    def drain(self) -> list[Choices]:
        """Everything accumulated since the last drain."""
        items, self._items = self._items, []
        self._visible = self._open = False
        return items

    def __bool__(self) -> bool:
        return bool(self._items)


def _aligned(run: Choices, piece: Choices) -> bool:
    """Whether `piece` continues `run` choice by choice: the same indexes, chat deltas after chat
    deltas and completion texts after completion texts."""
    if len(run) != len(piece):
        return False
    for mine, theirs in zip(run, piece, strict=True):
        if mine.get("index") != theirs.get("index") or ("delta" in mine) != ("delta" in theirs):
            return False
    return True
