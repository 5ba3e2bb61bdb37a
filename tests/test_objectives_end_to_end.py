"""Every objective (OPD, forward KL, JSD, reward+KL, GRPO, SFT) runs in the same loop, chosen
with objective=<name> or loss=<name> alone; the teacher is asked for exactly what the objective
needs, and an advantage function runs only when the loss reads advantages; FLOPs and prompt reuse
are accounted."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError, Prompt, hookimpl
from opd_core.app import run
from opd_core.flops import ModelShape
from opd_core.metrics import read_metrics
from opd_core.plugin_manager import make_plugin_manager

Compose = Callable[[list[str]], DictConfig]
QUIET = ["eval.teacher=false", "eval.at_start=false", "task.eval_size=4"]


class Spy:
    """Records the teacher's top-k requests, the prompts chosen each step and how often an
    advantage function ran."""

    def __init__(self) -> None:
        self.top_ks: list[int] = []
        self.prompt_ids: list[list[str]] = []
        self.advantage_calls = 0

    @hookimpl(wrapper=True)
    def opd_compute_advantages(self, rollouts: Any, scores: Any, rewards_B: Any) -> Any:
        self.advantage_calls += 1
        return (yield)

    @hookimpl(wrapper=True)
    def opd_score_rollouts(self, rollouts: Any, top_k: int) -> Any:
        self.top_ks.append(top_k)
        return (yield)

    @hookimpl(wrapper=True)
    def opd_select_prompts(self, step: int, pool: Sequence[Prompt], count: int) -> Any:
        chosen = yield
        self.prompt_ids.append([p.id for p in chosen])
        return chosen


def run_experiment(
    compose: Compose, models: TinyModels, out: Path, steps: int, extra: list[str]
) -> tuple[Spy, list[dict[str, float]], dict[str, Any]]:
    spy = Spy()
    cfg = compose(tiny_run_overrides(models, out, steps=steps) + QUIET + extra)
    summary = run(cfg, out, pm=make_plugin_manager([spy]))
    return spy, read_metrics(out / "metrics.jsonl"), summary


@pytest.mark.parametrize(
    ("objective", "top_k", "metric"),
    [
        ("opd", 0, "teacher_reverse_kl"),
        ("forward_kl", 20, "forward_kl"),
        ("jsd", 20, "jsd"),
        ("mixed", 0, "advantage/kl_part"),
        ("grpo", None, "solved_groups"),
        ("sft", None, "nll"),
    ],
)
def test_each_objective_asks_the_teacher_for_what_it_needs(
    objective: str,
    top_k: int | None,
    metric: str,
    tiny_models: TinyModels,
    compose_config: Compose,
    tmp_path: Path,
) -> None:
    out = tmp_path / objective
    spy, metrics, summary = run_experiment(
        compose_config, tiny_models, out, 2, [f"objective={objective}"]
    )
    assert spy.top_ks == ([] if top_k is None else [top_k, top_k])
    assert all(metric in m for m in metrics)
    # advantage/* is logged exactly when an advantage function weights the tokens
    has_advantage = objective in ("opd", "mixed", "grpo")
    assert spy.advantage_calls == (2 if has_advantage else 0)
    assert all(("advantage/mean" in m) == has_advantage for m in metrics)
    last = metrics[-1]
    assert ("teacher_reverse_kl" in last) == (top_k is not None)
    # FLOPs: cumulative totals are the per-step sums, and the summary reports the totals
    for key in ("student", "teacher", "student_sampling", "teacher_scoring"):
        steps_sum = sum(m[f"flops_step/{key}"] for m in metrics)
        assert last[f"flops/{key}"] == pytest.approx(steps_sum)
        assert summary["flops"][f"flops/{key}"] == last[f"flops/{key}"]
    assert last["flops/student_training"] > 0
    if objective == "sft":  # the teacher writes the answers; the student only trains
        assert last["flops/teacher_sampling"] > 0 and last["flops/student_sampling"] == 0
    else:
        assert last["flops/student_sampling"] > 0 and last["flops/teacher_sampling"] == 0
    assert (last["flops/teacher_scoring"] > 0) == (top_k is not None)


@pytest.mark.parametrize(
    ("choice", "metric"), [("objective=sft", "nll"), ("loss=forward_kl", "forward_kl")]
)
def test_training_lowers_the_objectives_own_loss(
    choice: str, metric: str, tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    _, metrics, _ = run_experiment(
        compose_config,
        tiny_models,
        tmp_path / choice.partition("=")[2],
        12,
        [choice, "train.lr=1e-2", "train.prompts_per_step=16"],
    )
    values = [m[metric] for m in metrics]
    assert sum(values[-3:]) / 3 < 0.7 * sum(values[:3]) / 3, values


def test_single_prompt_mode_reuses_one_prompt_for_every_sample(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    spy, metrics, _ = run_experiment(
        compose_config,
        tiny_models,
        tmp_path / "single",
        3,
        [
            "+experiment=single_prompt",
            "train.steps=3",
            "train.prompts_per_step=1",
            "train.samples_per_prompt=12",
            "train.micro_batch_size=12",
        ],
    )
    assert len(spy.prompt_ids) == 3
    assert len({pid for step in spy.prompt_ids for pid in step}) == 1
    assert [m["sequences"] for m in metrics] == [12.0, 12.0, 12.0]
    assert [m["passes"] for m in metrics] == [1.0, 2.0, 3.0]


def test_passes_set_the_number_of_steps_over_a_prompt_pool(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    spy, metrics, summary = run_experiment(
        compose_config,
        tiny_models,
        tmp_path / "passes",
        100,  # ignored: passes win
        ["train.pool_size=6", "train.passes=2", "train.prompts_per_step=4"],
    )
    assert summary["steps"] == math.ceil(2 * 6 / 4) == len(metrics)
    seen = [pid for step in spy.prompt_ids for pid in step]
    assert len(set(seen)) == 6 and len(seen) == 12
    assert metrics[-1]["passes"] == pytest.approx(2.0)
    saved = json.loads((tmp_path / "passes" / "summary.json").read_text())
    assert saved["steps"] == 3


def test_a_pool_larger_than_the_task_is_refused_with_the_limit(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    with pytest.raises(OPDError, match=r"pool_size=500 but the task has only 200"):
        run_experiment(compose_config, tiny_models, tmp_path / "big", 1, ["train.pool_size=500"])


def test_grpo_on_a_task_without_grader_names_the_problem(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    class NoGrader:
        @hookimpl(tryfirst=True, wrapper=True)
        def opd_grade_completions(self, prompts: Any, completions: Any) -> Any:
            yield
            return None

    cfg = compose_config(
        tiny_run_overrides(tiny_models, tmp_path / "rl", steps=1) + QUIET + ["objective=grpo"]
    )
    with pytest.raises(OPDError, match="no grader"):
        run(cfg, tmp_path / "rl", pm=make_plugin_manager([NoGrader()]))


def test_a_plugin_can_declare_the_teachers_shape_for_flops(
    tiny_models: TinyModels, compose_config: Compose, tmp_path: Path
) -> None:
    class RemoteTeacherShape:
        """What a remote teacher's plugin does: describe a model the run cannot measure."""

        @hookimpl(tryfirst=True)
        def opd_model_shape(self, role: str) -> ModelShape | None:
            if role != "teacher":
                return None
            return ModelShape(matmul_params=1000, head_params=0, layers=0, attention_width=0)

    out = tmp_path / "shape"
    cfg = compose_config(tiny_run_overrides(tiny_models, out, steps=2) + QUIET)
    run(cfg, out, pm=make_plugin_manager([RemoteTeacherShape()]))
    for m in read_metrics(out / "metrics.jsonl"):
        scored_tokens = m["flops_step/teacher_scoring"] / (2 * 1000)  # 2N per real token
        assert scored_tokens == int(scored_tokens) and scored_tokens > m["tokens"]
