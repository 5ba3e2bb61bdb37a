"""Every shipped config composes and validates without loading weights; bad values are named."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from opd_core.config import CONF_DIR, RunConfig, TrainConfig, to_plain_dict
from opd_core.errors import OPDError
from opd_core.failures import describe
from opd_core.modeling import ModelSpec
from opd_core.plugin_manager import build_registry, make_plugin_manager
from opd_core.registry import COMPONENT_KINDS
from opd_core.trainer import build_components
from opd_core.update import lr_factor

Compose = Callable[[list[str]], DictConfig]
ADDED_GROUPS = {"task", "teacher", "experiment"}  # chosen with "+", not in the defaults list


ROOT = Path(__file__).resolve().parents[2]
CONF_DIRS = [CONF_DIR, *sorted((ROOT / "plugins").glob("*/conf"))]
"""The top-level conf/ and every built-in plugin's own."""


def shipped_files() -> dict[tuple[str, str], Path]:
    """``(group, option)`` of every shipped config file (top-level groups only), and its path."""
    return {
        (group.name, option.stem): option
        for root in CONF_DIRS
        for group in root.iterdir()
        if group.is_dir() and group.name != "hydra"
        for option in group.glob("*.yaml")
    }


def shipped_options() -> list[tuple[str, str]]:
    return sorted(shipped_files())


def overrides_for(group: str, option: str) -> list[str]:
    if group == "task":
        return [f"+task={option}", "+teacher=hf", "teacher.model.path=/m"]
    if group == "teacher" and option == "multi":  # its teachers have their own model paths
        return ["+task=arithmetic", "+teacher=multi"]
    if group == "teacher":
        no_weights = {"remote", "context", "student_initial"}  # a URL, or the student's weights
        model = [] if option in no_weights else ["teacher.model.path=/m"]
        return ["+task=arithmetic", f"+teacher={option}", *model]
    if group == "evaluator":
        return [f"evaluator=[{option}]"]
    if group == "experiment":
        return [f"+experiment={option}"]
    if group == "environment":
        return [f"+environment={option}"]
    if group == "advantage":  # an advantage needs a loss that reads it
        return ["objective=opd", f"advantage={option}"]
    if group == "loss" and option == "importance_sampling":  # and the other way round
        return ["objective=opd"]
    return [f"{group}={option}"]


@pytest.mark.parametrize(("group", "option"), shipped_options())
def test_every_shipped_config_composes_and_validates(
    compose_config: Compose, group: str, option: str
) -> None:
    cfg = compose_config(overrides_for(group, option))
    config = RunConfig.from_dict(cfg)
    components = build_components(build_registry(make_plugin_manager()), config)
    assert {"task", "teacher", "sampler", "prompts", "loss"} <= set(components)
    assert ("advantage" in components) == (config.advantage is not None)


@pytest.mark.parametrize(("group", "option"), shipped_options())
def test_every_config_file_starts_with_the_command_that_runs_it(group: str, option: str) -> None:
    lines = shipped_files()[(group, option)].read_text().splitlines()
    comments = [line for line in lines[:3] if line.startswith("#")]
    assert any("python -m opd_core" in line for line in comments), f"{group}/{option}.yaml"


def test_no_arguments_selects_the_demo(compose_config: Compose) -> None:
    config = RunConfig.from_dict(compose_config([]))
    assert config.task["name"] == "arithmetic"
    assert config.teacher["model"]["path"] == "demo://arithmetic/teacher"
    assert config.student.model.path == "demo://arithmetic/student"


def test_math_with_qwen3_32b_defaults_to_the_seed_student(compose_config: Compose) -> None:
    cfg = compose_config(["+task=math", "+teacher=qwen3_32b"])
    config = RunConfig.from_dict(cfg)
    assert config.student.model.path == "Qwen/Qwen3-8B-Base"
    assert config.teacher["model"]["path"] == "Qwen/Qwen3-32B"
    assert config.task["name"] == "math"
    assert config.train.max_new_tokens == 8192  # the task picked the math schedule
    assert "demo" not in cfg or config.task["name"] != "arithmetic"


def test_command_line_student_beats_the_teacher_default(compose_config: Compose) -> None:
    cfg = compose_config(["+task=math", "+teacher=qwen3_32b", "student=qwen3_1_7b"])
    assert RunConfig.from_dict(cfg).student.model.path == "Qwen/Qwen3-1.7B"


def test_task_without_teacher_is_an_error(compose_config: Compose) -> None:
    with pytest.raises(OPDError, match=r"no teacher; add \+teacher=<name>"):
        RunConfig.from_dict(compose_config(["+task=math"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-0.1", r"Invalid train.lr=-0.1: expected a positive learning rate"),
        ("train.prompts_per_step=0", r"Invalid train.prompts_per_step=0: expected a positive"),
        ("train.micro_batch_size=0", r"Invalid train.micro_batch_size=0"),
        ("train.temperature=0", r"Invalid train.temperature=0"),
        ("checkpoint.keep=0", r"Invalid checkpoint.keep=0"),
        ("+train.learning_rate=1", r"Unknown key train.learning_rate; train accepts: steps"),
        ("train.steps=abc", r"Invalid train.steps='abc': expected an integer\."),
        ("train.steps=2.5", r"Invalid train.steps=2.5: expected an integer\."),
        ("train.steps=true", r"Invalid train.steps=True: expected an integer\."),
        ("train.lr=fast", r"Invalid train.lr='fast': expected a finite number\."),
        ("train.lr=nan", r"Invalid train.lr=nan: expected a finite number\."),
        ("train.max_grad_norm=inf", r"Invalid train.max_grad_norm=inf: expected a finite"),
        ("train.betas=[2.0,3.0]", r"Invalid train.betas\[0\]=2.0: expected a number in \[0, 1\)"),
        ("train.betas=[0.9]", r"Invalid train.betas=\[0.9\]: expected a list of 2 values"),
        ("train.betas=[a,b]", r"expected a list of finite numbers"),
        ("train.pool_size=abc", r"Invalid train.pool_size='abc': expected an integer or null"),
        ("train.long_prompts=cut", r"Invalid train.long_prompts=.cut.: expected one of skip"),
        ("train.precision=half", r"Invalid train.precision=.half.: expected one of fp32, bf16"),
        ("seed=abc", r"Invalid seed='abc': expected an integer\."),
        ("seed=-1", r"Invalid seed=-1"),
        ("resume=maybe", r"Invalid resume='maybe': expected true or false\."),
        ("progress=1", r"Invalid progress=1: expected true or false\."),
        ("eval.temperature=-1", r"Invalid eval.temperature=-1: expected >= 0"),
        ("eval.temperature=nan", r"Invalid eval.temperature=nan: expected a finite number"),
        ("eval.at_start=yes", r"Invalid eval.at_start='yes': expected true or false"),
        ("checkpoint.every=1.5", r"Invalid checkpoint.every=1.5: expected an integer"),
        ("+student.lora.r=abc", r"Invalid student.lora.r='abc': expected an integer"),
        ("+bogus=1", r"Unknown config key 'bogus'; the top-level keys are: advantage"),
        ("train=5", r"Invalid train=5: expected a section of train\.\* settings"),
    ],
)
def test_invalid_values_get_one_clear_sentence(
    compose_config: Compose, override: str, message: str
) -> None:
    with pytest.raises(OPDError, match=message):
        RunConfig.from_dict(compose_config([override]))


def test_missing_required_value_is_named(compose_config: Compose) -> None:
    with pytest.raises(OPDError, match=r"teacher.model.path is required"):
        RunConfig.from_dict(compose_config(["+task=arithmetic", "+teacher=hf"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "objective=opd advantage.name=reverse_kll",
            r"Unknown advantage 'reverse_kll'. Available: (clipped_reverse_kl, )?grpo, mixed, "
            r"reverse_kl\.",
        ),
        (
            "loss.name=nope",
            r"Unknown loss 'nope'. Available: cross_entropy, (\w+, )*forward_kl, (\w+, )*jsd",
        ),
        (
            "objective=opd advantage.coef=-1",
            r"Invalid advantage 'reverse_kl' config: coef must be positive",
        ),
        (
            "objective=opd +advantage.beta=1",
            r"advantage 'reverse_kl' has no option beta; its options are: coef, gamma\.",
        ),
        (
            "objective=opd advantage.coef=nan",
            r"Invalid advantage.coef=nan: expected a finite number\.",
        ),
        (
            "objective=opd advantage.coef=abc",
            r"Invalid advantage.coef='abc': expected a finite number\.",
        ),
        ("loss=forward_kl loss.top_k=nan", r"Invalid loss.top_k=nan: expected an integer\."),
        ("loss=forward_kl loss.top_k=2.5", r"Invalid loss.top_k=2.5: expected an integer\."),
        (
            "loss=importance_sampling loss.clip_eps=nan",
            r"Invalid loss.clip_eps=nan: expected a finite number",
        ),
    ],
)
def test_component_errors_list_the_options(
    compose_config: Compose, override: str, message: str
) -> None:
    config = RunConfig.from_dict(compose_config(override.split()))
    with pytest.raises(OPDError, match=message):
        build_components(build_registry(make_plugin_manager()), config)


OBJECTIVES = {  # objective=<name>: (loss, advantage function or None, sampler)
    "reverse_kl_topk": ("reverse_kl_topk", None, "hf"),
    "reverse_kl_truncated": ("reverse_kl_truncated", None, "hf"),
    "entropy_aware_kl": ("entropy_aware_kl", None, "hf"),
    "forward_kl": ("forward_kl", None, "hf"),
    "jsd": ("jsd", None, "hf"),
    "opd": ("importance_sampling", "reverse_kl", "hf"),
    "mixed": ("importance_sampling", "mixed", "hf"),
    "grpo": ("importance_sampling", "grpo", "hf"),
    "sft": ("cross_entropy", None, "teacher_samples"),
}


def chosen(config: RunConfig) -> tuple[str, str | None, str]:
    advantage = config.advantage["name"] if config.advantage is not None else None
    return config.loss["name"], advantage, config.sampler["name"]


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_an_objective_is_one_choice(compose_config: Compose, objective: str) -> None:
    config = RunConfig.from_dict(compose_config([f"objective={objective}"]))
    assert chosen(config) == OBJECTIVES[objective]
    components = build_components(build_registry(make_plugin_manager()), config)
    assert ("advantage" in components) == (OBJECTIVES[objective][1] is not None)


def test_the_objective_group_holds_every_objective() -> None:
    assert {p.stem for p in (ROOT / "plugins/opd_objectives/conf/objective").glob("*.yaml")} == (
        set(OBJECTIVES)
    )


def test_the_default_objective_has_no_advantage_function(compose_config: Compose) -> None:
    config = RunConfig.from_dict(compose_config([]))
    assert chosen(config) == ("reverse_kl_topk", None, "hf")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss=forward_kl"], ("forward_kl", None, "hf")),
        (["objective=opd", "loss=jsd", "~advantage"], ("jsd", None, "hf")),
        (["loss=cross_entropy"], ("cross_entropy", None, "hf")),  # SFT on the student's samples
        (
            ["objective=opd", "advantage=clipped_reverse_kl"],
            ("importance_sampling", "clipped_reverse_kl", "hf"),
        ),
        (["objective=sft", "sampler=dataset"], ("cross_entropy", None, "dataset")),
        (["objective=sft", "advantage=grpo"], ("cross_entropy", "grpo", "teacher_samples")),
    ],
)
def test_a_loss_alone_or_a_swapped_advantage_builds(
    compose_config: Compose, overrides: list[str], expected: tuple[str, str | None, str]
) -> None:
    config = RunConfig.from_dict(compose_config(overrides))
    assert chosen(config) == expected
    build_components(build_registry(make_plugin_manager()), config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+task=arithmetic", "+teacher=demo", "advantage=clipped_reverse_kl"],
            r"^loss=reverse_kl_topk does not read advantages, so advantage=clipped_reverse_kl "
            r"would be computed and ignored; drop the advantage \(~advantage if an objective set "
            r"it\), or choose a loss that weights tokens by advantages, such as objective=opd\.$",
        ),
        (["objective=opd", "loss=forward_kl"], r"^loss=forward_kl does not read advantages"),
        (["objective=jsd", "advantage=reverse_kl"], r"^loss=jsd does not read advantages"),
        (
            ["loss=importance_sampling"],
            r"^loss=importance_sampling weights every token by its advantage but no advantage "
            r"function is configured; choose an objective that names one \(objective=opd\) or "
            r"set advantage=<name> \((clipped_reverse_kl, )?grpo, mixed, reverse_kl\)\.$",
        ),
    ],
)
def test_an_advantage_and_a_loss_that_do_not_fit_are_refused(
    compose_config: Compose, overrides: list[str], message: str
) -> None:
    config = RunConfig.from_dict(compose_config(overrides))
    with pytest.raises(OPDError, match=message):
        build_components(build_registry(make_plugin_manager()), config)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        *(
            (f"+experiment={name}", f"objective={name}")
            for name in sorted(OBJECTIVES)
            if name != "grpo"
        ),
        ("+experiment=rl", "objective=grpo"),
    ],
)
def test_a_removed_experiment_names_the_objective_that_replaced_it(
    compose_config: Compose, old: str, new: str
) -> None:
    with pytest.raises(Exception) as caught:
        compose_config([old])
    assert describe(caught.value) == (
        f"{old} was replaced by {new} (one config group now picks the loss and, when the loss "
        "reads advantages, the advantage function; docs/objectives.md)."
    )
    RunConfig.from_dict(compose_config([new]))  # and the replacement composes


def test_the_removed_uniform_advantage_says_to_leave_it_out(compose_config: Compose) -> None:
    with pytest.raises(Exception) as caught:
        compose_config(["objective=sft", "advantage=uniform"])
    assert describe(caught.value) == (
        "advantage=uniform was removed: leave the advantage out (a loss that reads no advantages "
        "needs none, and loss=cross_entropy without one is SFT: objective=sft)."
    )


def test_every_loss_says_whether_it_reads_advantages() -> None:
    registry = build_registry(make_plugin_manager())
    for name in registry.names("loss"):
        uses = registry.entry("loss", name).factory.uses_advantages
        assert isinstance(uses, bool) or uses == "optional", name


# -------------------------------------------------- one source of truth for defaults

EXAMPLE_CONF = ROOT / "examples/opd-example-task/opd_example_task/conf"
COMPONENT_GROUPS = {kind.name for kind in COMPONENT_KINDS} | {"student"}


def nested_schemas() -> dict[tuple[str, str, str], type]:
    """Component options that are config nodes of their own, and the dataclass that reads them."""
    from opd_chat.task import ChatSource
    from opd_math.task import MathSource
    from opd_vllm.engine import EngineOptions

    return {
        ("task", "math", "train"): MathSource,
        ("task", "math", "eval"): MathSource,
        ("task", "chat", "train"): ChatSource,
        ("sampler", "vllm", "engine"): EngineOptions,
        ("teacher", "vllm", "engine"): EngineOptions,
    }


def same(default: Any, value: Any) -> bool:
    """``value`` is ``default`` written again (a list for a tuple, an int for a float)."""
    if isinstance(default, tuple):
        default = list(default)
    numbers = (int, float)
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value) and default == value
    if isinstance(default, numbers) and isinstance(value, numbers):
        return float(default) == float(value)
    return type(default) is type(value) and default == value


def dataclass_repeats(cls: type, node: Mapping[str, Any], where: str) -> list[str]:
    defaults = {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }
    return [
        f"{where}.{key}={value!r}"
        for key, value in node.items()
        if key in defaults and same(defaults[key], value)
    ]


def repeated_defaults(kind: str, node: Mapping[str, Any], where: str) -> list[str]:
    """The values of a component node that only repeat its constructor's defaults."""
    from opd_core.config import LoraConfig, StudentConfig

    if kind == "student":
        found = dataclass_repeats(StudentConfig, node, where)
        found += dataclass_repeats(ModelSpec, node.get("model") or {}, f"{where}.model")
        return found + dataclass_repeats(LoraConfig, node.get("lora") or {}, f"{where}.lora")
    name = str(node["name"])
    params = inspect.signature(REGISTRY.entry(kind, name).factory).parameters
    found = []
    for key, value in node.items():
        here = f"{where}.{key}"
        if key in ("name", "defaults"):
            continue
        schema = nested_schemas().get((kind, name, key)) or (ModelSpec if key == "model" else None)
        if isinstance(value, Mapping) and schema is not None:
            found += dataclass_repeats(schema, value, here)
        elif isinstance(value, Mapping) and "name" in value:  # a teacher inside a teacher
            found += repeated_defaults(kind, value, here)
        elif isinstance(value, Mapping) and all(
            isinstance(v, Mapping) and "name" in v for v in value.values()
        ):  # several (teacher=multi)
            found += [
                r for k, v in value.items() for r in repeated_defaults(kind, v, f"{here}.{k}")
            ]
        elif key in params and same(params[key].default, value):  # (empty is no default)
            found.append(f"{here}={value!r}")
    return found


REGISTRY = build_registry(make_plugin_manager())


def component_files() -> list[Path]:
    roots = [*CONF_DIRS[1:], EXAMPLE_CONF]
    return sorted(
        path
        for root in roots
        for group in root.iterdir()
        if group.name in COMPONENT_GROUPS
        for path in group.glob("*.yaml")
    )


@pytest.mark.parametrize("path", component_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_component_file_sets_only_what_differs_from_its_constructor(path: Path) -> None:
    node = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(node, dict)
    assert repeated_defaults(path.parent.name, node, path.parent.name) == []


def core_files() -> list[Path]:
    """The files that set core values over the defaults (not experiments: they override the
    schedule, e.g. eval.every=0 undoes the demo schedule's 100)."""
    top = [CONF_DIR / "config.yaml", *sorted(CONF_DIR.glob("*/*.yaml"))]
    top = [p for p in top if p.parent.name != "experiment"]
    return [*top, *sorted((ROOT / "plugins").glob("*/conf/objective/*.yaml"))]


@pytest.mark.parametrize("path", core_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_config_file_sets_only_what_differs_from_the_core_defaults(path: Path) -> None:
    from opd_core.config import CORE_SECTIONS, RUN_SCALARS

    node = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(node, dict)
    found = [
        repeat
        for section, cls in CORE_SECTIONS.items()
        for repeat in dataclass_repeats(cls, node.get(section) or {}, section)
    ]
    found += dataclass_repeats(RunConfig, {k: v for k, v in node.items() if k in RUN_SCALARS}, "")
    assert found == []


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*")))
def test_an_experiment_sets_only_what_differs_from_the_constructors(
    compose_config: Compose, option: str
) -> None:
    cfg = OmegaConf.to_container(compose_config(overrides_for("experiment", option)))
    assert isinstance(cfg, dict)  # interpolations unresolved: ${...} is not a repeated default
    found = []
    for kind in COMPONENT_KINDS:
        node = cfg.get(kind.node)
        nodes = (node or {}).values() if kind.many else [node]
        found += [r for n in nodes if n for r in repeated_defaults(kind.name, n, kind.node)]
    assert found == []


def test_the_core_defaults_are_the_dataclasses(compose_config: Compose) -> None:
    """Every core key is in the composed config (so it is set without +), with the dataclass's
    default where the schedule does not set it; a field without a default is the schedule's."""
    overrides = ["train.pool_size=3", "eval.at_start=false", "divergence.patience=5"]
    config = RunConfig.from_dict(compose_config(overrides))
    assert config.train.pool_size == 3 and config.eval.at_start is False
    assert config.divergence.patience == 5 and config.divergence.metric is None
    assert config.train.weight_decay == 0.0 and config.train.betas == (0.9, 0.999)
    assert config.checkpoint.keep == 2 and config.seed == 0
    with pytest.raises(TypeError):
        TrainConfig(lr=1e-3)  # type: ignore[call-arg]
    with pytest.raises(OPDError, match=r"^train.steps, train.prompts_per_step, .* are not set; "):
        RunConfig.from_dict({**to_plain_dict(compose_config([])), "train": {"lr": 1e-3}})


def test_a_component_option_is_set_without_a_plus(compose_config: Compose) -> None:
    cfg = compose_config(
        [
            "loss=jsd",
            "loss.beta=0.25",
            "sampler.top_p=0.9",
            "evaluators.task_accuracy.max_examples=3",
            "student.gradient_checkpointing=true",
        ]
    )
    config = RunConfig.from_dict(cfg)
    components = build_components(REGISTRY, config)
    assert components["loss"].beta == 0.25 and config.student.gradient_checkpointing
    with pytest.raises(OPDError, match=r"^loss 'jsd' has no option betta; its options are: beta"):
        build_components(
            REGISTRY, RunConfig.from_dict(compose_config(["loss=jsd", "loss.betta=1"]))
        )


def test_unknown_task_name_lists_available_tasks(compose_config: Compose) -> None:
    config = RunConfig.from_dict(compose_config([]))
    bad = dataclasses.replace(config, task={"name": "nosuch"})
    with pytest.raises(
        OPDError, match=r"Unknown task 'nosuch'\. Available: arithmetic, (\w+, )*math"
    ):
        build_components(build_registry(make_plugin_manager()), bad)


def test_conf_dir_is_the_top_level_conf_folder() -> None:
    assert ROOT / "conf" == CONF_DIR
    assert (CONF_DIR / "config.yaml").is_file()


def test_every_built_in_plugin_stores_its_own_options() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    make_plugin_manager().hook.opd_register_configs.call_historic(kwargs={"store": store})
    for root in CONF_DIRS[1:]:
        for path in root.glob("*/*.yaml"):
            group, option = path.parent.name, path.name
            assert option in store.repo[group], f"{path} is not in the ConfigStore"
            assert store.repo[group][option].provider == root.parent.name


def test_cosine_schedule_warms_up_then_decays_to_the_floor() -> None:
    from types import SimpleNamespace

    train = SimpleNamespace(warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(s, 12, train) for s in range(12)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0)  # the decay starts after warm-up
    assert factors[-1] == pytest.approx(0.1)  # and reaches the floor at the last step
    assert factors[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))
    constant = SimpleNamespace(warmup_steps=2, lr_schedule="constant", min_lr_ratio=0.1)
    assert [lr_factor(s, 12, constant) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
