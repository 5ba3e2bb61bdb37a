"""Config schemas of a run, validated with one clear sentence per problem.

Hydra composes ``conf/`` into a plain config; :func:`RunConfig.from_dict` checks the core
sections (``train``, ``eval``, ``checkpoint``, ``divergence``, ``student``) and keeps each
component node (``task``, ``teacher``, ...) for the registry to bind to its factory.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from opd_core.errors import OPDError
from opd_core.registry import COMPONENT_KINDS
from opd_core.typecheck import check_value, field_types, invalid

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

STRATEGIES = ("ddp", "fsdp")
"""``distributed.strategy`` values (:mod:`opd_core.distributed`)."""


def _conf_dir() -> Path:
    """The folder of the primary config and the experiment groups: the top-level ``conf/`` of a
    checkout, which the wheel carries as ``opd_core/conf/``."""
    installed = Path(__file__).resolve().parent / "conf"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "conf"


CONF_DIR = _conf_dir()
"""Where Hydra composes from; every plugin's own options come from the ConfigStore."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it."""

    path: str
    """Local folder, Hugging Face Hub id, or a plugin-specific address (``demo://...``)."""
    dtype: str = "auto"
    """``auto`` (fp32 on CPU, bf16 on a GPU that supports it), ``float32``, ``bfloat16``,
    ``float16``."""
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class DistributedConfig:
    """How several training processes share the work (ignored by a single process)."""

    strategy: str = "ddp"
    """``ddp``: every rank holds the whole student, gradients are averaged. ``fsdp``: parameters,
    gradients and optimizer state are sharded over ranks (FSDP2), for students too big for one
    device."""


@dataclass(frozen=True)
class LoraConfig:
    """Train a LoRA adapter (peft) instead of all weights."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"


@dataclass(frozen=True)
class StudentConfig:
    """The model being trained."""

    model: ModelSpec
    lora: LoraConfig | None = None
    gradient_checkpointing: bool = False


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The optimisation schedule.

    Each default is written here only (``opd_core_defaults``, :func:`core_defaults`, puts them
    in the composed config); a field without one is the schedule's to set (``conf/schedule/``).
    """

    steps: int
    """Optimizer steps; ignored when ``passes`` is set."""
    passes: float | None = None
    """If set, train for this many passes over the prompt pool instead of ``steps``:
    ``ceil(passes * pool size / prompts_per_step)`` steps."""
    pool_size: int | None = None
    """Train on a seeded random subset of this many of the task's prompts (1: single-prompt
    mode, one prompt reused every step); null uses them all."""
    prompts_per_step: int
    samples_per_prompt: int
    micro_batch_size: int
    """Sequences per forward/backward; the step's batch is accumulated over micro-batches."""
    update_epochs: int = 1
    """Passes over each step's rollouts (>1 makes the importance ratio and PPO clip matter)."""
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to ``lr`` (0: none)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: keep ``lr`` (constant) or decay it along a half cosine to
    ``min_lr_ratio * lr`` at the last step (cosine)."""
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    """0 disables gradient clipping."""
    max_new_tokens: int
    """At most this many tokens per sampled answer; must fit the student with its prompt."""
    temperature: float = 1.0
    max_prompt_tokens: int | None = None
    """Training prompts longer than this (in student tokens) are skipped with a warning that
    counts them; null: the student's maximum length minus ``max_new_tokens``."""
    long_prompts: Literal["skip", "error"] = "skip"
    """What to do with a prompt over ``max_prompt_tokens``: skip it (counted) or stop the run."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Forward passes in ``bf16`` under autocast (weights, optimizer, log-probabilities and
    losses stay fp32) or ``fp32``; ``auto``: bf16 where the student is measured faster in it
    (:mod:`opd_core.precision`). ``bf16`` on hardware without it is refused."""
    overlap: bool = False
    """Sample step t+1's rollouts in a background thread while step t updates the weights, from
    the weights before that update (one step stale; ``opd_core.overlap``, docs/objectives.md).
    Needs a sampler that answers ``opd_rollout_prefetcher`` (``hf``, ``vllm``) and one process."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """When and how evaluators run (``max_new_tokens``: the schedule's to set)."""

    every: int = 0
    """Evaluate the student every N steps (0: only at start and end)."""
    at_start: bool = True
    teacher: bool = True
    """Evaluate the teacher once at the start (for the summary's ``teacher`` entry)."""
    max_new_tokens: int
    temperature: float = 0.0
    """0: greedy decoding."""


@dataclass(frozen=True)
class CheckpointConfig:
    """When to save the student."""

    every: int = 0
    """Save every N steps (0: only at the end)."""
    keep: int = 2
    """Number of most recent checkpoints kept on disk (the final one is always kept)."""
    best_metric: str | None = None
    """Also keep the checkpoint of the best evaluation by this eval metric (e.g. ``accuracy``):
    written when an evaluation beats the best, named by ``checkpoints/best`` and the summary's
    ``best_checkpoint``, never deleted by rotation (``opd_core.watch``); null: off."""
    best_mode: Literal["max", "min"] = "max"
    """Whether the best ``best_metric`` is its largest (max) or smallest (min) value."""


@dataclass(frozen=True)
class DivergenceConfig:
    """Stop a run early once a metric stays worse than its best (``opd_core.watch``)."""

    metric: str | None = None
    """An eval metric (``accuracy``; checked at each evaluation of the student, ``eval.every``)
    or a step metric (``teacher_reverse_kl``, ``loss``, ``reward``; checked every step); null:
    never stop early."""
    mode: Literal["max", "min"] | None = None
    """Whether the metric's best is its largest or smallest value; null: min for
    ``teacher_reverse_kl`` and ``loss``, max otherwise."""
    margin: float = 0.0
    """How much worse than the best a value must be to count (in the metric's units)."""
    patience: int = 3
    """How many checks in a row must be worse before the run stops."""


@dataclass(frozen=True)
class EpisodeConfig:
    """Budgets of a multi-turn episode: the student writes a turn (at most
    ``train.max_new_tokens`` / ``eval.max_new_tokens`` tokens), the environment answers, until the
    environment says done or a budget is reached. A budget cut is counted in the metrics
    (``episode/budget_cut``), never silent."""

    max_turns: int = 8
    """Most assistant turns per episode."""
    max_tokens: int | None = None
    """Most tokens per episode after the first prompt (student and environment tokens together);
    ``None``: what the student's context length leaves after the prompt."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A validated run configuration."""

    student: StudentConfig
    task: Mapping[str, Any]
    teacher: Mapping[str, Any]
    sampler: Mapping[str, Any]
    prompts: Mapping[str, Any]
    loss: Mapping[str, Any]
    evaluators: Mapping[str, Mapping[str, Any]]
    advantage: Mapping[str, Any] | None = None
    """The advantage function, for a loss that reads advantages (``objective=opd`` names one);
    ``None``: the loop weights every completion token 1 (:mod:`opd_core.objective`)."""
    train: TrainConfig
    eval: EvalConfig
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    seed: int = 0
    device: str = "auto"
    """``auto``: the first GPU if there is one, else the CPU; or a torch device (``cuda:1``)."""
    resume: bool = False
    """Continue from the newest checkpoint in this run's folder."""
    progress: bool = True
    """A console progress bar."""
    plugins: tuple[str, ...] = ()
    """Extra plugin modules to register for this run (like pytest's ``-p``)."""
    disable_plugins: tuple[str, ...] = ()
    """Installed plugins to turn off for this run, by entry-point name (pytest's ``-p no:``)."""
    loggers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Trackers that receive every step's metrics besides ``metrics.jsonl`` (``logger=[...]``)."""
    environment: Mapping[str, Any] | None = None
    """The rollout environment of a multi-turn task (``+environment=<name>``), or ``None``: one
    prompt, one completion (docs/environments.md)."""
    episode: EpisodeConfig = field(default_factory=lambda: EpisodeConfig())
    """Budgets of a multi-turn episode (used only with an ``environment``)."""

    @staticmethod
    def from_dict(cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
        """Validate a composed config (types, then ranges); an unknown or missing key is named."""
        raw = to_plain_dict(cfg)
        raw = select_demo(raw)
        unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
        if unknown:
            raise OPDError(
                f"Unknown config key '{unknown[0]}'; the top-level keys are: "
                f"{', '.join(sorted(TOP_LEVEL_KEYS))}."
            )
        for key in (*(k.node for k in COMPONENT_KINDS if not (k.many or k.optional)), "student"):
            if raw.get(key) is None:
                raise OPDError(
                    f"No {key} is configured; add one with +{key}=<name> "
                    f"(python -m opd_core --help lists the options)."
                )
            if not isinstance(raw[key], Mapping):
                raise invalid(key, raw[key], f"a config group such as {key}=<name>")
        student_raw = dict(_section(raw, "student"))
        lora = student_raw.pop("lora", None)
        student = StudentConfig(
            model=_build(ModelSpec, student_raw.pop("model", None) or {}, "student.model"),
            lora=_build(LoraConfig, lora, "student.lora") if lora else None,
            **_only(student_raw, StudentConfig, "student"),
        )
        scalars = _only({key: raw[key] for key in RUN_SCALARS if key in raw}, RunConfig, "")
        components: dict[str, Any] = {}
        for kind in COMPONENT_KINDS:
            node = raw.get(kind.node) if not kind.many else raw.get(kind.node) or {}
            if kind.optional and node is None:
                components[kind.node] = None
                continue
            if kind.many and not isinstance(node, Mapping):
                raise invalid(
                    kind.node, node, f"a mapping of {kind.name} configs ({kind.name}=[...])"
                )
            if kind.optional and not isinstance(node, Mapping):
                raise invalid(kind.node, node, f"a config group such as {kind.name}=<name>")
            components[kind.node] = node
        run = RunConfig(
            student=student,
            **components,
            train=_build(TrainConfig, _section(raw, "train"), "train"),
            eval=_build(EvalConfig, _section(raw, "eval"), "eval"),
            checkpoint=_build(CheckpointConfig, _section(raw, "checkpoint"), "checkpoint"),
            distributed=_build(DistributedConfig, _section(raw, "distributed"), "distributed"),
            episode=_build(EpisodeConfig, _section(raw, "episode"), "episode"),
            divergence=_build(DivergenceConfig, _section(raw, "divergence"), "divergence"),
            **scalars,
        )
        run.validate()
        return run

    def validate(self) -> None:
        """Check value ranges; raise :class:`OPDError` naming the first bad value."""
        e = self.episode
        _require(e.max_turns > 0, "episode.max_turns", e.max_turns, "a positive number of turns")
        if e.max_tokens is not None:
            _require(
                e.max_tokens > 0, "episode.max_tokens", e.max_tokens, "a positive count or null"
            )
        t = self.train
        _require(t.steps >= 0, "train.steps", t.steps, "a count of steps >= 0")
        for name in (
            "prompts_per_step",
            "samples_per_prompt",
            "micro_batch_size",
            "update_epochs",
            "max_new_tokens",
        ):
            value = getattr(t, name)
            _require(value > 0, f"train.{name}", value, "a positive integer")
        _require(t.lr > 0, "train.lr", t.lr, "a positive learning rate such as 1e-5")
        _require(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
        _require(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, ">= 0")
        _require(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "in [0, 1]")
        for i, beta in enumerate(t.betas):
            _require(0 <= beta < 1, f"train.betas[{i}]", beta, "a number in [0, 1)")
        _require(
            t.max_grad_norm >= 0,
            "train.max_grad_norm",
            t.max_grad_norm,
            ">= 0 (0 disables clipping)",
        )
        _require(
            t.temperature > 0,
            "train.temperature",
            t.temperature,
            "> 0 (on-policy sampling needs a proper distribution)",
        )
        if t.passes is not None:
            _require(t.passes > 0, "train.passes", t.passes, "a positive number of passes or null")
        if t.pool_size is not None:
            _require(t.pool_size > 0, "train.pool_size", t.pool_size, "a positive count or null")
        if t.max_prompt_tokens is not None:
            _require(
                t.max_prompt_tokens > 0,
                "train.max_prompt_tokens",
                t.max_prompt_tokens,
                "a positive count of tokens or null (the model's length minus max_new_tokens)",
            )
        _require(self.eval.every >= 0, "eval.every", self.eval.every, ">= 0")
        _require(
            self.eval.max_new_tokens > 0,
            "eval.max_new_tokens",
            self.eval.max_new_tokens,
            "a positive integer",
        )
        _require(
            self.eval.temperature >= 0,
            "eval.temperature",
            self.eval.temperature,
            ">= 0 (0 is greedy decoding)",
        )
        _require(self.checkpoint.every >= 0, "checkpoint.every", self.checkpoint.every, ">= 0")
        _require(self.checkpoint.keep >= 1, "checkpoint.keep", self.checkpoint.keep, ">= 1")
        watched: tuple[tuple[str, str | None], ...] = (
            ("checkpoint.best_metric", self.checkpoint.best_metric),
            ("divergence.metric", self.divergence.metric),
        )
        for key, metric in watched:
            if metric is not None:
                _require(
                    bool(metric.strip()), key, metric, "a metric name such as accuracy, or null"
                )
        d = self.divergence
        _require(d.margin >= 0, "divergence.margin", d.margin, ">= 0")
        _require(d.patience >= 1, "divergence.patience", d.patience, "a count of checks >= 1")
        _require(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32)")
        _require(
            self.distributed.strategy in STRATEGIES,
            "distributed.strategy",
            self.distributed.strategy,
            " or ".join(STRATEGIES),
        )
        lora = self.student.lora
        if lora is not None:
            _require(lora.r > 0, "student.lora.r", lora.r, "> 0")
            _require(lora.alpha > 0, "student.lora.alpha", lora.alpha, "> 0")
            _require(0 <= lora.dropout < 1, "student.lora.dropout", lora.dropout, "in [0, 1)")


RUN_SCALARS = ("seed", "device", "resume", "progress", "plugins", "disable_plugins")
"""The top-level scalar keys of a run config, checked against :class:`RunConfig`'s field types."""


TOP_LEVEL_KEYS = frozenset({f.name for f in dataclasses.fields(RunConfig)} | {"demo"})
"""Every key a composed run config may hold (``demo`` is consumed by :func:`select_demo`)."""


def to_plain_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a composed config into plain containers; a missing ``???`` value is named."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise OPDError(
            f"The config value {err.full_key} is required but not set; add "
            f"{err.full_key}=... to the command line."
        ) from err
    except InterpolationResolutionError as err:
        raise OPDError(
            f"A config interpolation cannot be resolved ({err.msg}); "
            "check the ${...} references in your config."
        ) from err
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def select_demo(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill ``task`` and ``teacher`` from the ``demo`` node when neither was chosen.

    ``python -m opd_core`` with no ``+task``/``+teacher`` runs the embedded demo; choosing only
    one of the two is an error, since the demo's half would not match the user's half.
    """
    demo = raw.pop("demo", None)
    task, teacher = raw.get("task"), raw.get("teacher")
    if task is None and teacher is None and demo:
        return {**raw, "task": demo["task"], "teacher": demo["teacher"]}
    if (task is None) != (teacher is None):
        missing = "teacher" if teacher is None else "task"
        raise OPDError(
            f"A {'task' if task is not None else 'teacher'} is configured but no "
            f"{missing}; add +{missing}=<name> (or give neither to run the demo)."
        )
    return raw


T = TypeVar("T")


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A config section such as ``train``; a scalar where a section belongs is named."""
    node = raw.get(key) or {}
    if not isinstance(node, Mapping):
        raise invalid(key, node, f"a section of {key}.* settings")
    return node


def _build(cls: type[T], node: Mapping[str, Any], where: str) -> T:
    if not isinstance(node, Mapping):
        raise invalid(where, node, f"a section of {where}.* settings")
    values = _only(node, cls, where)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    missing = [f.name for f in fields if _required(f) and f.name not in values]
    if missing:
        keys = ", ".join(f"{where}.{name}" for name in missing)
        it = "it" if len(missing) == 1 else "them"
        raise OPDError(
            f"{keys} {'is' if len(missing) == 1 else 'are'} not set; a schedule sets {it} "
            f"(schedule=demo), or set {where}.{missing[0]}=... on the command line."
        )
    return cls(**values)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


CORE_SECTIONS: dict[str, type] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "divergence": DivergenceConfig,
    "episode": EpisodeConfig,
}
"""The core sections whose defaults :func:`core_defaults` writes into every composed config."""


def core_defaults() -> dict[str, Any]:
    """The defaults of the core sections and the top-level scalars, read from their dataclasses
    (the one place each is written): the ``opd_core_defaults`` node that ``conf/config.yaml``
    lists first, so the composed config holds every key (``train.pool_size=1`` needs no ``+``)
    and ``conf/`` files set only what differs. A field without a default is ``???``, which a
    schedule sets (else the run stops naming it)."""

    def value(f: dataclasses.Field[Any]) -> Any:
        if f.default is not dataclasses.MISSING:
            found = f.default
        elif f.default_factory is not dataclasses.MISSING:
            found = f.default_factory()
        else:
            return "???"
        return list(found) if isinstance(found, tuple) else found

    node: dict[str, Any] = {
        section: {f.name: value(f) for f in dataclasses.fields(cls)}
        for section, cls in CORE_SECTIONS.items()
    }
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    node.update({key: value(fields[key]) for key in RUN_SCALARS})
    return node


def store_core_defaults(store: Any) -> None:
    """Store :func:`core_defaults` in Hydra's ConfigStore as ``opd_core_defaults``."""
    store.store(
        name="opd_core_defaults", node=OmegaConf.create(core_defaults()), provider="opd_core"
    )


def _only(node: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """``node``'s values checked against ``cls``'s field types; an unknown key names the options."""
    types = field_types(cls)
    unknown = sorted(set(node) - set(types))
    prefix = f"{where}." if where else ""
    if unknown:
        raise OPDError(
            f"Unknown key {prefix}{unknown[0]}; {where or 'the config'} accepts: "
            f"{', '.join(types)}."
        )
    return {key: check_value(f"{prefix}{key}", value, types[key]) for key, value in node.items()}


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise invalid(key, value, expected)


def store_config_dir(store: Any, package: str, subdir: str = "conf") -> list[str]:
    """Store every ``<group>/<option>.yaml`` under ``package/subdir`` in Hydra's ConfigStore.

    Third-party plugins call this from ``opd_register_configs`` so their options compose like
    built-in ones (``+task=<option>``). Nested folders are nested groups (``hydra/launcher``);
    a file's ``# @package`` line is kept, so ``# @package evaluators.<name>`` in
    ``evaluator/<name>.yaml`` lands where ``evaluator=[...]`` expects it. Returns the
    ``group/option`` names stored.
    """
    root = resources.files(package).joinpath(subdir)
    if not root.is_dir():
        raise OPDError(f"Package '{package}' has no config folder '{subdir}/' to store.")
    stored: list[str] = []
    for group_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if group_dir.is_dir():
            stored += _store_group(store, package, group_dir, group_dir.name)
    return stored


OPEN_GROUPS = frozenset({*(kind.name for kind in COMPONENT_KINDS), "student"})
"""Config groups whose options are stored open (Hydra's struct flag off): a component's file
lists only ``name`` and the values that differ from its constructor's defaults, the one place
those are written, so ``loss.top_k=5`` must work although ``loss/forward_kl.yaml`` has no
``top_k``. A misspelled key still fails: the registry binds every key to the constructor's
parameters (:meth:`opd_core.registry.Registry.bind`), ``student.*`` is checked against
:class:`StudentConfig`."""


def _store_group(store: Any, package: str, folder: Traversable, group: str) -> list[str]:
    stored = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.is_dir():
            stored += _store_group(store, package, item, f"{group}/{item.name}")
        elif item.name.endswith(".yaml"):
            text = item.read_text(encoding="utf-8")
            option = item.name[: -len(".yaml")]
            node = OmegaConf.create(text)
            if group.partition("/")[0] in OPEN_GROUPS:
                OmegaConf.set_struct(node, False)
            store.store(
                group=group,
                name=option,
                node=node,
                package=package_line(text),
                provider=package,
            )
            stored.append(f"{group}/{option}")
    return stored


def package_line(text: str) -> str | None:
    """The value of a config file's ``# @package`` header line (Hydra reads only the comment
    lines before the first key), or ``None`` when it has none."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return None
        found = re.match(r"#\s*@package\s+(\S+)\s*$", stripped)
        if found:
            return found.group(1)
    return None
