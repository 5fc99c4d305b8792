"""Device names: one spelling for every stage config, checked without a GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plada_core.devices import check_device, model_device, resolve_device
from plada_core.scoring import ScoringConfig
from plada_core.training import TrainConfig


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_valid_names_need_no_gpu(name):
    check_device(name)
    TrainConfig(device=name)
    ScoringConfig(device=name)


@pytest.mark.parametrize("config", [TrainConfig, ScoringConfig])
@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_bad_names_are_refused_by_every_config_with_the_value_named(config, name):
    with pytest.raises(ValueError, match=f"got {name!r}"):
        config(device=name)


def test_auto_is_the_gpu_only_where_there_is_one():
    expected = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_model_device_follows_the_parameters():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    assert model_device(nn.Linear(2, 2).to("meta")) == torch.device("meta")
