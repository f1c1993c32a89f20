"""The request bodies of every route, as pydantic models: OpenAI's field types, ranges and
defaults where OpenAI defines the route, tunesmith's own otherwise.

A body that does not fit is a 400 in OpenAI's error shape naming the first field that failed
(``param``, dotted for nested fields: ``messages.0.content``), never a 500: a wrong type, an
out-of-range number, a number JSON can write but a float cannot hold (``1e999`` parses to
infinity: ``allow_inf_nan=False`` refuses it) or a missing required field.

Unknown top-level fields are ignored, as OpenAI's newer SDKs send fields an older server does
not know (``store``, ``metadata``, ``stream_options`` ...): refusing them would break clients that
work against OpenAI. Fields tunesmith does not implement but a client may rely on are refused
when set to a value that would change the answer (``tools``, chat ``logprobs``, non-text content).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from tunesmith.errors import APIError

MAX_GENERATION_TOKENS = 8192
MAX_CHOICES = 16           # vLLM advises 64-128 for public servers; generation here is sequential
MAX_STOP_SEQUENCES = 4     # OpenAI's limit
MAX_BATCH_INPUTS = 2048    # OpenAI's embeddings limit, for /v1/classifications
MAX_PROMPT_CHOICES = 64    # prompts × n in one /v1/completions request: each is a generation
MAX_STOP_LENGTH = 256      # characters: transformers builds its stop-string tables from each
MAX_LOGPROBS = 5           # OpenAI's legacy completions: the most likely tokens listed per position
MAX_PROMPT_TOKENS = 131_072  # token ids in one prompt (the model's context is checked on top)


def unsupported(what: str) -> AfterValidator:
    """A field OpenAI has and this server does not implement: its default (or any falsy value)
    passes, anything that would change the answer is refused rather than silently ignored."""
    def check(value):
        if value:
            raise ValueError(f"{what} not supported by this server")
        return value
    return AfterValidator(check)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, str_max_length=1_000_000)


ModelName = Annotated[str, Field(min_length=1, max_length=256)]
# Finite, and a JSON number: an int is one, a bool or a numeric string is not (OpenAI refuses them).
Number = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Seed = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=256)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class Sampling(Body):
    """What chat and text completions share."""
    model: ModelName
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_GENERATION_TOKENS)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(gt=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_CHOICES)] | None = None
    stop: Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)] | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Seed | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[Annotated[Number, Field(ge=-2, le=2)] | None, unsupported("presence_penalty is")] = None
    frequency_penalty: Annotated[Annotated[Number, Field(ge=-2, le=2)] | None, unsupported("frequency_penalty is")] = None
    user: Annotated[str, Field(max_length=256)] | None = None

    def params(self) -> dict[str, Any]:
        """The generation settings; ``max_tokens`` None: the server's default, cut to what the context leaves."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {"max_tokens": self.limit(), "explicit_max_tokens": self.limit() is not None,
                "temperature": 1.0 if self.temperature is None else self.temperature,
                "top_p": 1.0 if self.top_p is None else self.top_p, "n": self.n or 1, "seed": self.seed, "stop": stop}

    def limit(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_GENERATION_TOKENS)] | None = None
    logprobs: Annotated[StrictBool | None, unsupported("logprobs are")] = None
    tools: Annotated[list[Any] | None, unsupported("tools (function calling) are")] = None

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conversation(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


TokenId = Annotated[StrictInt, Field(ge=0)]
TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]


class CompletionRequest(Sampling):
    """OpenAI's legacy completions: a prompt is text, a list of texts, token ids or a list of
    token-id lists (what lm-evaluation-harness sends with ``tokenized_requests``). ``logprobs``
    (0-5) asks for the legacy logprobs object, ``echo`` for the prompt before the completion (and its
    tokens in ``logprobs``); ``max_tokens`` 0 with ``echo`` scores the prompt without generating."""
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_BATCH_INPUTS)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1, max_length=MAX_BATCH_INPUTS)]
    max_tokens: Annotated[StrictInt, Field(ge=0, le=MAX_GENERATION_TOKENS)] | None = None
    echo: StrictBool | None = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1, le=1)] | None = None  # only the default: one candidate each
    suffix: Annotated[str | None, unsupported("suffix (insertion) is")] = None

    @model_validator(mode="after")
    def _bounded(self):
        if len(self.prompts()) * (self.n or 1) > MAX_PROMPT_CHOICES:
            raise ValueError(f"prompts × n may be at most {MAX_PROMPT_CHOICES} generations in one request")
        if self.max_tokens == 0 and not self.echo:  # raised as is (not a ValueError): it names its field
            raise APIError(400, "Invalid 'max_tokens': 0 generates nothing; it is allowed with echo: true only "
                           "(to score the prompt).", "invalid_value", "max_tokens")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)

    def params(self) -> dict[str, Any]:
        return super().params() | {"echo": bool(self.echo), "logprobs": self.logprobs}


class ClassificationRequest(Body):
    model: ModelName
    input: Annotated[str, Field(min_length=0)] | Annotated[list[str], Field(min_length=1, max_length=MAX_BATCH_INPUTS)]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


Auto = Literal["auto"]


# The docstring below is this model's description in the OpenAPI schema, which clients read: it is
# kept as it was (the ranges it points to are now checked in jobs/fine_tuning.py).
class Hyperparameters(BaseModel):
    """Types only (``"auto"`` or a finite number); the ranges are checked by server/jobs.py,
    which also checks jobs made by tunesmith itself."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_epochs: Auto | StrictInt = "auto"
    batch_size: Auto | StrictInt = "auto"
    learning_rate_multiplier: Auto | Number = "auto"
    beta: Auto | Number | None = None


class MethodSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised", "dpo"]
    supervised: MethodSettings | None = None
    dpo: MethodSettings | None = None


class TunesmithJobExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] | None = None
    recipe_yaml: Annotated[str, Field(max_length=100_000)] | None = None


FileId = Annotated[str, Field(min_length=1, max_length=64)]


class FineTuningJobRequest(Body):
    model: ModelName
    training_file: FileId
    validation_file: FileId | None = None
    suffix: Annotated[str, Field(max_length=64)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None
    integrations: Annotated[list[Any] | None, unsupported("integrations (runs are tracked in MLflow) are")] = None
    tunesmith: TunesmithJobExtension | None = None


class FeedbackRequest(Body):
    request_id: Annotated[str, Field(max_length=64)] | None = None
    model: ModelName | None = None
    messages: list[Message] | None = None
    answer: str | None = None
    rating: Literal[-1, 0, 1] = 0
    correction: str | None = None
    label: Annotated[str, Field(max_length=255)] | None = None


class FeedbackUpdate(Body):
    status: Literal["new", "accepted", "rejected"] | None = None
    rating: Literal[-1, 0, 1] | None = None
    correction: str | None = None
    label: Annotated[str, Field(max_length=255)] | None = None


class EvaluationRequest(Body):
    data_file: FileId | None = None
    samples: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    max_examples: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    max_new_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_GENERATION_TOKENS)] | None = None
    baselines: StrictBool | None = None
    against: Annotated[list[ModelName], Field(max_length=4)] | None = None  # runs or models, one more system each


class DistillationRequest(Body):
    teacher: ModelName  # a model tunesmith loads, or a model name at teacher_base_url
    prompts_file: FileId
    teacher_base_url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://")] | None = None
    teacher_api_key: Annotated[str, Field(max_length=4096)] | None = None  # to the child's environment only
    student: ModelName | None = None
    held_out: Annotated[Number, Field(gt=0, le=100_000)] | None = None  # a share (< 1) or a count
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_GENERATION_TOKENS)] | None = None
    requests_per_minute: Annotated[Number, Field(gt=0, le=100_000)] | None = None


class ExportRequest(Body):
    # Names only here; which format fits the run and which quantisations exist is checked in
    # jobs/exports.py against tunesmith.exports, so the list is written down once.
    format: Annotated[str, Field(min_length=1, max_length=32)]
    quant: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    force: StrictBool = False  # replace an export already there (kept until the new one is complete)


class CleanRequest(Body):
    config: dict[str, Any] | None = None


class SplitRequest(Body):
    ratios: Annotated[str, Field(max_length=64)] | list[Number] = "0.8,0.1,0.1"
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = 0
    stratify: Annotated[str, Field(max_length=255)] | None = None


class KeyRequest(Body):
    name: Annotated[str, Field(min_length=1, max_length=128)] = "default"
    role: Literal["admin", "user"] = "user"


def openapi_body(schema: type[BaseModel]) -> dict:
    """The ``openapi_extra`` that documents a route's JSON body (routes parse their bodies
    themselves, to bound their size and shape the errors, so FastAPI cannot see them)."""
    tree = schema.model_json_schema()
    definitions = tree.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline(tree, definitions)}}}}


def _inline(node: Any, definitions: dict) -> Any:
    """``node`` with every ``$ref`` replaced by the definition it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
        return {k: _inline(v, definitions) for k, v in node.items()}
    return [_inline(v, definitions) for v in node] if isinstance(node, list) else node


def parse(schema: type[BaseModel], body: Any) -> Any:
    """``body`` as ``schema``, or a 400 naming the first field that does not fit."""
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        raise invalid(e) from None


def invalid(error: ValidationError) -> APIError:
    errors = error.errors()
    param = _param(errors[0])
    if errors[0]["type"] == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", "missing_required_parameter", param)
    # A union ("auto" or a number) fails once per member: say every way the field could have been right.
    same = [e for e in errors if _param(e) == param and e["type"] != "missing"]
    return APIError(400, f"Invalid '{param}': {_reason(same)}", "invalid_value", param)


def _param(error: dict) -> str | None:
    return ".".join(str(part) for part in error["loc"] if not _is_union_branch(part)) or None


def _is_union_branch(part: Any) -> bool:
    """pydantic names the union member it tried (``str``, ``list[str]``, ``function-after[...]``)
    in the location; the client's field path has none of them."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "dict"}
                                      or not part.replace("_", "a").isalnum())


def _reason(errors: list[dict]) -> str:
    messages = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errors))
    reason = messages[0] + "".join(f" or {m.removeprefix('Input should be ')}" for m in messages[1:])
    value = errors[0].get("input")
    if isinstance(value, (int, float, bool, type(None))) or (isinstance(value, str) and len(value) <= 40):
        reason += f" (got {value!r})"
    return reason
