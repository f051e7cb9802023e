"""Incremental detokenization and stop-string handling for one completion.

Decoding a growing window of tokens (vLLM's prefix/read offsets) keeps the work per token small and gets
word boundaries right; text that ends in an incomplete UTF-8 character ("\\ufffd") is held back until
the next token completes it. Stop strings are searched across token boundaries; while a completion is
running, the last `max(len(stop)) - 1` characters are held back so a stop string is never emitted (with
`include_stop=True`, vLLM's include_stop_str_in_output, the text ends with the stop string instead and
nothing is held back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_PROMPT_CONTEXT = 5


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_token_ids: list[int],
        skip_special_tokens: bool,
        stop: list[str],
        include_stop: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = stop
        self.include_stop = include_stop
        self.longest_stop = max((len(s) for s in stop), default=1) - 1
        self.hold = 0 if include_stop else self.longest_stop
        self.tokens = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int) -> str | None:
        """Append one token; returns the stop string found (text truncated before it, or after it with
        include_stop), else None."""
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return None
        new_text = full[len(prefix) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        start = max(0, len(self.text) - self.longest_stop)
        self.text += new_text
        hits = [(at, stop) for stop in self.stop if (at := self.text.find(stop, start)) >= 0]
        if not hits:
            return None
        at, stop = min(hits)
        self.text = self.text[: at + len(stop) if self.include_stop else at]
        return stop

    def visible_text(self, finished: bool) -> str:
        """The text a caller may see now (stop-string tail held back while running)."""
        if finished or not self.hold:
            return self.text
        return self.text[: max(0, len(self.text) - self.hold)]
