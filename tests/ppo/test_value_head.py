"""The value head runs in fp32 under bf16 autocast (a regression target keeps its small differences)."""

import torch

from instructrl.modeling.value import scalar_head


def test_scalar_head_stays_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1)
    hidden = torch.randn(2, 3, 16)
    exact = head(hidden).squeeze(-1)  # (B, T) in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = scalar_head(head, hidden)
        plain = head(hidden).squeeze(-1)  # what autocast alone would compute
    assert inside.dtype == torch.float32 and torch.equal(inside, exact)
    assert plain.dtype == torch.bfloat16 and not torch.equal(plain.float(), exact)
