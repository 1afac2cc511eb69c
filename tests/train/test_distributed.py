"""2 gloo ranks × batch b give the same gradients as one process with batch 2b (gather-with-grad + DDP)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_model import TinyClip

from mammoclip_kit.losses import MultiViewClipLoss, gather_with_grad
from mammoclip_kit.train.loop import ContrastiveModule, compute_loss

B = 3  # per rank


def _inputs(model: TinyClip) -> tuple:
    g = torch.Generator().manual_seed(7)
    images = torch.randn(2 * B, 3, 24, 16, generator=g)
    images2 = torch.randn(2 * B, 3, 24, 16, generator=g)
    texts = [f"finding {i} word{i % 3}" for i in range(2 * B)]
    texts2 = [f"impression {i}" for i in range(2 * B)]
    return images, images2, model.tokenize(texts), model.tokenize(texts2)


def _model() -> TinyClip:
    torch.manual_seed(0)
    model = TinyClip(dropout=0.0)
    model.eval()  # batch-norm on running statistics: per-sample, so the split batch is comparable
    return model


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for local_loss in (True, False):
            _ddp_step(rank, out, local_loss)
    finally:
        dist.destroy_process_group()


def _ddp_step(rank: int, out: str, local_loss: bool) -> None:
    model = _model()
    images, images2, tok, tok2 = _inputs(model)
    part = slice(rank * B, (rank + 1) * B)
    # tokens are padded to the longest text of the full batch, so each rank's slice matches the reference
    ddp = torch.nn.parallel.DistributedDataParallel(ContrastiveModule(model, two_views=True))
    feats = ddp(images[part], {k: v[part] for k, v in tok.items()}, images2[part],
                {k: v[part] for k, v in tok2.items()})
    loss = compute_loss(MultiViewClipLoss(local_loss=local_loss), feats)["loss"]
    loss.backward()
    # gather_with_grad alone: d/dx of sum(gathered * w) is w's slice, summed over the two ranks' graphs
    x = torch.full((2, 2), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x)
    (gathered * torch.arange(8.0).reshape(4, 2)).sum().backward()
    if rank == 0:
        torch.save({"grads": _grads(model), "loss": loss.detach(), "gathered": gathered.detach(),
                    "x_grad": x.grad}, f"{out}.{local_loss}")
    else:
        torch.save({"x_grad": x.grad}, f"{out}.{local_loss}.rank1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the 2-rank job once (fork: the children reuse the parent's imports) for both loss modes."""
    out = str(tmp_path_factory.mktemp("ddp") / "rank0.pt")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="fork")
    return out


@pytest.mark.parametrize("local_loss", [True, False])
def test_two_gloo_ranks_match_single_process(ranks_output: str, local_loss: bool) -> None:
    out = f"{ranks_output}.{local_loss}"
    got = torch.load(out)
    model = _model()
    images, images2, tok, tok2 = _inputs(model)
    feats = ContrastiveModule(model, two_views=True)(images, tok, images2, tok2)
    loss = compute_loss(MultiViewClipLoss(), feats)["loss"]
    loss.backward()
    expected = _grads(model)
    assert set(got["grads"]) == set(expected) and len(expected) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if not local_loss:  # every rank computes the full-batch loss
        torch.testing.assert_close(got["loss"], loss.detach())
    # all-gather in rank order; backward: each rank receives its slice of the summed gradient (2 ranks × w)
    assert torch.equal(got["gathered"], torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]))
    w = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(got["x_grad"], 2 * w[:2])
    assert torch.equal(torch.load(out + ".rank1")["x_grad"], 2 * w[2:])
