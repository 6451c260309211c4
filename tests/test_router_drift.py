"""The router's drift fixes measured against TGI's behaviour as its source shows it."""

from niyama.engine.request import TokenOutput
from niyama.qos.plan import SampledToken
from niyama.router.inference import Sequence, best_first
from niyama.router.streaming import TokenEvent


def sequence(name: str, logprobs: list[float]) -> Sequence:
    events = [
        TokenEvent(i + 1, TokenOutput(name, SampledToken(name, 7, logprob), None), "x", False, "x", None)
        for i, logprob in enumerate(logprobs)
    ]
    return Sequence(None, None, events)  # type: ignore[arg-type]  # ranking reads only the events


def test_best_of_ranks_by_mean_logprob_like_tgi_not_by_sum():
    # TGI's infer/mod.rs generate_best_of: sum of token logprobs / number of tokens, highest wins.
    short = sequence("short", [-2.0])  # sum -2.0, mean -2.0
    long = sequence("long", [-0.5, -0.5, -0.5, -0.5, -0.5])  # sum -2.5, mean -0.5
    assert [s.events[0].output.request_id for s in best_first([short, long])] == ["long", "short"]


def test_best_of_ties_keep_the_first_sequence():
    first, second = sequence("first", [-1.0, -1.0]), sequence("second", [-1.0])
    assert best_first([first, second])[0] is first
