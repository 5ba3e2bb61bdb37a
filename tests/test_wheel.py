"""The project as pip installs it: build the wheel, install it into a fresh venv, run it from an
empty folder.

The fresh venv gets the wheel alone (``pip install --no-deps``); its dependencies come from this
interpreter's site-packages, linked in one by one except opd-core's own (editable) install, so
only the wheel's code and configs can answer. A full install with dependencies copies torch and
takes minutes, which a test cannot afford.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TinyModels, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "opd_core", "plugins", "conf")
"""What the build needs from the checkout (copied, so the checkout gets no build/ folder)."""

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    wheel: Path
    build_log: str
    venv: Path

    @property
    def script(self) -> Path:
        return self.venv / "bin" / "opd-core"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its output, or a failure showing the end of it."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{output[-3000:]}"
    return output


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment without this checkout on the path, with a private cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "OPD_CORE_CACHE": str(tmp / "cache")}


def link_dependencies(venv: Path, tmp: Path) -> None:
    """Put this interpreter's installed packages, opd-core's own left out, on the venv's path."""
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if "opd" in name.lower() or name.startswith("__editable__") or name.endswith(".pth"):
            continue
        (deps / name).symlink_to(entry)
    (site_packages(venv) / "deps.pth").write_text(f"{deps}\n")


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip"]
    env = clean_env(tmp)
    build_log = run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
        tmp,
        env,
    )
    (wheel,) = (tmp / "dist").glob("opd_core-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)], tmp)
    link_dependencies(venv, tmp)
    return Installed(wheel, build_log, venv)


def test_the_build_prints_no_warnings(installed: Installed) -> None:
    assert "warning" not in installed.build_log.lower(), installed.build_log


def test_the_wheel_holds_every_config_and_module_of_the_checkout(installed: Installed) -> None:
    in_wheel = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {
        f"opd_core/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "opd_core").rglob("*.py")}
    plugin_files = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "plugins").rglob("*.yaml")]
    expected |= {str(p.relative_to(ROOT / "plugins")) for p in plugin_files}
    assert any(name.startswith("opd_core/conf/") for name in expected)
    assert any(name.startswith("opd_hf/conf/sampler/") for name in expected)
    assert expected - in_wheel == set()


def test_the_installed_code_is_the_wheels(installed: Installed, tmp_path: Path) -> None:
    python = str(installed.venv / "bin" / "python")
    probe = "import opd_core, opd_hf; print(opd_core.__file__); print(opd_hf.__file__)"
    files = run([python, "-c", probe], tmp_path, clean_env(tmp_path)).split()
    assert all(f.startswith(str(site_packages(installed.venv))) for f in files), files


def test_cfg_job_runs_from_an_empty_folder(installed: Installed, tmp_path: Path) -> None:
    output = run([str(installed.script), "--cfg", "job"], tmp_path, clean_env(tmp_path))
    assert "train:" in output and "student:" in output
    assert list(tmp_path.iterdir()) == []  # printing the config writes nothing


def test_a_two_step_run_from_an_empty_folder(
    installed: Installed, tiny_models: TinyModels, tmp_path: Path
) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    overrides = tiny_run_overrides(tiny_models, Path("run"), steps=2)
    run([str(installed.script), *overrides], work, clean_env(tmp_path))
    metrics = (work / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2
    assert (work / "run" / "summary.json").is_file()
    assert (work / "run" / "learning_curve.png").is_file()  # the report plugin's entry point
