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
from concurrent.futures import ThreadPoolExecutor
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


def start_server(model: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m opd_remote.serve`` in its own process, once it answers /health."""
    process = subprocess.Popen(
        [sys.executable, "-m", "opd_remote.serve", "--model", str(model), "--port", str(port)]
        + ["--api-key", TOKEN, "--batch-size", "4", *extra],
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
    ctx: Any = SimpleNamespace(
        hook=hook, device=torch.device("cpu"), student=student, precision="fp32"
    )
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


def test_remote_scores_multi_turn_episodes_like_the_in_process_teacher(
    server: str, tiny_models: TinyModels
) -> None:
    """teacher=remote with an environment: the rows (prompt, turns and the environment's tokens
    between them) go as token ids; the student tokens of every turn get the local scores."""
    import episode_envs
    from opd_core.config import EpisodeConfig
    from opd_core.episodes import EnvironmentCalls, EpisodeRunner
    from opd_core.rollouts import eos_ids

    hook = make_plugin_manager().hook
    student = load_model(hook, ModelSpec(str(tiny_models.student)), "student", torch.device("cpu"))
    ctx: Any = SimpleNamespace(
        hook=hook, device=torch.device("cpu"), student=student, precision="fp32"
    )
    local = HFTeacher(model={"path": str(tiny_models.teacher)})
    local.setup(ctx)
    remote = RemoteTeacher(url=server, api_key=TOKEN, batch_size=2)
    remote.setup(ctx)
    env = make_plugin_manager([episode_envs.Followups(turns=3)]).hook
    runner = EpisodeRunner(
        EnvironmentCalls(env, "followups"),
        student.tokenizer,
        eos_ids(student.model, student.tokenizer),
        5,
        EpisodeConfig(max_turns=3),
        None,
    )
    torch.manual_seed(0)
    prompts = rollouts_from_text(student.tokenizer).prompts
    rollouts = runner.run(prompts, 1, episode_envs.Recorder(local.loaded))
    expected = local.opd_score_rollouts(rollouts, top_k=5)
    got = remote.opd_score_rollouts(rollouts, top_k=5)
    mask_BT = rollouts.completion_mask_BT.bool()
    assert int(mask_BT.sum()) < int(rollouts.attention_mask_BT[:, rollouts.prompt_len :].sum())
    assert torch.allclose(got.logprobs_BT, expected.logprobs_BT, atol=1e-5)
    assert got.topk_logprobs_BTK is not None and expected.topk_logprobs_BTK is not None
    assert torch.allclose(got.topk_logprobs_BTK, expected.topk_logprobs_BTK, atol=1e-5)
    assert expected.logprobs_BT[mask_BT].lt(0).all()


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
        OPDError,
        match=r"did not answer /v1/completions after 3 tries over \d+\.\d s .*opd_remote\.serve"
        r".*teacher\.max_retries \(now 2\)",
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


# ---------------------------------------------------------------- limits and timeouts

LIMITS = {
    "--max-body-bytes": "4096",
    "--max-sequences": "4",
    "--max-tokens": "64",
    "--max-connections": "2",
    "--idle-timeout-s": "1",
    "--read-timeout-s": "2",
}


@pytest.fixture(scope="module")
def strict_server(tiny_models: TinyModels) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = start_server(tiny_models.teacher, port, *(x for kv in LIMITS.items() for x in kv))
    yield "127.0.0.1", port
    process.kill()
    process.wait()


def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_error(reply: bytes) -> tuple[int, str]:
    """The status code and the JSON error message of a raw HTTP reply."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"application/json" in head, reply[:300]
    return int(head.split()[1]), json.loads(body)["error"]["message"]


def request_bytes(method: str, body: bytes | None, **headers: str) -> bytes:
    lines = [f"{method} /v1/completions HTTP/1.1", "Host: x", f"Authorization: Bearer {TOKEN}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (request_bytes("POST", b"{}", Content_Length="abc"), 400, "Content-Length 'abc'"),
        (request_bytes("POST", b"{}", Content_Length="-1"), 400, "not a byte count"),
        (request_bytes("POST", None), 411, "Content-Length"),
        (request_bytes("POST", None, Content_Length="100000000"), 413, "--max-body-bytes"),
        (request_bytes("PUT", b"{}", Content_Length="2"), 405, "method PUT is not allowed"),
        (request_bytes("DELETE", None), 405, "use GET or POST"),
        (b"NONSENSE\r\n\r\n", 400, "Bad request"),
        (b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long"),
    ],
    ids=[
        "length-abc",
        "length-negative",
        "no-length",
        "huge-body",
        "put",
        "delete",
        "garbage",
        "long-uri",
    ],
)
def test_malformed_http_gets_a_json_error(
    strict_server: tuple[str, int], data: bytes, status: int, message: str
) -> None:
    code, error = status_and_error(raw_exchange(strict_server, data))
    assert code == status and message in error, (code, error)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([[1, 2]] * 5, "5 sequences in one request; this server takes at most 4 (--max-sequences)"),
        (
            [[1] * 40, [2] * 40],
            "80 tokens in one request; this server takes at most 64 (--max-tokens)",
        ),
    ],
    ids=["sequences", "tokens"],
)
def test_requests_over_the_limits_get_413(
    strict_server: tuple[str, int], prompt: list[list[int]], message: str
) -> None:
    host, port = strict_server
    code, reply = post(
        f"http://{host}:{port}/v1/completions", json.dumps({"prompt": prompt}).encode()
    )
    assert code == 413 and message in reply["error"]["message"]


def test_an_idle_connection_is_closed(strict_server: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.create_connection(strict_server, timeout=10) as sock:
        assert read_until_closed(sock) == b""  # nothing sent: closed without a word
    assert 0.5 < time.monotonic() - started < 5


def test_a_request_that_trickles_in_times_out_with_408(strict_server: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.create_connection(strict_server, timeout=10) as sock:
        try:
            for byte in request_bytes("POST", b"{}", Content_Length="2")[:-6]:
                sock.sendall(bytes([byte]))  # never idle for a second, never done either
                time.sleep(0.2)
        except OSError:  # the server closed the connection while we were still sending
            pass
        reply = read_until_closed(sock)
    code, error = status_and_error(reply)
    assert code == 408 and "--read-timeout-s" in error
    assert time.monotonic() - started < 6


def test_connections_over_the_limit_wait_for_a_slot(strict_server: tuple[str, int]) -> None:
    host, port = strict_server
    idle = [socket.create_connection(strict_server, timeout=10) for _ in range(2)]  # both slots
    try:
        started = time.monotonic()
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        assert time.monotonic() - started > 0.5  # queued until an idle connection was dropped
    finally:
        for sock in idle:
            sock.close()


def test_fifty_concurrent_requests_are_all_answered(server: str) -> None:
    def health(_: int) -> int:
        with urllib.request.urlopen(server + "/health", timeout=30) as response:
            return int(response.status)

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert list(pool.map(health, range(50))) == [200] * 50
