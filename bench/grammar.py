"""`niyama bench grammar`: structured output's cost, constrained requests beside the same ones unconstrained.

One run, one model, one request per JSON schema of `grammar_schemas.SCHEMAS`
(cycling), all submitted at once, greedy, served by the server's own engine
(scheduler + worker) in-process:
1. compile: each schema's first compile (the worker's grammar cache emptied
   before each), the cost a schema pays the first time a worker sees it;
2. constrained: the requests with their schema as grammar, at most
   ``--new-tokens`` tokens each; a request ends earlier when its document is
   complete (EOS is then the only token its grammar allows);
3. unconstrained: the same prompts with no grammar, each asked for exactly as
   many tokens as its constrained twin generated (EOS ignored; a warm-up
   constrained run finds the lengths), so both sides run the same step
   shapes and only the grammar differs.
The two sides run side by side, each on its own engine and KV cache over the
same weights, one step of one then one step of the other (`lockstep`), so a
shared machine's slow spells fall on both alike. A side's tokens/s is its
generated tokens / the seconds its own submissions and steps took (prefill
included, the same on both sides). Each constrained run starts with an empty
grammar cache, so its compiles count against it. ``--repeats`` rounds; each
figure is the median with its min-max spread.

``--libraries`` instead compares the grammar libraries themselves
(`grammar_libraries.py`) on the model's tokenizer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

from niyama.engine.core import EngineCore
from niyama.engine.grammar import GrammarSpec
from niyama.engine.protocol import SamplingParams
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import make_scheduler
from niyama.worker.loading import LoadedModel, load_model
from niyama.worker.runner import ModelRunner

from . import grammar_libraries
from .engine import make_runner
from .grammar_schemas import SCHEMAS


@dataclass(frozen=True)
class Job:
    name: str
    prompt: tuple[int, ...]
    spec: GrammarSpec


@dataclass
class Side:
    """One side of one round: every request's generated tokens and the time its steps took."""

    seconds: float  # its submissions and its own steps, start to end
    outputs: list[list[int]]
    mask_fill_seconds: float = 0.0  # per masked step, on the grammar thread
    mask_wait_seconds: float = 0.0  # per masked step, what the sampling still waited for the thread
    mask_apply_seconds: float = 0.0  # per masked step, that wait plus masking the logits: the critical path

    @property
    def tokens(self) -> int:
        return sum(len(output) for output in self.outputs)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Rounds:
    compile_seconds: dict[str, list[float]] = field(default_factory=dict)  # schema -> one per round
    constrained: list[Side] = field(default_factory=list)
    unconstrained: list[Side] = field(default_factory=list)


def jobs(tokenizer, count: int) -> list[Job]:
    """``count`` requests, one per schema (cycling), each asking in a chat turn for that kind of JSON document."""
    names = list(SCHEMAS)
    chosen = [names[i % len(names)] for i in range(count)]
    out = []
    for name in chosen:
        message = [{"role": "user", "content": f"Give an example {name.replace('_', ' ')} as a JSON document."}]
        prompt = tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=True, return_dict=False)
        out.append(Job(name, tuple(prompt), GrammarSpec("json", json.dumps(SCHEMAS[name]))))
    return out


def compile_seconds(runner: ModelRunner, specs: list[GrammarSpec]) -> list[float]:
    """Each spec's first compile: the worker's grammar cache emptied before each one."""
    engine = runner.grammar
    seconds = []
    for spec in specs:
        engine.compiled.clear()
        began = time.perf_counter()
        engine.matcher(spec)
        seconds.append(time.perf_counter() - began)
    engine.compiled.clear()
    return seconds


class SideRun:
    """One side of a round in progress: its own engine core (scheduler + ``runner``), timed step by step."""

    def __init__(self, runner: ModelRunner, todo: list[Job], limits: list[int], constrained: bool, budget: int):
        allocator = BlockAllocator(runner.spec.num_blocks, runner.spec.block_size)
        predictor = LatencyPredictor.reference("a100-llama3-8b")
        scheduler = make_scheduler("fcfs", builtin_tier_config("default"), allocator, predictor, token_budget=budget)
        self.engine = runner.grammar if constrained else None
        if self.engine is not None:
            self.engine.compiled.clear()  # every schema compiles in this run, on its first step
            self.before = self.stats()
        self.core = EngineCore(scheduler, runner, runner.loaded.eos_token_ids, time.monotonic)
        self.outputs: dict[str, list[int]] = {f"r{i}": [] for i in range(len(todo))}
        began = time.perf_counter()
        for i, (job, limit) in enumerate(zip(todo, limits)):
            params = SamplingParams(grammar=job.spec if constrained else None)
            request = GenerationRequest.of(job.prompt, params, limit, "batch", ignore_eos=not constrained)
            self.core.add(request.submitted(f"r{i}", time.monotonic()))
        self.seconds = time.perf_counter() - began

    def step(self) -> None:
        began = time.perf_counter()
        step = self.core.step()
        self.seconds += time.perf_counter() - began
        if step.failed:
            raise RuntimeError(f"engine step failed: {step.failed}")
        for out in step.tokens:
            self.outputs[out.request_id].append(out.token.token_id)

    def stats(self) -> tuple[int, float, float, float]:
        engine = self.engine
        return engine.masked_steps, engine.fill_seconds, engine.wait_seconds, engine.apply_seconds

    def result(self) -> Side:
        if self.engine is None:
            return Side(self.seconds, list(self.outputs.values()))
        steps, *seconds = (now - then for now, then in zip(self.stats(), self.before))
        return Side(self.seconds, list(self.outputs.values()), *(each / max(1, steps) for each in seconds))


def lockstep(sides: list[SideRun]) -> None:
    """Step the sides in turn until all are done: a shared machine's slow spells then fall on each of them alike."""
    while any(side.core.has_work for side in sides):
        for side in sides:
            if side.core.has_work:
                side.step()


def measure(loaded: LoadedModel, todo: list[Job], new_tokens: int, budget: int, repeats: int) -> Rounds:
    """A warm-up run that finds the constrained lengths, then ``repeats`` rounds of compile and both sides."""
    kv_tokens = sum(len(job.prompt) + new_tokens + 16 for job in todo)
    constrained_runner, plain_runner = make_runner(loaded, kv_tokens), make_runner(loaded, kv_tokens)
    rounds = Rounds({job.name: [] for job in todo})
    specs = {job.name: job.spec for job in todo}
    limits = [new_tokens] * len(todo)
    warm_up = SideRun(constrained_runner, todo, limits, True, budget)
    lockstep([warm_up])
    lengths = [len(output) for output in warm_up.result().outputs]
    for index in range(repeats):
        for name, seconds in zip(specs, compile_seconds(constrained_runner, list(specs.values()))):
            rounds.compile_seconds[name].append(seconds)
        sides = [SideRun(constrained_runner, todo, limits, True, budget),
                 SideRun(plain_runner, todo, lengths, False, budget)]  # fmt: skip
        lockstep(sides if index % 2 == 0 else sides[::-1])
        constrained, plain = (side.result() for side in sides)
        rounds.constrained.append(constrained)
        rounds.unconstrained.append(plain)
        print(
            f"round {index + 1}: constrained {constrained.tokens_per_s:.1f} tokens/s, "
            f"unconstrained {plain.tokens_per_s:.1f} tokens/s", file=sys.stderr,
        )  # fmt: skip
    return rounds


def spread(values: list[float], scale: float = 1.0) -> dict[str, float]:
    return {"median": statistics.median(values) * scale, "min": min(values) * scale, "max": max(values) * scale}


def report(rounds: Rounds, todo: list[Job], eos_token_ids: frozenset[int], new_tokens: int) -> dict:
    ratios = [c.tokens_per_s / u.tokens_per_s for c, u in zip(rounds.constrained, rounds.unconstrained)]
    last = rounds.constrained[-1]
    return {
        "requests": len(todo),
        "new_tokens": new_tokens,
        "rounds": len(ratios),
        "generated_tokens": last.tokens,
        "complete_documents": sum(bool(o) and o[-1] in eos_token_ids for o in last.outputs),
        "compile_ms": {name: spread(values, 1e3) for name, values in rounds.compile_seconds.items()},
        "mask_fill_ms_per_step": spread([s.mask_fill_seconds for s in rounds.constrained], 1e3),
        "mask_wait_ms_per_step": spread([s.mask_wait_seconds for s in rounds.constrained], 1e3),
        "mask_apply_ms_per_step": spread([s.mask_apply_seconds for s in rounds.constrained], 1e3),
        "tokens_per_s": {
            "constrained": spread([s.tokens_per_s for s in rounds.constrained]),
            "unconstrained": spread([s.tokens_per_s for s in rounds.unconstrained]),
        },
        "ratio": spread(ratios),
    }


def _figure(values: dict[str, float], unit: str = "", digits: int = 1) -> str:
    return f"{values['median']:.{digits}f}{unit} ({values['min']:.{digits}f}-{values['max']:.{digits}f})"


def text(figures: dict) -> str:
    """The report as Markdown: compile times per schema, then the side-by-side figures."""
    lines = ["| schema | first compile ms, median (min-max) |", "|---|---|"]
    lines += [f"| {name} | {_figure(ms)} |" for name, ms in figures["compile_ms"].items()]
    compile_all = statistics.median(ms["median"] for ms in figures["compile_ms"].values())
    lines += [f"| **median** | {compile_all:.1f} |", ""]
    tps = figures["tokens_per_s"]
    lines += [
        f"{figures['model']} on {figures['device']}: {figures['requests']} concurrent requests, at most "
        f"{figures['new_tokens']} new tokens, greedy; median (min-max) of {figures['rounds']} round(s)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| constrained tokens/s | {_figure(tps['constrained'])} |",
        f"| unconstrained tokens/s (same lengths) | {_figure(tps['unconstrained'])} |",
        f"| **ratio constrained / unconstrained** | **{_figure(figures['ratio'], digits=3)}** |",
        f"| mask fill per step, grammar thread | {_figure(figures['mask_fill_ms_per_step'], ' ms', 2)} |",
        f"| mask wait per step, after the forward pass | {_figure(figures['mask_wait_ms_per_step'], ' ms', 2)} |",
        f"| mask wait + apply per step (critical path) | {_figure(figures['mask_apply_ms_per_step'], ' ms', 2)} |",
        f"| tokens generated per side | {figures['generated_tokens']} |",
        f"| documents complete (ended at EOS) | {figures['complete_documents']} / {figures['requests']} |",
    ]
    return "\n".join(lines)


def libraries(model_id: str | None, repeats: int) -> tuple[str, dict]:
    """The library comparison on the model's tokenizer (no weights loaded)."""
    from transformers import AutoTokenizer

    from niyama.worker.loading import resolve_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(model_id)[1])
    results = grammar_libraries.median_of([grammar_libraries.compare(tokenizer) for _ in range(repeats)])
    summary = grammar_libraries.summary(results)
    return summary + "\n\n" + grammar_libraries.table(results), grammar_libraries.as_dict(results)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench grammar", description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--requests", type=int, default=32, help="one per schema, cycling over the 32")
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens of the constrained requests")
    parser.add_argument("--token-budget", type=int, default=512, help="our scheduler's tokens per step")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; figures are medians with min-max")
    parser.add_argument("--libraries", action="store_true", help="compare llguidance, xgrammar, outlines-core")
    parser.add_argument("--json", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)

    if args.libraries:
        report_text, figures = libraries(args.model_id, args.repeats)
    else:
        loaded = load_model(args.model_id, device=args.device, dtype=args.dtype)
        todo = jobs(loaded.tokenizer, args.requests)
        rounds = measure(loaded, todo, args.new_tokens, args.token_budget, args.repeats)
        figures = {
            "model": loaded.model_id,
            "device": str(loaded.device),
            **report(rounds, todo, loaded.eos_token_ids, args.new_tokens),
        }
        report_text = text(figures)
    print(report_text)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 0
