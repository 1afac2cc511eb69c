"""The frozen, cacheable trunk of a timm tower and the ImageNet start folded into the kit's input standardisation."""

from __future__ import annotations

import pytest
import torch

from mammoclip_kit.models.imagenet import IMAGENET_MEAN, IMAGENET_STD, fold_input_normalisation
from mammoclip_kit.models.towers import TimmImageTower


@pytest.fixture()
def tower() -> TimmImageTower:
    torch.manual_seed(0)
    tower = TimmImageTower("tf_efficientnet_lite0")
    # non-trivial batch-norm statistics, so that a wrong fold would show
    for module in tower.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return tower.eval()


def test_trunk_then_rest_is_the_whole_forward(tower: TimmImageTower) -> None:
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        full = tower(x)
        for blocks in (1, 3, 5):
            h = tower.forward_trunk(x, blocks)
            assert h.shape[1] == tower.trunk_channels(blocks)
            torch.testing.assert_close(tower.forward_from_trunk(h, blocks), full, rtol=1e-5, atol=1e-5)
    assert [tower.trunk_channels(b) for b in (1, 2, 3, 4)] == [16, 24, 40, 80]
    with pytest.raises(ValueError, match="trunk blocks must be in 1..6"):
        tower.forward_trunk(x, 7)


def test_freeze_trunk_stops_gradients_and_keeps_statistics(tower: TimmImageTower) -> None:
    tower.freeze_trunk(3)
    tower.train()
    assert not tower.model.blocks[2].training and tower.model.blocks[3].training
    frozen = [p for m in (tower.model.conv_stem, *tower.model.blocks[:3]) for p in m.parameters()]
    assert all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in tower.model.blocks[3].parameters())
    before = tower.model.bn1.running_mean.clone()
    x = torch.randn(4, 3, 96, 64)
    h = tower.forward_trunk(x, 3).detach()
    # the tower takes the cached trunk output in place of the image, and gives the same features as from the image
    tower.eval()
    with torch.no_grad():
        torch.testing.assert_close(tower(h), tower(x), rtol=1e-5, atol=1e-5)
    tower.train()
    tower(h).sum().backward()
    assert tower.model.blocks[3][0].conv_pw.weight.grad is not None
    torch.testing.assert_close(tower.model.bn1.running_mean, before)  # frozen batch norm did not update


def test_fold_input_normalisation_is_exact_inside_the_image(tower: TimmImageTower) -> None:
    mean_in, std_in = 0.3089279, 0.25053555
    grey = torch.rand(1, 1, 64, 48).repeat(1, 3, 1, 1)
    kit_input = (grey - mean_in) / std_in
    imagenet_input = (grey - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tower.model.bn1(tower.model.conv_stem(imagenet_input))
        unfolded = tower.model.bn1(tower.model.conv_stem(kit_input))
        fold_input_normalisation(tower, mean_in, std_in)
        folded = tower.model.bn1(tower.model.conv_stem(kit_input))
    # the stem's zero padding differs at the border only (3x3 kernel, stride 2: one output pixel)
    torch.testing.assert_close(folded[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert (unfolded - expected)[..., 1:-1, 1:-1].abs().max() > 0.1  # without the fold the inputs disagree
