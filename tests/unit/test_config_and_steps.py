"""The settings table, the frozen config's checks and the step position of a call, with torch alone."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def cfg(pack):
    from tokenmerge.patching import config, settings, steps

    return type("Cfg", (), {"config": config, "settings": settings, "steps": steps})


def test_every_default_lies_in_its_range_and_on_its_slider_step(cfg):
    for name, setting in cfg.settings.SETTINGS.items():
        assert setting.low <= setting.default <= setting.high, name
        if setting.step:
            steps_from_low = (setting.default - setting.low) / setting.step
            assert steps_from_low == pytest.approx(round(steps_from_low)), name


def test_the_default_config_of_each_method_is_valid_and_frozen(cfg):
    Method, MergeConfig = cfg.config.Method, cfg.config.MergeConfig
    for method in Method:
        config = MergeConfig(method, ratio=0.3, max_downsample=1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.ratio = 0.5
        assert config.input_values()["window_y"] == config.window[0]


@pytest.mark.parametrize(
    ("method", "changes", "message"),
    [
        ("IMPORTANCE", {"ratio": 1.2}, "ratio=1.2 is out of range: allowed 0.0 to"),
        ("IMPORTANCE", {"ratio": 0.8, "dst_fraction": 0.25}, "allowed 0.0 to 0.75 (at most 1 - dst_fraction"),
        ("TOME", {"ratio": 0.8}, "allowed 0.0 to 0.75 (at most 1 - 1/(window_y*window_x) with window_y=2"),
        ("SDTM", {"ratio": 0.6, "deviation": 0.2}, "allowed 0.0 to 0.55"),
        ("SDTM", {"ratio": 0.1, "deviation": 0.2}, "deviation=0.2 is out of range: allowed 0.0 to ratio=0.1"),
        ("IMPORTANCE", {"start_percent": 0.6, "end_percent": 0.4}, "start_percent=0.6 must be below end_percent"),
        ("IMPORTANCE", {"block_range": (0.5, 0.5)}, "block_start=0.5 must be below block_end=0.5"),
        ("IMPORTANCE", {"max_downsample": 3}, "max_downsample=3 is not allowed: use one of (1, 2, 4, 8)"),
        ("SDTM", {"cache_weight": 1.5}, "cache_weight=1.5 is out of range: allowed 0.0 to 1.0"),
    ],
)
def test_a_bad_value_is_refused_naming_the_input_the_value_and_the_range(cfg, method, changes, message):
    values = {"ratio": 0.3, "max_downsample": 1, **changes}
    with pytest.raises(ValueError, match=re.escape(message)):
        cfg.config.MergeConfig(cfg.config.Method[method], **values)


def test_ratio_0_is_accepted_whatever_else_is_set_since_it_returns_the_model_unpatched(cfg):
    MergeConfig, Method = cfg.config.MergeConfig, cfg.config.Method
    config = MergeConfig(Method.SDTM, ratio=0.0, max_downsample=1, deviation=0.2, start_percent=0.6, end_percent=0.4)
    assert config.ratio == 0.0
    assert cfg.config.cross_field_problems(Method.SDTM, config.input_values()) == []


def test_a_value_off_by_float_noise_is_accepted(cfg):
    """A frontend with its float rounding turned off sends 0.7500000000000001 for the slider's 0.75."""
    MergeConfig, Method = cfg.config.MergeConfig, cfg.config.Method
    assert MergeConfig(Method.TOME, ratio=0.75 + 1e-16, max_downsample=1).ratio > 0.75
    assert MergeConfig(Method.SDTM, ratio=0.55 + 1e-16, max_downsample=1, deviation=0.2).ratio > 0.55
    with pytest.raises(ValueError, match=r"allowed 0\.0 to 0\.75"):
        MergeConfig(Method.TOME, ratio=0.7501, max_downsample=1)


@settings(max_examples=60, deadline=None)
@given(ratio=st.floats(0.0, 1.0), dst_fraction=st.floats(0.05, 0.9), method=st.sampled_from(["IMPORTANCE", "TOME"]))
def test_a_config_is_accepted_exactly_within_the_ratio_range_and_up_to_max_ratio(pack, ratio, dst_fraction, method):
    from tokenmerge.patching.config import MergeConfig, Method, max_ratio
    from tokenmerge.patching.settings import SETTINGS

    ratio, dst_fraction = round(ratio, 3), round(dst_fraction, 2)
    values = MergeConfig(Method.IMPORTANCE, ratio=0.0, max_downsample=1, dst_fraction=dst_fraction).input_values()
    within_range = SETTINGS["ratio"].problem("ratio", ratio) is None
    allowed = within_range and ratio <= max_ratio(Method[method], {**values, "ratio": ratio})
    try:
        MergeConfig(Method[method], ratio=ratio, max_downsample=1, dst_fraction=dst_fraction)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == allowed


def test_the_step_position_counts_the_schedule_above_the_call_sigma(cfg):
    steps = cfg.steps
    schedule = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.0])
    assert steps.step_position({"sigmas": torch.tensor([14.6]), "sample_sigmas": schedule}) == (0, 0.0)
    assert steps.step_position({"sigmas": torch.tensor([3.0]), "sample_sigmas": schedule}) == (2, 0.5)
    # Heun's corrector evaluates at sigma_{i+1}: counted as step i + 1
    assert steps.step_position({"sigmas": torch.tensor([1.0]), "sample_sigmas": schedule}) == (3, 0.75)
    assert steps.step_position({}) == (0, 0.0)
    assert steps.run_steps({"sample_sigmas": schedule}) == 4
    assert steps.run_steps({}) == 0
    assert steps.current_sigma({"sigmas": [[7.0, 7.0]]}) == 7.0
