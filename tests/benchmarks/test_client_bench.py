"""The client benchmark runs (``--quick``) and prints its two ratios as the last line's JSON object."""

import json


def test_quick_client_benchmark_prints_both_ratios(tmp_path, capsys):
    from benchmarks import client

    assert client.main(["--quick", "--work", str(tmp_path), "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rss_ratio_4k", "client_over_ceiling", "peak_rss_mb", "images_per_s"} <= set(result)
    assert 0.5 < result["rss_ratio_4k"] < 2 and result["client_over_ceiling"] > 0
    assert len(result["ratios"]) == client.SETTINGS["quick"]["rounds"]
    assert all(result[k] > 0 for k in ("whole_over_ceiling", "thread_over_ceiling", "cpu_over_ceiling"))
