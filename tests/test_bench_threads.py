"""`niyama bench threads`: real steps at each thread count, the speedup and capacity ratio derived from them."""

from __future__ import annotations

import json

import pytest

from niyama.bench.threads import main


def test_times_each_shape_at_each_thread_count(tmp_path, capsys):
    out = tmp_path / "threads.json"
    assert (
        main(["--shape", "8:2:32", "--shape", "0:4:32", "--threads", "1", "2", "--rounds", "1", "--json", str(out)])
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["prefill_tokens"], r["decodes"], r["context"]) for r in rows] == [(8, 2, 32), (0, 4, 32)]
    for row in rows:
        one, two = row["seconds"]["1"], row["seconds"]["2"]
        assert one > 0 and two > 0 and row["speedup"]["1"] == 1.0
        assert row["speedup"]["2"] == pytest.approx(one / two, rel=0.01, abs=0.002)
        assert row["capacity_vs_one_thread_per_core"]["2"] == pytest.approx(one / two / 2, rel=0.01, abs=0.002)
    assert "| 8 | 2 | 32 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--shape", "8x2"], ["--threads", "0"], ["--rounds", "0"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
