"""Mixed precision: what ``train.precision`` resolves to, and bf16 forwards that stay close to
fp32 with fp32 weights, log-probabilities and gradients."""

from __future__ import annotations

import pytest
import torch
from test_micro_batches import COMPLETION_LENS, PROMPT_LENS, varied_batch
from transformers import AutoModelForCausalLM

from conftest import TinyModels
from opd_core import GenerationParams, OPDError
from opd_core import precision as precision_module
from opd_core.precision import Bf16Probe, autocast, model_width, probe_bf16, resolve_precision
from opd_core.update import policy_output
from opd_hf.generation import decode

CPU = torch.device("cpu")


def fake_probe(monkeypatch: pytest.MonkeyPatch, reported: bool, bf16: float, fp32: float) -> None:
    probe = Bf16Probe("cpu", reported, fp32_gflops=fp32, bf16_gflops=bf16)
    monkeypatch.setattr(precision_module, "probe_bf16", lambda device_type, width=1024: probe)


@pytest.mark.parametrize(
    ("reported", "bf16", "fp32", "auto"),
    [(True, 389.0, 140.0, "bf16"), (True, 150.0, 140.0, "fp32"), (False, 0.3, 140.0, "fp32")],
)
def test_auto_picks_bf16_only_where_it_is_measured_faster(
    monkeypatch: pytest.MonkeyPatch, reported: bool, bf16: float, fp32: float, auto: str
) -> None:
    fake_probe(monkeypatch, reported, bf16, fp32)
    assert resolve_precision("auto", CPU) == auto
    assert resolve_precision("fp32", CPU) == "fp32"


def test_auto_decides_at_the_models_width(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(device_type: str, width: int = 1024) -> Bf16Probe:
        # bf16 pays only on wide layers (the casts cost more than it saves on narrow ones)
        return Bf16Probe("cpu", True, fp32_gflops=100.0, bf16_gflops=3.0 * width / 10, width=width)

    monkeypatch.setattr(precision_module, "probe_bf16", probe)
    assert resolve_precision("auto", CPU, width=96) == "fp32"
    assert resolve_precision("auto", CPU, width=576) == "bf16"
    assert "width 96" in probe("cpu", 96).describe()


def test_the_width_is_the_models_hidden_size(tiny_models: TinyModels) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.student)
    assert model_width(model) == model.config.hidden_size
    assert model_width(torch.nn.Linear(3, 4)) == precision_module.PROBE_WIDTH


def test_bf16_on_hardware_without_it_is_refused_with_what_was_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_probe(monkeypatch, reported=False, bf16=0.3, fp32=140.0)
    with pytest.raises(OPDError, match=r"not compute bf16 natively.*0 GFLOP/s in bf16 against "
                       r"140 in fp32.*train.precision=fp32"):  # fmt: skip
        resolve_precision("bf16", CPU)
    with pytest.raises(OPDError, match=r"Unknown train.precision='half'\. Use one of: fp32, bf16"):
        resolve_precision("half", CPU)


def test_the_probe_measures_both_precisions_once_per_process_and_width() -> None:
    probe = probe_bf16("cpu")
    assert probe.fp32_gflops > 0 and probe.bf16_gflops > 0
    assert probe_bf16("cpu") is probe
    narrow = probe_bf16("cpu", 64)
    assert narrow is not probe and narrow.width == 64 and narrow.fp32_gflops > 0
    assert f"{probe.speedup:.2f}x" in probe.describe()


def test_bf16_sampling_and_update_forwards_stay_close_to_fp32_with_fp32_outputs(
    tiny_models: TinyModels,
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models.teacher).float()
    batch = varied_batch(PROMPT_LENS, COMPLETION_LENS, vocab=model.config.vocab_size)
    grads = {}
    for name in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with autocast(name, CPU):
            policy = policy_output(model, batch)
        assert policy.logprobs_BT.dtype == torch.float32
        (policy.logprobs_BT * batch.completion_mask_BT).sum().backward()
        grads[name] = torch.cat(
            [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
        if name == "fp32":
            reference_BT = policy.logprobs_BT.detach()
    on_BT = batch.completion_mask_BT.bool()
    bf16_BT = policy.logprobs_BT.detach()
    assert (bf16_BT - reference_BT)[on_BT].abs().mean() < 0.05
    assert torch.cosine_similarity(grads["fp32"], grads["bf16"], dim=0) > 0.99
    # sampling: greedy tokens mostly agree, log-probabilities are fp32 and close
    ids_BP = batch.input_ids_BT[:, : batch.prompt_len]
    mask_BP = batch.attention_mask_BT[:, : batch.prompt_len]
    out = {
        name: decode(model, ids_BP, mask_BP, GenerationParams(8, 0.0, precision=name), [], 0)
        for name in ("fp32", "bf16")
    }
    assert out["bf16"][1].dtype == torch.float32
    assert (out["bf16"][0] == out["fp32"][0]).float().mean() > 0.8
