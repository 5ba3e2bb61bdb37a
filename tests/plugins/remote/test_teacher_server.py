"""The teacher server and the remote teacher, as real processes talking HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from conftest import TinyModels, tiny_run_overrides
from opd_core import OPDError, Prompt, RolloutBatch, hookimpl
from opd_core.app import run
from opd_core.metrics import read_metrics
from opd_core.modeling import ModelSpec, encode_prompts, load_model, pad_right
from opd_core.plugin_manager import make_plugin_manager
from opd_hf.teacher import HFTeacher
from opd_remote.teacher import RemoteTeacher, parse_positions

TOKEN = "s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    """``python -m opd_remote.serve`` in its own process, once it answers /health."""
    process = subprocess.Popen(
        [sys.executable, "-m", "opd_remote.serve", "--model", str(model), "--port", str(port)]
        + ["--api-key", TOKEN, "--batch-size", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert process.poll() is None, "the teacher server exited during start-up"
            time.sleep(0.3)
    process.kill()
    raise AssertionError("the teacher server did not start within 120 s")


@pytest.fixture(scope="module")
def server(tiny_models: TinyModels) -> Iterator[str]:
    port = free_port()
    process = start_server(tiny_models.teacher, port)
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rollouts_from_text(tokenizer: Any) -> RolloutBatch:
    """Three chat prompts with completions of different lengths, in the sampler's layout."""
    prompts = tuple(
        Prompt(id=str(i), messages=({"role": "user", "content": q},))
        for i, q in enumerate(["3+4", "12*(2+1)", "7-5"])
    )
    answers = ["3+4=7 #7", "2+1=3 12*3=36 #36", "#2"]
    prompt_ids_BP, prompt_mask_BP = encode_prompts(tokenizer, prompts)
    rows = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    completion_ids_BC, completion_mask_BC = pad_right(rows, tokenizer.pad_token_id)
    return RolloutBatch(
        prompts=prompts,
        group_ids_B=torch.arange(3),
        input_ids_BT=torch.cat([prompt_ids_BP, completion_ids_BC], 1),
        attention_mask_BT=torch.cat([prompt_mask_BP, completion_mask_BC], 1),
        completion_mask_BT=torch.cat([torch.zeros_like(prompt_mask_BP), completion_mask_BC], 1),
        sampler_logprobs_BT=torch.zeros(3, prompt_ids_BP.shape[1] + completion_ids_BC.shape[1]),
        completions=tuple(answers),
        prompt_len=prompt_ids_BP.shape[1],
    )


def test_remote_scores_equal_the_in_process_teachers(server: str, tiny_models: TinyModels) -> None:
    hook = make_plugin_manager().hook
    student = load_model(hook, ModelSpec(str(tiny_models.student)), "student", torch.device("cpu"))
    ctx: Any = SimpleNamespace(hook=hook, device=torch.device("cpu"), student=student)
    local = HFTeacher(model={"path": str(tiny_models.teacher)})
    local.setup(ctx)
    remote = RemoteTeacher(url=server, api_key=TOKEN, batch_size=2)
    remote.setup(ctx)
    rollouts = rollouts_from_text(student.tokenizer)
    expected = local.opd_score_rollouts(rollouts, top_k=5)
    got = remote.opd_score_rollouts(rollouts, top_k=5)
    assert torch.allclose(got.logprobs_BT, expected.logprobs_BT, atol=1e-5)
    assert got.topk_logprobs_BTK is not None and expected.topk_logprobs_BTK is not None
    assert torch.allclose(got.topk_logprobs_BTK, expected.topk_logprobs_BTK, atol=1e-5)
    mask_BT = rollouts.completion_mask_BT.bool()
    assert got.topk_ids_BTK is not None and expected.topk_ids_BTK is not None
    assert torch.equal(got.topk_ids_BTK[mask_BT], expected.topk_ids_BTK[mask_BT])
    assert expected.logprobs_BT[mask_BT].lt(0).all()  # the comparison is not of zeros


@pytest.mark.parametrize(
    ("path", "body", "token", "status", "message"),
    [
        ("/v1/completions", b'{"prompt": [[1, 2]]}', None, 401, "bearer token"),
        ("/v1/completions", b'{"prompt": [[1, 2]]}', "wrong", 401, "bearer token"),
        ("/v1/completions", b"{not json", TOKEN, 400, "not valid JSON"),
        ("/v1/completions", b'{"max_tokens": 1}', TOKEN, 400, "missing field 'prompt'"),
        ("/v1/completions", b'{"prompt": "text"}', TOKEN, 400, "token id"),
        ("/v1/completions", b'{"prompt": [[1, 99999]]}', TOKEN, 400, "outside"),
        ("/v1/completions", b'{"prompt": [[1, 2]], "max_tokens": 5}', TOKEN, 400, "max_tokens"),
        ("/v1/nothing", b"{}", TOKEN, 404, "no route"),
    ],
)
def test_bad_requests_get_4xx_with_a_reason(
    server: str, path: str, body: bytes, token: str | None, status: int, message: str
) -> None:
    code, reply = post(server + path, body, token)
    assert code == status
    assert message in reply["error"]["message"]


def test_reply_has_vllms_prompt_logprobs_layout(server: str) -> None:
    code, reply = post(
        server + "/v1/completions", b'{"prompt": [5, 6, 7], "prompt_logprobs": 2, "max_tokens": 1}'
    )
    assert code == 200
    positions = reply["choices"][0]["prompt_logprobs"]
    assert positions[0] is None and len(positions) == 3
    for entry, token in zip(positions[1:], [6, 7], strict=True):
        assert {"logprob", "rank", "decoded_token"} <= set(entry[str(token)])
        assert sorted(v["rank"] for v in entry.values())[:2] == [1, 2]


def remote_overrides(models: TinyModels, out: Path, url: str, steps: int) -> list[str]:
    local = [
        o
        for o in tiny_run_overrides(models, out, steps)
        if not o.startswith(("+teacher", "teacher."))
    ]
    return [
        *local,
        "+teacher=remote",
        f"teacher.url={url}",
        f"teacher.api_key={TOKEN}",
        "teacher.backoff_s=0.5",
        "teacher.max_retries=8",
        "eval.teacher=false",
        "eval.at_start=false",
    ]


def test_a_run_survives_the_server_being_killed_and_restarted(
    tiny_models: TinyModels, compose_config: Callable[[list[str]], DictConfig], tmp_path: Path
) -> None:
    port = free_port()
    servers = [start_server(tiny_models.teacher, port)]
    restarts: list[threading.Thread] = []

    class KillAfterFirstStep:
        @hookimpl
        def opd_step_end(self, ctx: Any, step: int, metrics: Any) -> None:
            if step == 1:
                servers[0].kill()
                servers[0].wait()
                restart = threading.Thread(
                    target=lambda: servers.append(start_server(tiny_models.teacher, port))
                )
                restart.start()
                restarts.append(restart)

    out = tmp_path / "run"
    cfg = compose_config(remote_overrides(tiny_models, out, f"http://127.0.0.1:{port}", steps=3))
    try:
        run(cfg, out, pm=make_plugin_manager([KillAfterFirstStep()]))
    finally:
        for restart in restarts:  # the client may reach the new server before its health poll
            restart.join(timeout=150)
        for process in servers:
            process.kill()
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert len(servers) == 2  # step 2 was scored by the restarted server
    assert all("teacher_reverse_kl" in m for m in metrics)


def test_a_dead_server_is_named_after_the_retries() -> None:
    teacher = RemoteTeacher(
        url=f"http://127.0.0.1:{free_port()}", model="m", timeout_s=1, max_retries=2, backoff_s=0.01
    )
    started = time.monotonic()
    with pytest.raises(
        OPDError, match=r"did not answer /v1/completions after 3 tries.*opd_remote\.serve"
    ):
        teacher.opd_score_rollouts(
            RolloutBatch(
                prompts=(),
                group_ids_B=torch.zeros(1, dtype=torch.long),
                input_ids_BT=torch.ones(1, 3, dtype=torch.long),
                attention_mask_BT=torch.ones(1, 3),
                completion_mask_BT=torch.tensor([[0, 1, 1]]),
                sampler_logprobs_BT=torch.zeros(1, 3),
                completions=("",),
                prompt_len=1,
            ),
            top_k=0,
        )
    assert time.monotonic() - started < 10


def test_malformed_prompt_logprobs_are_named() -> None:
    def malformed(what: str) -> OPDError:
        return OPDError(f"malformed reply: {what}")

    with pytest.raises(OPDError, match="3 positions"):
        parse_positions([None, {}], [1, 2, 3], 0, malformed)
    with pytest.raises(OPDError, match="sampled token"):
        parse_positions([None, {"9": {"logprob": -1.0, "rank": 1}}], [1, 2], 0, malformed)
    with pytest.raises(OPDError, match="fewer than 2"):
        parse_positions([None, {"2": {"logprob": -1.0, "rank": 1}}], [1, 2], 2, malformed)
