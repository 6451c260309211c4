"""The served model's tokenizer, as the router uses it.

Encoding and decoding go straight to the Rust `tokenizers` backend: the
transformers wrapper adds microseconds of Python per call, and the streaming
path decodes twice per generated token. The chat template stays with
transformers (jinja), once per request.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, TemplateError, meta

from .errors import TEMPLATE, ApiError


@dataclass(frozen=True, slots=True)
class InputToken:
    """One token of a tokenized input, with its character offsets (TGI's /tokenize entry)."""

    id: int
    text: str
    start: int
    stop: int


class TextTokenizer:
    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        self.backend = hf_tokenizer.backend_tokenizer
        added = getattr(hf_tokenizer, "added_tokens_decoder", {})
        # The same set `decode(skip_special_tokens=True)` leaves out, so the
        # visible text and the `special` flag always agree.
        self.special_ids = frozenset(i for i, token in added.items() if getattr(token, "special", False)) | frozenset(
            hf_tokenizer.all_special_ids
        )
        self._texts: dict[int, str] = {}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[InputToken]:
        """Ids with character offsets into ``text`` (a special token added by the template has empty offsets)."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return [
            InputToken(token_id, text[start:stop], start, stop)
            for token_id, (start, stop) in zip(encoding.ids, encoding.offsets)
        ]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        """One token decoded alone (prefill and top-n entries), cached: the vocabulary is fixed."""
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.backend.decode([token_id], skip_special_tokens=False)
        return text

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    @functools.cached_property
    def template_reads_tools(self) -> bool:
        """Whether the chat template renders `tools` itself (else the router writes them into the prompt, as TGI)."""
        template = getattr(self.hf, "chat_template", None)
        if not isinstance(template, str):
            return False
        try:
            return "tools" in meta.find_undeclared_variables(Environment().parse(template))
        except TemplateError:
            return False

    def chat_prompt(self, messages: list[dict[str, str]], tools: list[dict] | None = None) -> str:
        """The prompt text the model's chat template makes of ``messages``, ready for the assistant's turn."""
        if getattr(self.hf, "chat_template", None) is None:
            raise ApiError(422, "Template error: this model has no chat template", TEMPLATE)
        try:
            return self.hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        except TemplateError as error:
            raise ApiError(422, f"Template error: {error}", TEMPLATE) from None


def load_text_tokenizer(path: str, trust_remote_code: bool = False) -> TextTokenizer:
    """The tokenizer of the checkpoint a worker loaded (``WorkerInfo.path``), without its weights."""
    from transformers import AutoTokenizer

    return TextTokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))
