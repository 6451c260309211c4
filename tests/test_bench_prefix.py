"""`niyama bench prefix`: its sessions share prefixes the way chats do, and its two sides compute the same answers.

The run goes through a tiny random Llama with the default model's tokenizer
(the real model is the benchmark's, not the test's).
"""

from pathlib import Path

import pytest
import torch
from router_server import VOCAB, real_tokenizer
from support import tiny_llama

from niyama.bench import prefix
from niyama.bench.cli import BENCHMARKS
from niyama.worker.loading import LoadedModel


@pytest.fixture(scope="module")
def loaded():
    model = tiny_llama(torch.float32, vocab_size=VOCAB, max_position_embeddings=2048)
    hf = real_tokenizer().hf
    return LoadedModel(model, hf, "tiny", Path("."), torch.device("cpu"), model.dtype, frozenset(), 2048)


def test_sessions_open_with_one_system_prompt_and_send_chatml_turns(loaded):
    sessions = prefix.chat_sessions(loaded, 3, 2, 20, seed=0)
    assert len({tuple(s.prompt) for s in sessions}) == 1  # the shared system prompt
    text = loaded.tokenizer.decode(sessions[0].prompt + sessions[0].messages[0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert len({tuple(m) for s in sessions for m in s.messages}) == 6  # every message its own


def test_cache_on_and_off_give_the_same_answers_and_later_turns_reuse_their_history(loaded):
    runs = {}
    for caching in (True, False):
        runs[caching] = prefix.run_sessions(loaded, prefix.chat_sessions(loaded, 2, 3, 20, 0), 4, caching)
    assert runs[True]["answers"] == runs[False]["answers"]
    assert [len(answers) for answers in runs[True]["answers"]] == [3, 3]
    assert runs[False]["prompt_tokens_cached"] == 0
    # From the second turn on each prompt is the last prompt and answer: all but its last block comes from the cache.
    assert runs[True]["prompt_tokens_cached"] > runs[True]["prompt_tokens_computed"] / 2
    assert len(runs[True]["ttft_first_turn"]) == 2 and len(runs[True]["ttft_later_turns"]) == 4
    assert "prefix" in BENCHMARKS
