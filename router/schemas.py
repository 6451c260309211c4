"""Request bodies, as pydantic models: the shape of what each route accepts.

Shape only: a body that is not JSON, misses a required field or has a value
of the wrong type fails here (422, TGI's envelope). TGI's value rules (ranges,
limits, lengths) live in `validation`, with TGI's exact messages. Every field
accepts an explicit null, and unknown fields are ignored, as in TGI, so
clients that send extra fields (and our own `qos` extension) stay compatible.
The same models describe the API in /api-doc/openapi.json.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

U64_MAX = 2**64 - 1


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QosRequest(Body):
    """Niyama's extension: the QoS tier and tightened latency targets (milliseconds).

    The headers `x-qos-tier`, `x-slo-ttft-ms`, `x-slo-tbt-ms`, `x-slo-ttlt-ms`
    say the same and win over this object when both are given.
    """

    tier: str | None = Field(None, description="QoS tier name; default: the API key's default tier or the file's")
    ttft_ms: float | None = Field(None, description="tighter time-to-first-token target")
    tbt_ms: float | None = Field(None, description="tighter time-between-tokens target")
    ttlt_ms: float | None = Field(None, description="tighter time-to-last-token target")


class Grammar(Body):
    """TGI's `grammar`: a JSON schema (`json`; `json_object` is TGI's alias), `{"name", "schema"}` (`json_schema`)
    or a regular expression (`regex`)."""

    type: Literal["json", "json_object", "regex", "json_schema"]
    value: Any = None


class JsonSchemaFormat(Body):
    """OpenAI's `response_format.json_schema`; `strict` is accepted: the schema is always enforced."""

    name: str | None = None
    description: str | None = None
    schema_: Any = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    """OpenAI's `response_format` (`text`, `json_object`, `json_schema`) or TGI's (`json`, `regex` with `value`)."""

    type: Literal["text", "json_object", "json_schema", "json", "regex"]
    json_schema: JsonSchemaFormat | None = None
    value: Any = None


class FunctionDefinition(Body):
    name: str
    description: str | None = None
    parameters: Any = Field(None, validation_alias=AliasChoices("parameters", "arguments"))


class Tool(Body):
    type: str = "function"
    function: FunctionDefinition


class FunctionName(Body):
    name: str


class ToolChoiceFunction(Body):
    """`{"type": "function", "function": {"name": ...}}` (huggingface_hub leaves `type` out)."""

    type: str | None = None
    function: FunctionName


class GenerateParameters(Body):
    best_of: int | None = Field(None, ge=0, description="sample this many sequences, return the most likely")
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = Field(
        None, description="absent or null: until EOS, up to max_total_tokens minus the input (TGI 3.x)"
    )
    return_full_text: bool | None = None
    stop: list[str] = Field(default_factory=list)
    truncate: int | None = None
    watermark: bool = Field(False, description="TGI's greenlist watermark (WATERMARK_GAMMA, WATERMARK_DELTA)")
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = Field(None, ge=0, le=U64_MAX)
    top_n_tokens: int | None = Field(None, ge=0)
    grammar: Grammar | None = Field(None, description="constrain the output to a JSON schema or a regex")
    adapter_id: str | None = Field(
        None, description="null or the served model id: no LoRA adapters are served (others are a 422)"
    )
    ignore_eos: bool = Field(False, description="extension: generate max_new_tokens tokens even past EOS")

    @field_validator("do_sample", "watermark", "details", "decoder_input_details", "ignore_eos", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("stop", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


def sampling_parameters() -> GenerateParameters:
    """What a request without `parameters` gets: TGI turns sampling on then."""
    return GenerateParameters(do_sample=True)


class GenerateRequest(Body):
    inputs: str
    parameters: GenerateParameters = Field(default_factory=sampling_parameters)
    qos: QosRequest | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any) -> Any:
        return sampling_parameters() if value is None else value


class CompatGenerateRequest(GenerateRequest):
    """The body of POST / (and /invocations): `/generate` plus `stream`."""

    stream: bool = False

    @field_validator("stream", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value


class ContentPart(Body):
    type: str
    text: str | None = None
    image_url: Any = None


class ChatMessage(Body):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(Body):
    include_usage: bool = False


class OpenAIRequest(Body):
    """Fields the chat and completion requests share."""

    model: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = Field(
        None, description="{token id: bias in [-100, 100]} added to the token's logit before sampling"
    )
    max_tokens: int | None = None
    n: int | None = Field(None, description="choices to generate, 1 to --max-best-of (default 1)")
    seed: int | None = Field(None, ge=0, le=U64_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, description="0 means greedy")
    top_p: float | None = None
    ignore_eos: bool = Field(False, description="extension: generate max_tokens tokens even past EOS")
    qos: QosRequest | None = None

    @field_validator("stream", "ignore_eos", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoiceFunction | None = Field(None, description="auto (default), none, required, a name")
    tool_prompt: str | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str]
    suffix: str | None = Field(None, description="not supported (as in TGI)")
    response_format: ResponseFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty_list(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("Empty array detected. Do not use an empty array for the prompt.")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
