"""episode_success: what it reports, and its refusal without an environment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from opd_core import EpisodeSummary, OPDError
from opd_evaluators.episodes import EpisodeSuccess, success_metrics


def test_success_is_a_positive_reward_unless_the_environment_counts_it() -> None:
    by_reward = [
        EpisodeSummary(turns=2, reward=1.0, end="done", counts={"tool_calls": 1}),
        EpisodeSummary(turns=4, reward=0.0, end="max_turns", counts={"tool_calls": 3}),
    ]
    assert success_metrics(by_reward) == {
        "tool_calls": 2.0,
        "success": 0.5,
        "reward": 0.5,
        "turns": 3.0,
        "budget_cut": 0.5,
        "episodes": 2.0,
    }
    counted = [
        EpisodeSummary(turns=1, reward=0.5, end="done", counts={"success": 0}),
        EpisodeSummary(turns=1, reward=0.5, end="done", counts={"success": 1}),
        EpisodeSummary(turns=1, reward=0.0, end="done"),
    ]
    assert success_metrics(counted)["success"] == pytest.approx(1 / 3)


def test_a_run_without_an_environment_is_refused() -> None:
    ctx = SimpleNamespace(config=SimpleNamespace(environment=None))
    with pytest.raises(OPDError, match="evaluator episode_success runs the environment's episodes"):
        EpisodeSuccess().setup(ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["max_examples", "max_new_tokens", "max_turns"])
def test_bad_options_are_named(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        EpisodeSuccess(**{option: 0})
