"""Incremental detokenization and stop sequences, on the real SmolLM2 tokenizer."""

import random

from hypothesis import assume, given
from hypothesis import strategies as st
from router_server import real_tokenizer

from niyama.engine.request import TokenOutput
from niyama.qos.plan import SampledToken
from niyama.router.detokenizer import IncrementalDetokenizer
from niyama.router.stop_sequences import StopMatcher
from niyama.router.streaming import TokenPipeline

TEXT = "Hello world, café 日本語 and emoji 🎉🙂 done. Ünïcödé ✓"


def deltas(ids, prompt=()):
    detokenizer = IncrementalDetokenizer(real_tokenizer().decode, prompt)
    return [detokenizer.add(token_id) for token_id in ids], detokenizer


def test_multibyte_characters_split_over_tokens_are_emitted_whole():
    tokenizer = real_tokenizer()
    ids = tokenizer.encode(TEXT)
    pieces = [tokenizer.decode([token_id]) for token_id in ids]
    assert any("\ufffd" in piece for piece in pieces)  # the test input really splits characters
    texts, _ = deltas(ids)
    assert all("\ufffd" not in text for text in texts)
    assert "" in texts  # a token that only starts a character emits nothing yet
    assert "".join(texts) == TEXT == tokenizer.decode(ids)


@given(st.lists(st.integers(3, 49151), min_size=1, max_size=40), st.lists(st.integers(3, 49151), max_size=8))
def test_incremental_text_is_the_full_decode_for_any_ids(ids, prompt):
    tokenizer = real_tokenizer()
    # A prompt is the encoding of a text, so it never ends inside a character whose bytes the output could finish.
    assume(not tokenizer.decode(prompt).endswith("\ufffd"))
    texts, detokenizer = deltas(ids, prompt)
    assert "".join(texts) + detokenizer.flush() == tokenizer.decode(ids)


def test_stop_matcher_holds_back_what_could_start_a_stop_sequence():
    matcher = StopMatcher(["\nUser:", "END"])
    assert matcher.feed("Hello") == ("Hello", None)
    assert matcher.feed(" there\nUs") == (" there", None)  # "\nUs" may become "\nUser:"
    assert matcher.feed("ually") == ("\nUsually", None)  # it did not
    assert matcher.feed(" E") == (" ", None)
    assert matcher.feed("N") == ("", None)
    assert matcher.feed("Dgame") == ("", "END")  # matched across three feeds; nothing of it released


def test_stop_matcher_takes_the_earliest_match_and_releases_the_rest_at_the_end():
    matcher = StopMatcher(["bc", "abcd", ""])
    assert matcher.feed("xxab") == ("xx", None)
    assert matcher.feed("cd") == ("", "abcd")  # "abcd" starts first
    assert StopMatcher([]).feed("anything") == ("anything", None)
    tail = StopMatcher(["stop"])
    assert tail.feed("go st") == ("go ", None) and tail.flush() == "st"


def outputs(ids, last_reason="length"):
    return [
        TokenOutput("r", SampledToken("r", token_id, -0.5), last_reason if i == len(ids) - 1 else None)
        for i, token_id in enumerate(ids)
    ]


def test_pipeline_stops_on_a_sequence_spanning_tokens():
    tokenizer = real_tokenizer()
    ids = tokenizer.encode(" the cat sat on the mat and more")
    pipeline = TokenPipeline(tokenizer, [], ["on the m"])
    events = []
    for output in outputs(ids):
        events.append(pipeline.push(output))
        if events[-1].finish_reason:
            break
    assert events[-1].finish_reason == "stop_sequence" and len(events) < len(ids)
    assert "".join(event.delta for event in events) == pipeline.visible == " the cat sat "
    assert pipeline.text_with_stop() == " the cat sat on the m"  # TGI's generated_text keeps the stop sequence


def test_pipeline_leaves_special_tokens_out_of_the_visible_text():
    tokenizer = real_tokenizer()
    ids = tokenizer.encode(" yes") + [2]  # <|im_end|>
    pipeline = TokenPipeline(tokenizer, [], [])
    events = [pipeline.push(output) for output in outputs(ids, "eos_token")]
    assert [event.special for event in events] == [False, True]
    assert events[-1].text == "<|im_end|>" and events[-1].delta == ""
    assert pipeline.visible == " yes" and events[-1].finish_reason == "eos_token"


def test_pipeline_visible_text_matches_a_full_decode_on_random_tokens():
    tokenizer = real_tokenizer()
    rng = random.Random(3)
    for _ in range(20):
        ids = [rng.randrange(17, 49152) for _ in range(rng.randint(1, 30))]
        pipeline = TokenPipeline(tokenizer, [], [])
        for output in outputs(ids):
            pipeline.push(output)
        assert pipeline.visible == tokenizer.hf.decode(ids, skip_special_tokens=True)
