"""The bad-input suite: every class of bad input, thrown at ``python -m opd_core`` as a real
process, ends with exit status 2, exactly one ``opd_core: error:`` line naming the problem and
no traceback (docs/reliability.md lists the classes)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TinyModels, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.max_new_tokens=16", "eval.max_new_tokens=16", "progress=false"]

BAD_IMPORT = 'raise RuntimeError("this plugin is broken at import")\n'
BUGGY_HOOK = """\
from opd_core import hookimpl


@hookimpl
def opd_step_end(ctx, step, metrics):
    return 1 / 0
"""


def opd(
    *args: str, cwd: Path = ROOT, extra_path: Path | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [*prefix, sys.executable, "-m", "opd_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one ``opd_core: error:`` line holding every needle, no traceback; the line."""
    tail = result.stderr[-3000:]
    assert result.returncode == 2, tail
    assert "Traceback" not in result.stderr, tail
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("opd_core: error:")]
    assert len(errors) == 1, tail
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@dataclass(frozen=True)
class Case:
    """One bad input: the command line's arguments and what its error line must say."""

    name: str
    args: tuple[str, ...]
    needle: str


def run_cases(cases: list[Case], extra_path: Path | None = None) -> None:
    """Run every case as its own process, several at a time; report every case that fails."""

    def check(case: Case) -> str | None:
        try:
            assert_clean_error(opd(*case.args, extra_path=extra_path), case.needle)
        except AssertionError as err:
            return f"{case.name}: {err}"
        return None

    workers = max(2, min(len(cases), os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        failures = [f for f in pool.map(check, cases) if f is not None]
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "opd_bad_import.py").write_text(BAD_IMPORT)
    (folder / "opd_buggy.py").write_text(BUGGY_HOOK)
    return folder


# -------------------------------------------------- refused before any weights load

CONFIG_CASES = [  # more values of each kind are checked in-process by tests/core/test_config.py
    (["train.steps=abc"], "Invalid train.steps='abc': expected an integer."),
    (["train.steps=2.5"], "Invalid train.steps=2.5: expected an integer."),
    (["train.lr=fast"], "Invalid train.lr='fast': expected a finite number."),
    (["train.betas=[2.0,3.0]"], "Invalid train.betas[0]=2.0: expected a number in [0, 1)"),
    (["resume=maybe"], "Invalid resume='maybe': expected true or false."),
    (["eval.temperature=-1"], "Invalid eval.temperature=-1: expected >= 0"),
    (["eval.temperature=nan"], "Invalid eval.temperature=nan: expected a finite number."),
    (["loss=forward_kl", "loss.top_k=nan"], "Invalid loss.top_k=nan: expected an integer."),
    (
        ["objective=opd", "advantage.coef=nan"],
        "Invalid advantage.coef=nan: expected a finite number.",
    ),
    (["+experiment=opd"], "+experiment=opd was replaced by objective=opd (one config group"),
    (["advantage=uniform"], "advantage=uniform was removed: leave the advantage out"),
    (
        ["advantage=clipped_reverse_kl", "advantage.clip=0.5"],
        "loss=reverse_kl_topk does not read advantages, so advantage=clipped_reverse_kl would be "
        "computed and ignored",
    ),
    (["+bogus=1"], "Unknown config key 'bogus'; the top-level keys are: advantage"),
    (["train.stepz=2"], "Unknown config key train.stepz; train accepts: steps, passes"),
    (["+task=nosuchtask"], "Unknown task 'nosuchtask'. Available: arithmetic, calculator, chat"),
    (["loss=nope"], "Unknown loss 'nope'. Available: cross_entropy, "),
    (["evaluator=[nope]"], "Unknown evaluator 'nope'. Available: aime, "),
    (["train.lr=[1"], "Cannot parse an override"),
    (["task=math"], "use +task=math"),
    (["plugins=[opd_bad_import]"], "Plugin module 'opd_bad_import' failed while importing"),
]


def test_bad_config_is_one_sentence(plugin_dir: Path, tmp_path: Path) -> None:
    cases = [
        Case(" ".join(overrides), (*overrides, f"hydra.run.dir={tmp_path / str(i)}"), needle)
        for i, (overrides, needle) in enumerate(CONFIG_CASES)
    ]
    run_cases(cases, extra_path=plugin_dir)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env_debug = subprocess.run(
        [sys.executable, "-m", "opd_core", "train.steps=abc", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "OPD_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert env_debug.returncode != 0 and "Traceback" in env_debug.stderr


# -------------------------------------------------- files, models and the run folder


def tiny(models: TinyModels, out: Path, *extra: str) -> list[str]:
    return [*tiny_run_overrides(models, out, steps=1), "eval.teacher=false", *extra]


def damaged_copy(source: Path, target: Path, content: bytes) -> Path:
    shutil.copytree(source, target)
    (target / "model.safetensors").write_bytes(content)
    return target


def test_bad_files_and_limits_are_one_sentence(
    tiny_models: TinyModels, tmp_path: Path, plugin_dir: Path
) -> None:
    empty = damaged_copy(tiny_models.student, tmp_path / "empty", b"")
    corrupt = damaged_copy(tiny_models.teacher, tmp_path / "corrupt", b"\x00garbage" * 40)
    binary, latin1 = tmp_path / "binary.jsonl", tmp_path / "latin1.jsonl"
    binary.write_bytes(bytes(range(128, 256)) * 8)
    latin1.write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    long_prompts = long_prompt_file(tmp_path)

    def run(name: str) -> Path:
        return tmp_path / "runs" / name

    cases = [
        Case(
            "empty student weights",
            tuple(tiny(tiny_models, run("a"), f"student.model.path={empty}")),
            f"The student model folder {empty} could not be loaded",
        ),
        Case(
            "corrupt teacher weights",
            tuple(tiny(tiny_models, run("b"), f"teacher.model.path={corrupt}")),
            f"The teacher model folder {corrupt} could not be loaded",
        ),
        Case(
            "binary data file",
            tuple(chat_run(tiny_models, run("c"), binary)),
            f"{binary}:1: not UTF-8 text (byte 0x80 at column 1)",
        ),
        Case(
            "latin-1 data file",
            tuple(chat_run(tiny_models, run("d"), latin1)),
            f"{latin1}:1: not UTF-8 text (byte 0xe9",
        ),
        Case(
            "overlong prompt refused",
            tuple(chat_run(tiny_models, run("e"), long_prompts, "train.long_prompts=error")),
            "1 of 5 training prompts are longer than 112 tokens",
        ),
        Case(
            "max_new_tokens past the model",
            tuple(tiny(tiny_models, run("f"), "train.max_new_tokens=100000000")),
            "Invalid train.max_new_tokens=100000000: the student holds at most 128 tokens",
        ),
        Case(
            "eval max_new_tokens past the model",
            tuple(tiny(tiny_models, run("g"), "eval.max_new_tokens=128")),
            "Invalid eval.max_new_tokens=128: the student holds at most 128 tokens",
        ),
        Case(
            "top_k past the vocabulary",
            tuple(tiny(tiny_models, run("h"), "loss=forward_kl", "loss.top_k=1000000")),
            "Invalid top_k=1000000: the vocabulary has only",
        ),
        Case(
            "a plugin's bug",
            tuple(tiny(tiny_models, run("i"), "plugins=[opd_buggy]")),
            "Plugin opd_buggy failed in hook opd_step_end (ZeroDivisionError: division by zero)",
        ),
    ]
    run_cases(cases, extra_path=plugin_dir)


def test_a_damaged_resume_checkpoint_is_named(tiny_models: TinyModels, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = opd(*tiny(tiny_models, out))
    assert first.returncode == 0, first.stderr[-3000:]
    (out / "checkpoints" / "step_000001" / "model" / "model.safetensors").write_bytes(b"")
    result = opd(*tiny(tiny_models, out, "resume=true", "train.steps=2"))
    assert_clean_error(result, "step_000001 is unreadable (model.safetensors: ")


def chat_run(models: TinyModels, out: Path, data: Path, *extra: str) -> list[str]:
    return [
        "+task=chat",
        "+teacher=hf",
        f"teacher.model.path={models.teacher}",
        f"student.model.path={models.student}",
        f"task.train.path={data}",
        "~evaluators.task_accuracy",
        "train.steps=1",
        "train.prompts_per_step=2",
        "train.samples_per_prompt=1",
        "eval.teacher=false",
        *SMALL,
        f"hydra.run.dir={out}",
        *extra,
    ]


def long_prompt_file(tmp_path: Path) -> Path:
    data = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"{i}+{i}"} for i in range(4)] + [{"prompt": "1+" * 1_000_000}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_an_overlong_prompt_is_skipped_and_counted(tiny_models: TinyModels, tmp_path: Path) -> None:
    result = opd(*chat_run(tiny_models, tmp_path / "run", long_prompt_file(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 of 5 training prompts longer than 112 tokens" in result.stdout + result.stderr


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="opd-ro-"))
    top.chmod(0o755)
    folder = top / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(top)


def test_a_read_only_run_folder_is_named(read_only_dir: Path) -> None:
    # root writes anywhere: run as nobody then (the checkout and venv are world-readable)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop privileges")
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    result = opd(f"hydra.run.dir={read_only_dir / 'run'}", "progress=false", prefix=prefix)
    assert_clean_error(result, f"Cannot write {read_only_dir / 'run'} (Permission denied)")


@pytest.mark.parametrize("launcher", ["basic", "local"])  # in-process, and joblib workers
def test_a_bad_sweep_point_is_named_and_the_good_one_runs(
    tiny_models: TinyModels, tmp_path: Path, launcher: str
) -> None:
    overrides = [
        o for o in tiny(tiny_models, tmp_path) if not o.startswith(("hydra.run.dir", "train.lr="))
    ]
    sweep = tmp_path / "sweep"
    result = opd(
        "-m",
        f"hydra/launcher={launcher}",
        "train.lr=-1,1e-3",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    )
    line = assert_clean_error(result, "sweep point 0 (", "train.lr=-1", "Invalid train.lr=-1")
    assert "train.lr=0.001" not in line
    assert not (sweep / "0" / "summary.json").exists()
    assert (sweep / "1" / "summary.json").exists()
