"""TGI's parameter rules, in TGI's order and with TGI's messages (router/src/validation.rs).

`validate` turns a parsed `/generate` body into what the engine needs: the
prompt's token ids, the sampling parameters and the stopping rules. The chat
and completion routes build the same `GenerateParameters` and come here too,
so every route enforces one set of rules. Every failure is a 422 `validation`
answer whose message starts with "Input validation error: ".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from niyama.engine.protocol import SamplingParams

from .errors import validation_error
from .schemas import GenerateParameters
from .settings import ServerSettings
from .structured import grammar_spec
from .tokenizer import TextTokenizer


@dataclass(frozen=True)
class ValidRequest:
    """A request the engine can run as is."""

    inputs: str
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    max_new_tokens: int
    stop: tuple[str, ...]
    best_of: int
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    top_n_tokens: int
    ignore_eos: bool

    @property
    def input_length(self) -> int:
        return len(self.prompt_ids)


def check_stream_parameters(parameters: GenerateParameters) -> None:
    """What a streaming request may not ask for (checked first, as TGI does)."""
    if (parameters.best_of if parameters.best_of is not None else 1) != 1:
        raise validation_error("`best_of` != 1 is not supported when streaming tokens")
    if parameters.decoder_input_details:
        raise validation_error("`decoder_input_details` == true is not supported when streaming tokens")


def check_best_of(best_of: int, settings: ServerSettings) -> None:
    if settings.max_best_of == 1 and best_of != 1:
        raise validation_error("`best_of` != 1 is not allowed for this endpoint")
    if best_of > settings.max_best_of:
        raise validation_error(f"`best_of` must be > 0 and <= {settings.max_best_of}. Given: {best_of}")


def choices_count(n: int | None, settings: ServerSettings) -> int:
    """OpenAI's `n` (TGI 3.x ignores it): that many choices of one prompt, at most `--max-best-of`, the limit of
    best_of's machinery that runs them (several sequences of one prompt side by side)."""
    count = 1 if n is None else n
    if not 0 < count <= settings.max_best_of:
        raise validation_error(f"`n` must be > 0 and <= {settings.max_best_of}. Given: {count}")
    return count


def choice_copies(valid: ValidRequest, n: int) -> list[ValidRequest]:
    """``valid`` run ``n`` times; a seeded request's choice i samples with seed + i: distinct, yet reproducible."""
    if valid.params.seed is None:
        return [valid] * n
    return [replace(valid, params=replace(valid.params, seed=(valid.params.seed + i) % 2**64)) for i in range(n)]


def logit_bias_pairs(given: dict[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
    """OpenAI's `{token id: bias}` as (id, bias) pairs; an id outside the vocabulary would crash the worker."""
    pairs = []
    for key, bias in (given or {}).items():
        if not key.strip().isdecimal():
            raise validation_error(f"`logit_bias` keys must be token ids. Given: {key!r}")
        if int(key) >= vocab_size:
            raise validation_error(f"`logit_bias` token ids must be < {vocab_size}. Given: {int(key)}")
        if not -100.0 <= bias <= 100.0:
            raise validation_error(f"`logit_bias` values must be >= -100 and <= 100. Given: {bias}")
        pairs.append((int(key), float(bias)))
    return tuple(pairs)


def validate(
    inputs: str,
    parameters: GenerateParameters,
    tokenizer: TextTokenizer,
    settings: ServerSettings,
    *,
    add_special_tokens: bool = True,
    presence_penalty: float | None = None,
    logit_bias: dict[str, float] | None = None,
    default_return_full_text: bool = False,
) -> ValidRequest:
    p = parameters
    best_of = p.best_of if p.best_of is not None else 1
    if best_of > 1:
        check_best_of(best_of, settings)
    sampling = p.do_sample or any(v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p))
    if best_of > 1 and not sampling:
        raise validation_error("you must use sampling when `best_of` is > 1")
    if p.adapter_id not in (None, settings.model_id):  # TGI would run a LoRA adapter; refuse, never ignore
        raise validation_error(f"`adapter_id` must be null or `{settings.model_id}`: no LoRA adapters are served")
    if p.temperature is not None and p.temperature <= 0:
        raise validation_error("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise validation_error("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise validation_error("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if presence_penalty is not None and not -2.0 <= presence_penalty <= 2.0:  # OpenAI's range, as frequency's
        raise validation_error("`presence_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise validation_error("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise validation_error("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise validation_error("`top_k` must be strictly positive")
    if p.max_new_tokens is not None and p.max_new_tokens <= 0:
        raise validation_error("`max_new_tokens` must be strictly positive")
    if len(p.stop) > settings.max_stop_sequences:
        raise validation_error(
            f"`stop` supports up to {settings.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
        )
    bias = logit_bias_pairs(logit_bias, len(tokenizer.hf))
    if p.seed is not None and best_of > 1:
        raise validation_error("`seed` must not be set when `best_of` > 1")
    top_n_tokens = p.top_n_tokens or 0
    if top_n_tokens > settings.max_top_n_tokens:
        raise validation_error(f"`top_n_tokens` must be >= 0 and <= {settings.max_top_n_tokens}. Given: {top_n_tokens}")
    if not inputs:
        raise validation_error("`inputs` cannot be empty")
    if p.truncate is not None and not 0 < p.truncate <= settings.max_input_tokens:
        raise validation_error(
            f"`truncate` must be strictly positive and less than {settings.max_input_tokens}. Given: {p.truncate}"
        )
    prompt_ids = tokenizer.encode(inputs, add_special_tokens=add_special_tokens)
    if p.truncate is not None:
        prompt_ids = prompt_ids[-p.truncate :]
    input_length = len(prompt_ids)
    max_new_tokens = p.max_new_tokens
    if max_new_tokens is None:  # TGI 3.x: until EOS, up to what max_total_tokens leaves (never below 0)
        max_new_tokens = max(settings.max_total_tokens - input_length, 0)
    if input_length + max_new_tokens > settings.max_total_tokens:
        raise validation_error(
            f"`inputs` tokens + `max_new_tokens` must be <= {settings.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > settings.max_input_tokens:
        raise validation_error(
            f"`inputs` must have less than {settings.max_input_tokens} tokens. Given: {input_length}"
        )
    grammar = grammar_spec(p.grammar) if p.grammar is not None else None
    if input_length == 0:  # text that tokenizes to nothing, or nothing left after truncation
        raise validation_error("`inputs` cannot be empty")
    params = SamplingParams(
        # best_of asks for distinct samples: TGI counts any warper as sampling there.
        do_sample=p.do_sample or best_of > 1,
        temperature=p.temperature,
        top_k=p.top_k,
        top_p=p.top_p,
        typical_p=p.typical_p,
        repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=presence_penalty,
        seed=p.seed,
        top_n_tokens=top_n_tokens,
        prompt_logprobs=p.decoder_input_details,
        grammar=grammar,
        watermark=p.watermark,
        logit_bias=bias,
    )
    return ValidRequest(
        inputs=inputs,
        prompt_ids=tuple(prompt_ids),
        params=params,
        max_new_tokens=max_new_tokens,
        stop=tuple(p.stop),
        best_of=max(best_of, 1),
        details=p.details or p.decoder_input_details,
        decoder_input_details=p.decoder_input_details,
        return_full_text=p.return_full_text if p.return_full_text is not None else default_return_full_text,
        top_n_tokens=top_n_tokens,
        ignore_eos=p.ignore_eos,
    )
