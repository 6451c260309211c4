"""`niyama bench grammar --libraries`: llguidance, xgrammar and outlines-core on the same grammars and tokenizer.

For each grammar of `grammar_cases.CASES`: the time to compile it for the
tokenizer, the median time of one token mask along its example's tokens
(computed into a bitmask, as a worker would), whether the example is
accepted, and the library's reason when it refuses the grammar. A library
that is not installed is skipped.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from niyama.engine.grammar import GrammarSpec

from .grammar_cases import CASES

LIBRARIES = ("llguidance", "xgrammar", "outlines_core")


@dataclass
class Walk:
    """One library on one grammar."""

    compile_seconds: float = 0.0
    mask_seconds: float = 0.0  # median over the example's tokens
    accepted: bool = False
    refused: str = ""  # the library's reason, when it could not compile the grammar


def _allowed(mask: np.ndarray, token: int) -> bool:
    return bool((int(mask[token // 32]) >> (token % 32)) & 1)


def _walk(tokens: list[int], fill: Callable[[np.ndarray], None], consume: Callable[[int], bool], words: int) -> Walk:
    mask = np.zeros(words, dtype=np.int32)
    times = []
    accepted = True
    for token in tokens:
        began = time.perf_counter()
        fill(mask)
        times.append(time.perf_counter() - began)
        if not _allowed(mask, token) or not consume(token):
            accepted = False
            break
    return Walk(mask_seconds=statistics.median(times), accepted=accepted)


def _timed(compile_: Callable[[], object]) -> tuple[object, float]:
    began = time.perf_counter()
    compiled = compile_()
    return compiled, time.perf_counter() - began


def llguidance_runner(tokenizer) -> Callable[[GrammarSpec, list[int]], Walk]:
    import llguidance
    import llguidance.hf

    lltok = llguidance.hf.from_tokenizer(tokenizer)
    words = (lltok.vocab_size + 31) // 32

    def run(spec: GrammarSpec, tokens: list[int]) -> Walk:
        grammar = spec.grammar()  # as the worker builds it (engine/grammar.py)
        matcher, seconds = _timed(lambda: llguidance.LLMatcher(lltok, grammar, log_level=0))
        if matcher.is_error():
            return Walk(compile_seconds=seconds, refused=matcher.get_error())
        walk = _walk(tokens, lambda m: matcher.unsafe_compute_mask_ptr(m.ctypes.data, m.nbytes), matcher.consume_token,
                     words)  # fmt: skip
        walk.compile_seconds = seconds
        return walk

    return run


def xgrammar_runner(tokenizer) -> Callable[[GrammarSpec, list[int]], Walk]:
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def run(spec: GrammarSpec, tokens: list[int]) -> Walk:
        try:
            compiled, seconds = _timed(
                lambda: (
                    compiler.compile_json_schema(spec.value)
                    if spec.kind == "json"
                    else compiler.compile_regex(spec.value)
                )
            )
        except Exception as error:  # noqa: BLE001 - the library's reason is the measurement
            return Walk(refused=str(error).splitlines()[0])
        matcher = xgrammar.GrammarMatcher(compiled)
        bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)

        def fill(mask: np.ndarray) -> None:
            matcher.fill_next_token_bitmask(bitmask)
            mask[:] = bitmask[0].numpy()

        walk = _walk(tokens, fill, matcher.accept_token, bitmask.shape[1])
        walk.compile_seconds = seconds
        return walk

    return run


def outlines_runner(tokenizer) -> Callable[[GrammarSpec, list[int]], Walk]:
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    eos = tokenizer.eos_token_id
    special = set(tokenizer.all_special_ids)
    vocab: dict[bytes, list[int]] = {}
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            vocab.setdefault(tokenizer.decode([token_id]).encode(), []).append(token_id)
    vocabulary = outlines_core.Vocabulary(eos, vocab)
    words = (len(tokenizer) + 31) // 32

    def run(spec: GrammarSpec, tokens: list[int]) -> Walk:
        try:
            regex = build_regex_from_schema(spec.value) if spec.kind == "json" else spec.value
            index, seconds = _timed(lambda: outlines_core.Index(regex, vocabulary))
        except Exception as error:  # noqa: BLE001 - the library's reason is the measurement
            return Walk(refused=str(error).splitlines()[0])
        guide = outlines_core.Guide(index)

        def consume(token: int) -> bool:
            guide.advance(token)
            return True

        walk = _walk(tokens, lambda m: guide.write_mask_into(m.ctypes.data, m.size, 4), consume, words)
        walk.compile_seconds = seconds
        return walk

    return run


RUNNERS = {"llguidance": llguidance_runner, "xgrammar": xgrammar_runner, "outlines_core": outlines_runner}


def compare(tokenizer) -> dict[str, dict[str, Walk]]:
    """Every installed library on every case: {library: {case name: Walk}}."""
    results: dict[str, dict[str, Walk]] = {}
    for library in LIBRARIES:
        if importlib.util.find_spec(library) is None:
            continue
        run = RUNNERS[library](tokenizer)
        results[library] = {}
        for case in CASES:
            tokens = tokenizer.encode(case.example, add_special_tokens=False)
            results[library][case.name] = run(case.spec, tokens)
    return results


def table(results: dict[str, dict[str, Walk]]) -> str:
    """Markdown: one row per grammar, compile ms / mask us per library (or why it refused)."""
    libraries = list(results)
    lines = ["| grammar | " + " | ".join(f"{lib} compile ms / mask us" for lib in libraries) + " |"]
    lines.append("|---|" + "---|" * len(libraries))
    for case in CASES:
        cells = []
        for lib in libraries:
            walk = results[lib][case.name]
            if walk.refused:
                cells.append(f"refused: {walk.refused[:80]}")
            else:
                note = "" if walk.accepted else " (example rejected)"
                cells.append(f"{walk.compile_seconds * 1e3:.1f} / {walk.mask_seconds * 1e6:.0f}{note}")
        lines.append(f"| {case.name} | " + " | ".join(cells) + " |")
    medians = []
    for lib in libraries:
        ok = [w for w in results[lib].values() if not w.refused]
        medians.append(
            f"{statistics.median(w.compile_seconds for w in ok) * 1e3:.1f} / "
            f"{statistics.median(w.mask_seconds for w in ok) * 1e6:.0f}"
            if ok else "-"
        )  # fmt: skip
    lines.append("| **median** | " + " | ".join(medians) + " |")
    return "\n".join(lines)


def median_of(runs: list[dict[str, dict[str, Walk]]]) -> dict[str, dict[str, Walk]]:
    """Several `compare` runs as one: each time the median over the runs (acceptance and refusals do not vary)."""
    merged: dict[str, dict[str, Walk]] = {}
    for lib, walks in runs[0].items():
        merged[lib] = {}
        for name, walk in walks.items():
            each = [run[lib][name] for run in runs]
            merged[lib][name] = Walk(
                statistics.median(w.compile_seconds for w in each), statistics.median(w.mask_seconds for w in each),
                walk.accepted, walk.refused,
            )  # fmt: skip
    return merged


def summary(results: dict[str, dict[str, Walk]]) -> str:
    """Markdown: one row per library, the medians over the grammars it compiled and how many it got right."""
    lines = ["| library | compile ms (median) | mask us (median) | examples accepted | grammars refused |"]
    lines.append("|---|---|---|---|---|")
    for lib, walks in results.items():
        ok = [w for w in walks.values() if not w.refused]
        compile_ms = f"{statistics.median(w.compile_seconds for w in ok) * 1e3:.1f}" if ok else "-"
        mask_us = f"{statistics.median(w.mask_seconds for w in ok) * 1e6:.0f}" if ok else "-"
        accepted = sum(w.accepted for w in walks.values())
        lines.append(f"| {lib} | {compile_ms} | {mask_us} | {accepted} / {len(walks)} | {len(walks) - len(ok)} |")
    return "\n".join(lines)


def as_dict(results: dict[str, dict[str, Walk]]) -> dict:
    return {lib: {name: vars(walk) for name, walk in walks.items()} for lib, walks in results.items()}
