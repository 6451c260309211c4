"""`niyama profile` measures one timing per grid point, in the JSON the latency predictor reads."""

import json

from support import tiny_llama, tiny_loaded

from niyama.worker import profile

GRID = profile.ProfileGrid(prefill_tokens=(0, 8, 40), decodes=(0, 1, 3), contexts=(16, 64), repeats=1)


def test_profile_covers_the_grid_with_the_step_features(tmp_path):
    loaded = tiny_loaded(tiny_llama(dtype=profile.torch.float32), max_context=128)
    result = profile.run_profile(loaded, GRID, progress=False)
    assert result["model"] == "tiny-random-llama" and result["dtype"] == "float32"
    samples = result["samples"]
    assert len(samples) == len(profile.shapes(GRID, 128)) == 2 * 3 * 3 - 2
    keys = {"prefill_tokens", "decode_tokens", "decode_context", "prefill_context", "seconds"}
    assert all(set(sample) == keys and sample["seconds"] > 0 for sample in samples)
    # 3 decodes at context 64, with a 8-token chunk continuing a 64-token prompt.
    assert {"prefill_tokens": 8, "decode_tokens": 3, "decode_context": 192, "prefill_context": 64} in [
        {k: v for k, v in sample.items() if k != "seconds"} for sample in samples
    ]
    # A 40-token chunk at context 16 is a first chunk: it attends over itself only.
    assert any(s["prefill_tokens"] == 40 and s["prefill_context"] == 40 and s["decode_tokens"] == 0 for s in samples)
    (tmp_path / "p.json").write_text(json.dumps(result))
    assert json.loads((tmp_path / "p.json").read_text()) == result


def test_grid_points_beyond_the_model_context_are_skipped():
    assert all(max(p, c) < 50 for p, _, c in profile.shapes(GRID, 50))
    assert (40, 1, 64) not in profile.shapes(GRID, 50)
