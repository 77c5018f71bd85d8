"""Folds a canonical event stream into one canonical Response.

Lets the gateway read a streamed upstream answer on behalf of a caller that asked for a single
body, and gives tests one way to compare streamed and unstreamed answers.
"""

from __future__ import annotations

import copy
import json

from . import canonical as c


class Assembler:
    def __init__(self, response_id: str, model: str, created: int = 0) -> None:
        self.response = c.Response(id=response_id, model=model, parts=[], created=created)
        self._blocks: dict[int, c.Text | c.Thinking | c.ToolCall | c.Image] = {}
        self._args: dict[int, list[str]] = {}
        self.error: c.StreamError | None = None
        self.finished = False

    def add(self, event: c.Event) -> None:
        match event:
            case c.BlockStart(index=index, part=part):
                # A copy: the same event objects may also go to a stream encoder.
                part = copy.copy(part)
                self._blocks[index] = part
                self.response.parts.append(part)
                if isinstance(part, c.ToolCall):
                    self._args[index] = []
            case c.TextDelta(index=index, text=text):
                block = self._blocks[index]
                assert isinstance(block, c.Text)
                block.text += text
            case c.ThinkingDelta(index=index, text=text):
                block = self._blocks[index]
                assert isinstance(block, c.Thinking)
                block.text += text
            case c.SignatureDelta(index=index, signature=signature):
                block = self._blocks[index]
                assert not isinstance(block, c.Image)
                block.signature = (block.signature or "") + signature
            case c.ToolArgsDelta(index=index, json=fragment):
                self._args[index].append(fragment)
            case c.BlockStop(index=index):
                block = self._blocks.get(index)
                if isinstance(block, c.ToolCall):
                    text = "".join(self._args.pop(index, []))
                    block.arguments = json.loads(text) if text.strip() else {}
            case c.Grounded(grounding=grounding):
                self.response.grounding = grounding
            case c.Finish(reason=reason, usage=usage):
                self.response.finish_reason = reason
                self.response.usage = usage
                self.finished = True
            case c.StreamError():
                self.error = event

    def extend(self, events: list[c.Event]) -> None:
        for event in events:
            self.add(event)
