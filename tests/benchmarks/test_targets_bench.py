"""The target-split benchmark runs (``--quick``) and prints both paths and their ratios as its last line."""

import json


def test_quick_targets_benchmark_prints_both_paths(tmp_path, capsys):
    from benchmarks import targets

    assert targets.main(["--quick", "--work", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["streamed"]["n"] == result["held"]["n"] == 200
    assert result["decoded_mb"] > 20  # 200 x 256 x 192 x 3 bytes: what the held path holds at once
    assert result["rss_ratio"] > 0 and result["wall_ratio"] > 0
