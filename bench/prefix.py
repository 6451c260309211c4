"""`niyama bench prefix`: multi-turn chats through the engine with the prefix cache on and off.

Eight chat sessions of six turns run at once on the default model, in
process (the engine core: scheduler, paged worker), each session sending
its next turn the moment its previous answer is complete (a closed loop with
no think time). Every session opens with the same system prompt; turn k's
prompt is turn k-1's prompt, its answer and a new user message, in ChatML
tokens, so the history reaches about 1,000 tokens by the last turn. The same
sessions run with `prefix_caching` on and off, side by side in alternating
order, greedy with a fixed answer length, so both compute the same tokens:
the run checks that every answer is identical.

Reported: time to first token (submission to first token) of the first
turns and of the later ones (p50 and p90 over the run's turns), the on/off
ratio of the later turns' p50, the prompt tokens the cache served, and the
wall time of each run; median (min–max) over rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

from niyama.engine.core import EngineCore
from niyama.engine.protocol import SamplingParams
from niyama.engine.request import GenerationRequest
from niyama.qos.config import builtin_tier_config
from niyama.qos.kv_blocks import BlockAllocator
from niyama.qos.predictor import LatencyPredictor
from niyama.qos.scheduler import make_scheduler
from niyama.worker.loading import LoadedModel, load_model

from .engine import make_runner
from .prompts import prompt_token_ids
from .report import median_range

SYSTEM_TOKENS = 250


@dataclass
class Session:
    index: int
    prompt: list[int]  # the next turn's prompt
    messages: list[list[int]]  # the user messages still to send
    turn: int = 0
    answers: list[list[int]] = field(default_factory=list)


def chat_sessions(loaded: LoadedModel, sessions: int, turns: int, message_tokens: int, seed: int) -> list[Session]:
    """Sessions whose turns are ChatML: a shared system prompt, then user messages from the corpus."""
    tokenizer = loaded.tokenizer

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    texts = prompt_token_ids(tokenizer, [SYSTEM_TOKENS] + [message_tokens] * (sessions * turns), seed)
    system = ids("<|im_start|>system\n") + texts[0] + ids("<|im_end|>\n")
    user = [ids("<|im_start|>user\n") + text + ids("<|im_end|>\n<|im_start|>assistant\n") for text in texts[1:]]
    return [Session(s, system, user[s * turns : (s + 1) * turns]) for s in range(sessions)]


def run_sessions(
    loaded: LoadedModel,
    sessions: list[Session],
    answer_tokens: int,
    caching: bool,
    policy: str = "niyama",
    **options: object,
) -> dict:
    """All sessions to their end; each turn's TTFT, the answers, the cached prompt tokens, the wall time."""
    close = loaded.tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    longest = max(len(s.prompt) + sum(len(m) + answer_tokens + len(close) for m in s.messages) for s in sessions)
    runner = make_runner(loaded, len(sessions) * (longest + 64))
    allocator = BlockAllocator(runner.spec.num_blocks, runner.spec.block_size)
    scheduler = make_scheduler(
        policy, builtin_tier_config("default"), allocator, LatencyPredictor.reference("a100-llama3-8b"),
        prefix_caching=caching, **options,
    )  # fmt: skip
    core = EngineCore(scheduler, runner, loaded.eos_token_ids, time.perf_counter)
    live: dict[str, tuple[Session, float, list[int]]] = {}
    ttfts: dict[int, list[float]] = {}
    longest_prompt = 0

    def send(session: Session) -> None:
        nonlocal longest_prompt
        session.prompt = session.prompt + session.messages[session.turn]
        longest_prompt = max(longest_prompt, len(session.prompt))
        request = GenerationRequest.of(session.prompt, SamplingParams(), answer_tokens, "interactive", ignore_eos=True)
        request_id = f"s{session.index}t{session.turn}"
        live[request_id] = (session, time.perf_counter(), [])
        core.add(request.submitted(request_id, time.perf_counter()))

    began = time.perf_counter()
    for session in sessions:
        send(session)
    while core.has_work:
        step = core.step()
        if step.failed:
            raise RuntimeError(f"engine step failed: {step.failed}")
        now = time.perf_counter()
        for out in step.tokens:
            session, sent, answer = live[out.request_id]
            if not answer:
                ttfts.setdefault(session.turn, []).append(now - sent)
            answer.append(out.token.token_id)
            if out.finish_reason is not None:
                del live[out.request_id]
                session.answers.append(answer)
                session.prompt = session.prompt + answer + close
                session.turn += 1
                if session.turn < len(session.messages):
                    send(session)
    wall = time.perf_counter() - began
    runner.model.set_attn_implementation("sdpa")
    cached = sum(tier.prompt_tokens_cached for tier in scheduler.stats().tiers.values())
    computed = sum(tier.prompt_tokens_computed for tier in scheduler.stats().tiers.values())
    return {
        "ttft_first_turn": ttfts[0], "ttft_later_turns": [t for turn, ts in ttfts.items() if turn for t in ts],
        "answers": [s.answers for s in sessions], "prompt_tokens_cached": cached,
        "prompt_tokens_computed": computed, "wall_seconds": wall, "longest_prompt": longest_prompt,
    }  # fmt: skip


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="niyama bench prefix", description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--message-tokens", type=int, default=100, help="tokens of each user message (default 100)")
    parser.add_argument("--answer-tokens", type=int, default=32, help="tokens of each answer (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="on/off pairs, order alternating (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="niyama", help="the scheduler on both sides: niyama (default), edf, fcfs")
    parser.add_argument("--token-budget", type=int, help="tokens per step with fixed chunking (fcfs, edf)")
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    loaded = load_model(args.model_id)
    figures: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    answers = {}
    longest = 0
    for index in range(args.rounds):
        for caching in (True, False) if index % 2 == 0 else (False, True):
            sessions = chat_sessions(loaded, args.sessions, args.turns, args.message_tokens, args.seed)
            options = {} if args.token_budget is None else {"token_budget": args.token_budget}
            run = run_sessions(loaded, sessions, args.answer_tokens, caching, args.policy, **options)
            name = "on" if caching else "off"
            answers.setdefault(name, []).append(run["answers"])
            longest = run["longest_prompt"]
            row = {
                "ttft_first_p50": quantile(run["ttft_first_turn"], 0.5),
                "ttft_later_p50": quantile(run["ttft_later_turns"], 0.5),
                "ttft_later_p90": quantile(run["ttft_later_turns"], 0.9),
                "wall_seconds": run["wall_seconds"],
                "cache_hit_pct": 100
                * run["prompt_tokens_cached"]
                / (run["prompt_tokens_cached"] + run["prompt_tokens_computed"]),
            }
            for key, value in row.items():
                figures[name].setdefault(key, []).append(value)
            print(f"round {index + 1} cache {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                  file=sys.stderr)  # fmt: skip
    ratios = [off / on for on, off in zip(figures["on"]["ttft_later_p50"], figures["off"]["ttft_later_p50"])]
    identical = all(run == answers["on"][0] for run in answers["on"] + answers["off"])
    print(f"model {loaded.model_id} on {loaded.device}; {args.sessions} sessions x {args.turns} turns, "
          f"{args.message_tokens}-token messages, {args.answer_tokens}-token answers, a {SYSTEM_TOKENS}-token "
          f"system prompt; the longest prompt {longest} tokens; policy {args.policy}, tier interactive")  # fmt: skip
    print("| prefix cache | TTFT turn 1 p50 (s) | TTFT turns 2+ p50 (s) | TTFT turns 2+ p90 (s) "
          "| prompt tokens cached % | wall (s) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("on", "off"):
        f = figures[name]
        cells = [median_range(f[key]) for key in ("ttft_first_p50", "ttft_later_p50", "ttft_later_p90")]
        cells += [median_range(f["cache_hit_pct"], 1), median_range(f["wall_seconds"], 0)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"TTFT turns 2+ p50, off / on: {median_range(ratios)}x; answers identical on and off: {identical}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(args), "figures": figures, "ratio_later_p50": ratios, "identical": identical},
                      out, indent=1)  # fmt: skip
    return 0 if identical else 1
