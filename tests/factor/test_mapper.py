"""Mammo-FActOR mappers: the loss against a direct computation, heads kept apart, training, the stage config."""

from __future__ import annotations

import math

import pytest
import torch

from mammoclip_kit import factor as FA

torch.set_num_threads(1)


def _direct_loss(region: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The loss of the paper's §2.3 (the released code's form) written out with loops and math.exp."""
    b, c, a, _ = region.shape
    r = region / region.norm(dim=-1, keepdim=True)
    t = text / text.norm(dim=-1, keepdim=True)
    s = [[max(float(r[i, k, j] @ t[j]) for k in range(c)) / temperature for j in range(a)] for i in range(b)]
    total, count = 0.0, 0
    for j in range(a):
        if sum(float(labels[i, j]) for i in range(b)) == 0:
            continue
        column = sum(math.exp(s[i][j] * (1 - float(labels[i, j]))) for i in range(b))
        for i in range(b):
            if labels[i, j] == 1:
                total += -math.log(math.exp(s[i][j]) / (math.exp(s[i][j]) + column))
                count += 1
    return total / count


def test_factor_loss_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    region = torch.randn(4, 5, 2, 6, generator=g)
    text = torch.randn(2, 6, generator=g)
    labels = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.float32)  # attribute 1 has no positive
    got = float(FA.factor_loss(region, text, labels, temperature=0.5))
    assert got == pytest.approx(_direct_loss(region, text, labels, 0.5), rel=1e-5)
    labels[1, 1] = 1
    got = float(FA.factor_loss(region, text, labels, temperature=0.07))
    assert got == pytest.approx(_direct_loss(region, text, labels, 0.07), rel=1e-5)


def test_factor_loss_without_positives_is_zero_and_rejects_bad_shapes():
    region = torch.randn(2, 3, 1, 4, requires_grad=True)
    loss = FA.factor_loss(region, torch.randn(1, 4), torch.zeros(2, 1))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="labels must be"):
        FA.factor_loss(region, torch.randn(1, 4), torch.zeros(3, 1))


def test_mapper_keeps_channels_and_heads_apart():
    mapper = FA.AttributeMapper(in_dim=6, embed_dim=4, attributes=("mass", "suspicious_calcification"))
    maps = torch.randn(3, 7, 2, 3)
    out = mapper(maps)
    assert out.shape == (3, 7, 2, 4)
    # channel 5 of image 1 through head 1 equals that head applied to that channel alone (no view-pairing mix-up)
    alone = mapper.heads["suspicious_calcification"](maps[1, 5].flatten() / mapper.scale)
    torch.testing.assert_close(out[1, 5, 1], alone)
    with pytest.raises(ValueError, match="h·w = 6"):
        mapper(torch.randn(1, 7, 3, 3))


def test_sorted_descriptor_says_how_a_channel_peaks_not_where():
    mapper = FA.AttributeMapper(in_dim=3, embed_dim=4, attributes=("mass",), descriptor="sorted")
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, 0, 0], maps[0, 0, 1, 0] = 5.0, 2.0   # image 0: channel 0 peaks top left …
    maps[1, 0, 3, 3], maps[1, 0, 2, 3] = 5.0, 2.0   # … image 1: the same peak bottom right
    maps[:, 1] = 1.0
    torch.testing.assert_close(mapper.describe(maps)[:, 0], torch.tensor([[5.0, 2.0, 0.0]] * 2))
    torch.testing.assert_close(mapper.describe(maps)[:, 1], torch.ones(2, 3))
    out = mapper(maps)
    torch.testing.assert_close(out[0], out[1])  # moved peak, same embedding
    flat = FA.AttributeMapper(in_dim=16, embed_dim=4, attributes=("mass",))
    assert not torch.allclose(flat(maps)[0, 0], flat(maps)[1, 0])  # the paper's descriptor sees the position
    with pytest.raises(ValueError, match="h·w ≥ 3"):
        mapper(torch.zeros(1, 2, 1, 2))


def _toy_attribute(second_channel: bool = False):
    """48 images (odd ones positive) of 6 channels on a 3 × 2 grid: channel 0 lights up in the positives (and, with
    ``second_channel``, channel 1 as strongly elsewhere in the map); a random text embedding; a mapper config."""
    g = torch.Generator().manual_seed(1)
    n, c = 48, 6
    labels = (torch.arange(n) % 2).float()[:, None]
    maps = torch.rand(n, c, 3, 2, generator=g) * 0.3
    maps[labels[:, 0] == 1, 0, 1, 1] += 3.0
    if second_channel:
        maps[labels[:, 0] == 1, 1, 0, 0] += 3.0
    text = torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1)
    config = FA.FactorConfig(attributes=("mass",), lr=3e-3, epochs=40, batch_size=8, patience=40)
    return maps, labels, text, config


def test_training_finds_the_channel_that_carries_the_attribute():
    """Channel 0 lights up only in positive images: after training it must be the best-aligned channel."""
    maps, labels, text, config = _toy_attribute()
    mapper, history = FA.train_mapper(maps[:32], labels[:32], text, config, val_maps=maps[32:],
                                      val_labels=labels[32:], seed=0, progress=False)
    assert history.val_loss[history.best_epoch - 1] < history.val_loss[0]
    align = FA.channel_alignment(mapper, maps[32:], text)[:, :, 0]
    positives = labels[32:, 0] == 1
    assert (align[positives].argmax(1) == 0).float().mean() >= 0.9


def test_sorted_descriptor_generalises_to_lesions_at_positions_never_seen_in_training():
    """Training images have the lesion (channel 0's peak) in the top half of a 4 × 4 map, held-out images in the bottom
    half: the sorted descriptor still finds channel 0 there, since it does not encode where the peak is."""
    g = torch.Generator().manual_seed(2)
    n, c = 64, 6
    labels = (torch.arange(n) % 2).float()[:, None]
    maps = torch.rand(n, c, 4, 4, generator=g) * 0.3
    rows = torch.where(torch.arange(n) < 40, torch.randint(0, 2, (n,), generator=g), torch.randint(2, 4, (n,), generator=g))
    cols = torch.randint(0, 4, (n,), generator=g)
    for i in torch.nonzero(labels[:, 0] == 1).flatten():
        maps[i, 0, rows[i], cols[i]] += 3.0
    text = torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1)
    config = FA.FactorConfig(attributes=("mass",), lr=3e-3, epochs=40, batch_size=8, patience=40,
                             descriptor="sorted", descriptor_size=4)
    mapper, _ = FA.train_mapper(maps[:32], labels[:32], text, config, val_maps=maps[32:40], val_labels=labels[32:40],
                                seed=0, progress=False)
    assert mapper.in_dim == 4
    align = FA.channel_alignment(mapper, maps[40:], text)[:, :, 0]
    positives = labels[40:, 0] == 1
    assert (align[positives].argmax(1) == 0).float().mean() >= 0.9
    contrast = FA.channel_contrast(FA.channel_alignment(mapper, maps[:32], text)[:, :, 0], labels[:32, 0])
    assert int(contrast.argmax()) == 0


def test_the_seed_decides_which_of_two_equal_channels_a_mapper_settles_on():
    """The loss keeps each image's best channel only: with two channels that carry the attribute equally, the one a
    mapper ends up aligning depends on its seed (why notebook 09 trains `restarts` mappers and chooses on validation)."""
    maps, labels, text, config = _toy_attribute(second_channel=True)  # two channels, equally informative
    positives = labels[32:, 0] == 1
    winners = []
    for seed in range(6):
        mapper, _ = FA.train_mapper(maps[:32], labels[:32], text, config, val_maps=maps[32:], val_labels=labels[32:],
                                    seed=seed, progress=False)
        votes = FA.channel_alignment(mapper, maps[32:], text)[positives, :, 0].argmax(1)
        winners.append(int(votes.mode().values))
    assert {0, 1} <= set(winners)  # some seeds settle on channel 0, others on channel 1


class _Context:
    """The part of a RunContext a stage config reads: the profile's sections and the notebook's parameters."""

    def __init__(self, factor: dict, **params) -> None:
        self.settings, self.params = {"factor": factor}, params

    def section(self, name: str) -> dict:
        return dict(self.settings.get(name) or {})


def test_config_from_the_profile_section_and_notebook_parameters():
    ctx = _Context({"attributes": ["mass"], "batch_size": 8, "top_k": 4}, batch_size=None)
    config = FA.FactorConfig.from_context(ctx)
    assert config.attributes == ("mass",) and config.batch_size == 8 and config.top_k == 4
    assert config.batch_size_encode == 16  # the notebook's batch_size sets the mapper's batches only
    ctx.params["batch_size"] = 2
    assert FA.FactorConfig.from_context(ctx).batch_size == 2
    assert FA.FactorConfig.from_context(ctx, batch_size=3, top_k=None).batch_size == 3  # keyword > parameter
    assert FA.FactorConfig.from_context(ctx).to_dict()["thresholds"] == (0.8, 0.9, 0.95, 0.98)
    with pytest.raises(ValueError, match=r"factor section: unknown setting\(s\) \['learning_rate'\]"):
        FA.FactorConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="quantile"):
        FA.FactorConfig.from_dict({"quantile": 1.5})
    with pytest.raises(ValueError, match="stitch must be a positive integer"):
        FA.FactorConfig.from_dict({"stitch": 0})
    with pytest.raises(ValueError, match="unknown attribute"):
        FA.FactorConfig(attributes=("mass", "distortion"))
    with pytest.raises(ValueError, match="train_rows"):
        FA.FactorConfig.from_dict({"train_rows": "some"})
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        FA.FactorConfig.from_dict({"restarts": 0})
    assert FA.FactorConfig.from_dict({"restarts": 3}).restarts == 3
    with pytest.raises(ValueError, match="descriptor must be one of"):
        FA.FactorConfig.from_dict({"descriptor": "pooled"})
    with pytest.raises(ValueError, match="descriptor_size must be >= 1"):
        FA.FactorConfig.from_dict({"descriptor_size": 0})
    assert FA.FactorConfig.from_dict({"descriptor": "sorted", "reference_lr": 1e-3}).reference_lr == 1e-3
    reference = FA.FactorConfig.from_dict({"descriptor": "sorted", "lr": 1e-4, "reference_lr": 1e-3}).paper_reference()
    assert (reference.descriptor, reference.lr) == ("flat", 1e-3)
    assert FA.FactorConfig(descriptor="sorted", lr=2e-4).paper_reference().lr == 2e-4
    with pytest.raises(ValueError, match="reference_lr must be a positive"):
        FA.FactorConfig.from_dict({"reference_lr": 0})
