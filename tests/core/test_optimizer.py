"""The trainer's AdamW picks a fused or multi-tensor implementation and still takes AdamW steps."""

from __future__ import annotations

import pytest
import torch

from opd_core.update import adamw_implementation, step_and_mark_updated


def test_fp32_cpu_weights_get_the_fused_kernel_and_sharded_ones_foreach() -> None:
    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
    assert adamw_implementation(weights, sharded=False) == {"fused": True}
    assert adamw_implementation(weights, sharded=True) == {"foreach": True}
    assert adamw_implementation([torch.ones(2, dtype=torch.long)], sharded=False) == {
        "foreach": True
    }


@pytest.mark.parametrize("sharded", [False, True])
def test_first_step_moves_each_weight_by_lr_against_its_gradient(sharded: bool) -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    weight.grad = torch.tensor([0.5, -4.0])
    kind = adamw_implementation([weight], sharded)
    torch.optim.AdamW([weight], lr=0.1, weight_decay=0.01, eps=0.0, **kind).step()
    # step 1: m_hat = g, v_hat = g^2, so the Adam step is lr * sign(g); decay scales by 1 - lr*wd
    expected = torch.tensor([1.0 * 0.999 - 0.1, -2.0 * 0.999 + 0.1])
    assert torch.allclose(weight.detach(), expected, atol=1e-6)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_step_bumps_the_version_of_every_updated_weight(sharded: bool) -> None:
    """Weight syncs (opd_vllm.weights) tell changed weights from their version counters, which
    the fused kernel alone leaves untouched; a weight without a gradient is not updated."""
    updated, frozen = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    updated.grad = torch.full((3,), 0.5)
    optimizer = torch.optim.AdamW(
        [updated, frozen], lr=0.1, **adamw_implementation([updated], sharded)
    )
    before = (updated._version, frozen._version)
    step_and_mark_updated(optimizer)
    assert updated._version > before[0]
    assert frozen._version == before[1]
