"""On a GPU: the compiled chunked head against the eager one and full logits, and clipping
folded into the fused AdamW step against ``clip_grad_norm_``; prints the largest differences.
    python bench/checks/head_and_clipping_parity.py
"""

import copy

import torch

from dpo_lib.training.clipping import clip_gradients
from dpo_lib.training.logps import token_logps


def relative_diffs(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> list[str]:
    return [f"{((a - b).abs().max() / b.abs().max()).item():.2e}" for a, b in zip(got, want, strict=True)]


def head_parity(dtype: torch.dtype, tokens: int = 3000, hidden_size: int = 2048, vocab: int = 32000) -> None:
    hidden = torch.randn(tokens, hidden_size, device="cuda", dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size, device="cuda") * 0.02).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device="cuda")
    targets[::7] = -100
    upstream = torch.randn(tokens, device="cuda")
    results = {}
    for name, chunk, compiled in (("full", None, False), ("eager", 1024, False), ("compiled", 1024, True)):
        hidden.grad = weight.grad = None
        out = token_logps(hidden, weight, targets, chunk, compiled=compiled)
        (out * upstream).sum().backward()
        results[name] = (out.detach().float(), hidden.grad.float(), weight.grad.float())
    for name in ("eager", "compiled"):
        print(f"head {dtype} {name} vs full: max relative diffs out/dhidden/dweight",
              relative_diffs(results[name], results["full"]))  # fmt: skip
    print(f"head {dtype} compiled vs eager:", relative_diffs(results["compiled"], results["eager"]))


def clipping_parity() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512)).cuda()
    twin = copy.deepcopy(model)
    x = torch.randn(64, 512, device="cuda")
    for m in (model, twin):
        (m(x).pow(2).sum() * 10).backward()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=0.1, fused=True)
    folded = torch.optim.AdamW(twin.parameters(), lr=1e-3, eps=0.1, fused=True)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    plain.step()
    folded_norm = clip_gradients([p.grad for p in twin.parameters()], 1.0, folded)
    folded.step()
    diff = max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters(), strict=True))
    print("clip norm", norm.item(), folded_norm.item(), "max weight diff", diff)


if __name__ == "__main__":
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        head_parity(dtype)
    clipping_parity()
