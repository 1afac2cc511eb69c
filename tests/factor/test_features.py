"""Mammo-FActOR feature maps: shift-and-stitch, the build-if-missing cache, eval mode restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammoclip_kit import factor as FA

torch.set_num_threads(1)


class _PoolTower(torch.nn.Module):
    """A stand-in tower of stride 4: the last map is the mean of each 4 × 4 block of the first input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 4)


def test_stitched_features_sample_the_same_map_densely():
    from mammoclip_kit.data.transforms import PAPER_MEAN, PAPER_STD

    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    tower = _PoolTower()
    dense = FA.stitched_features(tower, x, stitch=2)
    assert dense.shape == (2, 1, 4, 6)
    assert torch.equal(dense[:, :, ::2, ::2], tower.forward_features(x))  # offset 0 is the ordinary map
    # cell (1, 3) = window shifted down 2 and right 2 from cell (0, 1): rows 2..5, columns 6..9
    assert float(dense[0, 0, 1, 3]) == pytest.approx(float(x[0, 0, 2:6, 6:10].mean()))
    # the last row / column of windows reaches past the image: the vacated border is background
    fill = (0.0 - PAPER_MEAN) / PAPER_STD
    expected = torch.full((4, 4), fill)
    expected[:2, :2] = x[1, 0, 6:8, 10:12]
    assert float(dense[1, 0, 3, 5]) == pytest.approx(float(expected.mean()))
    assert torch.equal(FA.stitched_features(tower, x, stitch=1), tower.forward_features(x))
    with pytest.raises(ValueError, match="not divisible by stitch=3"):
        FA.stitched_features(tower, x, stitch=3)
    with pytest.raises(ValueError, match="stitch must be"):
        FA.stitched_features(tower, x, stitch=0)


def test_feature_maps_stitch_reads_images_and_caches_separately(tmp_path):
    import cv2

    paths = []
    for k in range(2):
        image = np.zeros((16, 8), dtype=np.uint8)
        image[4 * k:4 * k + 4, 2:6] = 255
        paths.append(tmp_path / f"im{k}.png")
        cv2.imwrite(str(paths[-1]), image)
    tower = _PoolTower()
    plain, sizes = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False)
    dense, _ = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False, stitch=4)
    assert plain.shape == (2, 1, 4, 2) and dense.shape == (2, 1, 16, 8) and sizes == [(16, 8), (16, 8)]
    assert torch.equal(dense[:, :, ::4, ::4], plain)
    assert len(list((tmp_path / "cache").glob("factor_maps_*.pt"))) == 2
    again, _ = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False, stitch=4)
    assert torch.equal(again, dense)


class _CountingTower(_PoolTower):
    """:class:`_PoolTower` that counts its forward passes and records whether it ran in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.modes = 0, []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.modes.append(self.training)
        return super().forward_features(x)


def _write_images(folder, n: int = 3) -> list:
    import cv2

    paths = []
    for k in range(n):
        image = np.zeros((16, 8), dtype=np.uint8)
        image[2 * k:2 * k + 4, 1:5] = 200
        paths.append(folder / f"im{k}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def test_feature_maps_cache_is_reused_rebuilt_on_change_and_on_retrain(tmp_path):
    paths = _write_images(tmp_path)
    tower = _CountingTower()
    tower.train()
    first, _ = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert tower.calls == 2 and tower.modes == [False, False] and tower.training  # eval inside, train mode restored
    [cache] = (tmp_path / "cache").glob("factor_maps_*.pt")
    assert cache.with_name(cache.name + ".params.json").is_file()  # the record of what the cache was built with
    again, sizes = FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False)
    assert tower.calls == 2 and torch.equal(again, first) and sizes == [(16, 8)] * 3
    FA.feature_maps(tower, paths[:2], cache_dir=tmp_path / "cache", progress=False)  # other images: another cache
    assert tower.calls == 3 and len(list((tmp_path / "cache").glob("factor_maps_*.pt"))) == 2
    with torch.no_grad():
        tower.dummy.fill_(1.0)  # other weights: the cache of the old ones is not reused
    FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False)
    assert tower.calls == 4
    FA.feature_maps(tower, paths, cache_dir=tmp_path / "cache", progress=False, retrain=True)
    assert tower.calls == 5
    with pytest.raises(FileNotFoundError, match="1 image file"):
        FA.feature_maps(tower, [*paths, tmp_path / "missing.png"], progress=False)
