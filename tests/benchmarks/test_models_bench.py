"""The model benchmark runs (``--quick``: digits) and says which model ``auto`` picks and whether it is the best."""

import json


def test_quick_models_benchmark_reports_both_models_and_the_pick(capsys):
    from benchmarks import models
    from plada_core.model_choice import COLOUR_MODEL, GREY_MODEL

    assert models.main(["--quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    (task,) = result["tasks"]
    assert task["task"] == "digits" and task["auto"] == GREY_MODEL  # grey 8 px digits
    assert set(task["models"]) == {GREY_MODEL, COLOUR_MODEL}
    assert all(0 < m["test_acc"] <= 1 for m in task["models"].values()) and isinstance(task["auto_best"], bool)
    assert any(line.startswith("| task |") for line in out)  # the table (the weights package prints too)
