"""The worker boundary: `execute(plan) -> StepResult`, one forward pass per step.

The runner holds each request's tokens and sampler (registered once with
`add_sequence`), the paged KV tensors, and the model. A plan says which
positions of which requests to compute and which blocks back them; the
runner checks it against what it holds, lays the step out as one ragged
sequence, runs the model with the paged attention function, and samples a
token for every chunk that ends a request's known tokens. A constrained
request's row is masked by its grammar first (`grammar.py`), the mask
computed on the grammar thread while the forward pass runs.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

import torch

from niyama.engine.protocol import PlanError, SamplingParams, SequenceError, check_prompt
from niyama.qos.plan import Plan, SampledToken, StepResult

from .attention import ATTENTION_NAME
from .grammar import GrammarEngine
from .kv_cache import KVCacheSpec, PagedKVCache
from .layout import StepLayout, lay_out
from .loading import LoadedModel
from .sampling import RequestSampler, choose, full_precision
from .sequence import Sequence


class ModelRunner:
    def __init__(self, loaded: LoadedModel, cache_spec: KVCacheSpec) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.model.set_attn_implementation(ATTENTION_NAME)
        self.spec = cache_spec
        self.cache = PagedKVCache(cache_spec)
        # A step's time counts until every GPU it ran on is done (several when the model is spread).
        self._devices = sorted({d for d in (self.device, *cache_spec.layer_devices) if d.type == "cuda"}, key=str)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.sequences: dict[str, Sequence] = {}
        self._grammar: GrammarEngine | None = None  # built on the first constrained request

    @property
    def grammar(self) -> GrammarEngine:
        if self._grammar is None:
            if self.loaded.tokenizer is None:
                raise SequenceError("this worker has no tokenizer, so it cannot follow a grammar")
            self._grammar = GrammarEngine(self.loaded.tokenizer, self.vocab_size, self.loaded.eos_token_ids)
        return self._grammar

    def add_sequence(self, request_id: str, prompt_ids: list[int] | tuple[int, ...], params: SamplingParams) -> None:
        """Register a request before it appears in a plan."""
        if request_id in self.sequences:
            raise SequenceError(f"request {request_id!r} is already registered")
        check_prompt(prompt_ids, self.loaded.max_context, self.vocab_size)
        sampler = RequestSampler(params, self.device)
        logprobs = [None] if params.prompt_logprobs else None
        matcher = self.grammar.matcher(params.grammar) if params.grammar is not None else None
        self.sequences[request_id] = Sequence(
            request_id, list(prompt_ids), len(prompt_ids), sampler, logprobs, matcher=matcher
        )

    def remove_sequence(self, request_id: str) -> None:
        self.sequences.pop(request_id, None)

    def execute(self, plan: Plan) -> StepResult:
        started = time.perf_counter()
        if plan.is_empty:
            return StepResult((), 0.0)
        self._check(plan)
        layout = lay_out(plan, self.sequences, self.cache)
        seqs = [self.sequences[chunk.request_id] for chunk in layout.sampling_chunks]
        masks = self._grammar.start([seq.matcher for seq in seqs]) if self._grammar is not None else None
        with torch.inference_mode():
            logits = self.model(
                input_ids=layout.input_ids,
                position_ids=layout.positions,
                use_cache=False,
                logits_to_keep=layout.logit_rows,
                niyama_step=layout.attention,
            ).logits[0]
            tokens = self._sample(layout, logits, seqs, masks)
        for device in self._devices:
            torch.cuda.synchronize(device)
        return StepResult(tuple(tokens), time.perf_counter() - started)

    def _check(self, plan: Plan) -> None:
        seen: set[str] = set()
        block_size, num_blocks = self.spec.block_size, self.spec.num_blocks
        for chunk in plan.chunks:
            rid = chunk.request_id
            seq = self.sequences.get(rid)
            if seq is None:
                raise PlanError(f"plan names request {rid!r}, which the worker does not hold")
            if rid in seen:
                raise PlanError(f"plan has two chunks for request {rid!r}")
            seen.add(rid)
            known = len(seq.token_ids)
            if chunk.length < 1 or chunk.start < 0 or chunk.end > known:
                raise PlanError(f"chunk [{chunk.start}, {chunk.end}) of request {rid!r} is outside its {known} tokens")
            if chunk.sample != (chunk.end == known):
                raise PlanError(f"chunk of request {rid!r} must sample exactly when it ends at token {known}")
            table = plan.block_tables.get(rid, ())
            if len(table) * block_size < chunk.end:
                raise PlanError(
                    f"request {rid!r} needs {-(-chunk.end // block_size)} KV blocks for {chunk.end} positions; "
                    f"the plan gives it {len(table)} (block size {block_size}, {num_blocks} blocks in the cache)"
                )
            if any(not 0 <= block < num_blocks for block in table):
                raise PlanError(f"request {rid!r} has a block id outside the cache's {num_blocks} blocks")

    def _sample(
        self, layout: StepLayout, logits: torch.Tensor, seqs: list[Sequence], masks: Future[torch.Tensor] | None
    ) -> list[SampledToken]:
        for rows in layout.prompt_rows:
            seq = self.sequences[rows.request_id]
            logprobs = full_precision(logits[rows.first : rows.first + rows.count]).log_softmax(dim=-1)
            targets = torch.tensor(
                seq.token_ids[rows.position + 1 : rows.position + 1 + rows.count], device=logits.device
            )
            seq.prompt_logprobs.extend(logprobs.gather(1, targets.unsqueeze(1))[:, 0].tolist())
        scores = logits[layout.sample_rows]
        if masks is not None:
            scores = self.grammar.apply(masks, scores)
        choices = choose(scores, [seq.sampler for seq in seqs], [seq.token_ids for seq in seqs])
        tokens = []
        for seq, choice in zip(seqs, choices):
            seq.token_ids.append(choice.token_id)
            if seq.matcher is not None:
                seq.matcher.consume_token(choice.token_id)  # one it refuses fails the matcher: only EOS follows
            prompt = None
            if seq.prompt_logprobs is not None and not seq.delivered_prompt_logprobs:
                prompt, seq.delivered_prompt_logprobs = tuple(seq.prompt_logprobs), True
            tokens.append(SampledToken(seq.request_id, choice.token_id, choice.logprob, choice.top_tokens, prompt))
        return tokens
