"""RetinaNet on the image tower: pyramid and anchors, focal loss, augmentation, training, VOC vs COCO mAP."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mammoclip_kit.context import make_context
from mammoclip_kit.eval.detection import (
    BoxAugment,
    DetectionDataset,
    DetectionEval,
    DetectionTrainConfig,
    DetectorConfig,
    FocalClassificationHead,
    PaperAnchorGenerator,
    ap_of,
    coco_map,
    create_detector,
    ensure_detector,
    evaluate_detector,
    image_matches,
    load_detector,
    map_bootstrap,
    select_finding_images,
    train_detector,
    transform_boxes,
)
from mammoclip_kit.eval.metrics import average_precision_at_iou


class TinyTower(nn.Module):
    """A stand-in image tower with the kit's tower contract: six conv blocks (strides 2…32) and a 1×1 head."""

    def __init__(self, width: int = 8, num_features: int = 24) -> None:
        super().__init__()
        self._chans = [width * (i + 1) for i in range(6)]
        layers, cin = [], 3
        for c, s in zip(self._chans, [2, 2, 2, 2, 1, 2], strict=True):
            layers.append(nn.Sequential(nn.Conv2d(cin, c, 3, s, 1, bias=False), nn.BatchNorm2d(c), nn.SiLU()))
            cin = c
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.Conv2d(cin, num_features, 1, bias=False), nn.BatchNorm2d(num_features), nn.SiLU())
        self.num_features = num_features
        self.default_taps = [4, 5]

    def tap_channels(self, indices):
        return [self._chans[i] for i in indices]

    def forward_intermediates(self, x, indices):
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in indices:
                out.append(x)
        return out

    def forward_features(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _blob_image(h: int, w: int, box: tuple[float, float, float, float], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (40 + 10 * rng.standard_normal((h, w))).clip(0, 255)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    inside = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    image[inside] = 220
    return image.astype(np.uint8)


@pytest.fixture()
def tiny_tables(tmp_path):
    """Six 128×64 PNGs: four with a mass (one box each), one with a calcification only, one normal."""
    rows, boxes = [], []
    specs = [("Mass", (10, 20, 34, 44)), ("Mass", (30, 60, 54, 84)), ("Mass", (20, 80, 44, 104)),
             ("Mass", (12, 30, 36, 54)), ("Suspicious Calcification", (30, 30, 40, 40)), (None, None)]
    for i, (finding, box) in enumerate(specs):
        image_id = f"img{i}"
        path = tmp_path / "png" / f"p{i}" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _blob_image(128, 64, box or (0, 0, 1, 1), seed=i))
        rows.append({"patient_id": f"p{i}", "image_id": image_id, "split": "training",
                     "png_path": path.relative_to(tmp_path).as_posix()})
        if finding:
            boxes.append({"image_id": image_id, "finding": finding, "png_xmin": box[0], "png_ymin": box[1],
                          "png_xmax": box[2], "png_ymax": box[3]})
    return tmp_path, pd.DataFrame(rows), pd.DataFrame(boxes)


def test_pyramid_levels_strides_and_frozen_encoder():
    torch.manual_seed(0)
    tower = TinyTower()
    model = create_detector(tower, DetectorConfig(fpn_channels=16))
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    model.train()
    feats = model.backbone(torch.randn(2, 3, 160, 96))
    # P3..P7 at strides 8..128: ceil(160 / s) × ceil(96 / s).
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(20, 12), (10, 6), (5, 3), (3, 2), (2, 1)]
    assert all(f.shape[1] == 16 for f in feats.values())
    assert model.backbone.in_channels == (40, 48, 24)
    assert not tower.training and all(not p.requires_grad for p in tower.parameters())
    after = tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched in train mode
    # Memoised encoder maps: identical pyramid, and the second pass over the same images never calls the encoder.
    model.backbone.memoize = True
    x = torch.randn(3, 3, 160, 96)
    direct = model.backbone.fpn(*model.backbone.encoder.forward_intermediates(x, [4, 5]),
                                model.backbone.encoder.forward_features(x), (160, 96))
    first = model.backbone(x)
    calls = []
    handle = tower.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    second = model.backbone(x[[2, 0]])
    handle.remove()
    assert not calls and model.backbone.memo_hits == 2
    assert all(torch.allclose(first[k], direct[k], atol=1e-6) for k in first)
    assert all(torch.equal(second[k], first[k][[2, 0]]) for k in first)
    finetune = create_detector(TinyTower(), DetectorConfig(fpn_channels=16, freeze_encoder=False))
    finetune.train()
    assert finetune.backbone.encoder.training and all(p.requires_grad for p in finetune.backbone.encoder.parameters())


def test_paper_anchors_layout_and_sizes():
    config = DetectorConfig()
    sizes = config.anchor_sizes_per_level()
    assert sizes[0] == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))
    assert sizes[-1][0] == 512
    gen = PaperAnchorGenerator(sizes, config.anchor_ratios)
    base = gen.cell_anchors[0]
    widths, heights = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    assert torch.allclose(widths * heights, torch.tensor([s * s for s in sizes[0]] * 3), rtol=1e-5)
    assert torch.allclose(heights / widths, torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3), rtol=1e-5)
    fmap = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)] + [torch.zeros(1, 1, 1, 1)] * 3
    from torchvision.models.detection.image_list import ImageList

    anchors = gen(ImageList(torch.zeros(1, 3, 16, 24), [(16, 24)]), fmap)[0]
    assert anchors.shape == ((6 + 2 + 1 + 1 + 1) * 9, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres[0], torch.tensor([4.0, 4.0]))  # (0 + 0.5) · 8
    assert torch.allclose(centres[9 * 5], torch.tensor([20.0, 12.0]))  # P3 cell (row 1, col 2)
    assert torch.allclose(centres[9 * 6], torch.tensor([8.0, 8.0]))  # first P4 cell, stride 16


def test_focal_loss_uses_alpha_and_gamma():
    head = FocalClassificationHead(4, 1, 1, alpha=0.7, gamma=1.5)
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    matched = torch.tensor([0, -1, -2])  # positive, negative, ignored (between thresholds)
    targets = [{"labels": torch.tensor([0])}]
    loss = head.compute_loss(targets, {"cls_logits": logits[None]}, [matched])
    p1, p2 = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-1.0))
    expected = -0.7 * (1 - p1) ** 1.5 * torch.log(p1) - 0.3 * p2 ** 1.5 * torch.log(1 - p2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # one positive → divided by 1


def test_flips_move_boxes_exactly():
    aug = BoxAugment(hflip=1.0, vflip=1.0, affine_p=0.0)
    m = aug.matrix(np.random.default_rng(0), 100, 60)
    assert transform_boxes(np.array([[10, 20, 30, 50]]), m) == pytest.approx(np.array([[30, 50, 50, 80]]))


@pytest.mark.parametrize("seed", range(8))
def test_augmented_box_stays_on_the_lesion(seed):
    box = np.array([[20.0, 40.0, 44.0, 70.0]])
    image = _blob_image(128, 64, tuple(box[0]), seed=seed)
    warped, moved = BoxAugment()(image, box, np.random.default_rng(seed))
    ys, xs = np.nonzero(warped > 150)
    lesion = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
    inter = np.clip(np.minimum(lesion[2:], moved[0, 2:]) - np.maximum(lesion[:2], moved[0, :2]), 0, None).prod()
    union = np.prod(lesion[2:] - lesion[:2]) + np.prod(moved[0, 2:] - moved[0, :2]) - inter
    assert inter / union > 0.75, (lesion, moved)
    assert moved[0, 0] <= xs.mean() <= moved[0, 2] and moved[0, 1] <= ys.mean() <= moved[0, 3]


def test_dataset_keeps_only_images_with_the_finding(tiny_tables):
    root, images, boxes = tiny_tables
    mass = DetectionDataset(images, boxes, root, "Mass", image_size=(64, 32))
    assert list(mass.images["image_id"]) == ["img0", "img1", "img2", "img3"]
    image, target, image_id = mass[1]
    assert image.shape == (3, 64, 32) and image_id == "img1"
    assert target["boxes"].tolist() == [[15.0, 30.0, 27.0, 42.0]]  # halved with the image
    calc = DetectionDataset(images, boxes, root, "Suspicious_Calcification")
    assert list(calc.images["image_id"]) == ["img4"]
    # decoded once, then served from memory as copies: a caller (or an augmentation) may change what it got
    first, first_boxes, _ = mass.load(1)
    first[:] = 0
    first_boxes[:] = -1
    again, again_boxes, _ = mass.load(1)
    assert again.any() and again_boxes.tolist() == [[15.0, 30.0, 27.0, 42.0]]
    (root / mass.images["png_path"].iloc[1]).unlink()  # the file is not read a second time
    torch.testing.assert_close(mass[1][0], image)
    bad = boxes.copy()
    bad.loc[2, "png_xmax"] = 5
    with pytest.raises(ValueError, match="vindr_boxes row 2 .*img2"):
        select_finding_images(images, bad, "Mass")


def test_retinanet_trains_and_loss_decreases(tiny_tables, tmp_path):
    torch.manual_seed(0)
    root, images, boxes = tiny_tables
    data = DetectionDataset(images, boxes, root, "Mass")
    model = create_detector(TinyTower(), DetectorConfig(fpn_channels=16, anchor_scale=0.75))
    config = DetectionTrainConfig(epochs=12, batch_size=4, lr=3e-3, grad_clip=1.0, seed=0)
    history = train_detector(model, data, data, config, device="cpu", progress=False, log=None,
                             out_dir=tmp_path / "det")
    assert history.steps == 12 and model.backbone.memo_hits >= 4 * 11  # the frozen encoder ran once per image
    assert np.mean(history.losses[-3:]) < 0.6 * history.losses[0], history.losses
    assert 1 <= history.best_epoch <= 12
    result = evaluate_detector(model, data, device="cpu", batch_size=4)
    assert result.map50 == pytest.approx(history.best_val_map)
    reloaded, payload = load_detector(tmp_path / "det", TinyTower())
    assert payload["detector"]["fpn_channels"] == 16 and payload["history"]["steps"] == 12
    again = evaluate_detector(reloaded, data, device="cpu", batch_size=4)
    assert again.map50 == pytest.approx(result.map50)
    for (b1, s1), (b2, s2) in zip(result.predictions, again.predictions, strict=True):
        assert torch.allclose(torch.as_tensor(b1), torch.as_tensor(b2), atol=1e-4)
        assert np.allclose(s1, s2, atol=1e-5)


def test_trained_detector_is_reused_only_with_the_same_settings(tiny_tables, tmp_path, capsys):
    root, images, boxes = tiny_tables
    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path / "run"), device="cpu")
    data = DetectionDataset(images, boxes, root, "Mass")
    config = DetectorConfig(fpn_channels=16, anchor_scale=0.75)

    def tower() -> TinyTower:
        torch.manual_seed(0)
        return TinyTower()

    train = DetectionTrainConfig(epochs=1, batch_size=4, max_steps=1)
    first, history = ensure_detector(ctx, "t", tower(), config, train, (data, data, data), progress=False)
    record = ctx.checkpoint_dir("detector-t") / "params.json"
    assert record.is_file() and history.steps == 1 and "loaded" not in capsys.readouterr().out
    again, _ = ensure_detector(ctx, "t", tower(), config, train, (data, data, data), progress=False)
    assert "detector-t: loaded" in capsys.readouterr().out
    a, b = first.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)
    changed = DetectionTrainConfig(epochs=1, batch_size=4, max_steps=1, lr=5e-4)
    ensure_detector(ctx, "t", tower(), config, changed, (data, data, data), progress=False)
    assert "loaded" not in capsys.readouterr().out  # other settings: trained again


def test_training_is_seeded(tiny_tables):
    root, images, boxes = tiny_tables
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        data = DetectionDataset(images, boxes, root, "Mass", augment=BoxAugment(), seed=3)
        model = create_detector(TinyTower(), DetectorConfig(fpn_channels=16, anchor_scale=0.75))
        config = DetectionTrainConfig(epochs=2, batch_size=4, seed=3)
        runs.append(train_detector(model, data, None, config, device="cpu", progress=False, log=None).losses)
    assert runs[0] == runs[1]


def test_voc_and_coco_map_agree_on_hand_made_cases():
    gt = [np.array([[10, 10, 50, 50]]), np.array([[0, 0, 20, 20], [60, 60, 90, 90]])]
    perfect = [(g.astype(float), np.linspace(0.9, 0.8, len(g))) for g in gt]
    assert average_precision_at_iou(perfect, gt).ap == pytest.approx(1.0)
    coco = coco_map(perfect, gt)
    assert coco["map"] == pytest.approx(1.0) and coco["map50"] == pytest.approx(1.0)
    # Half the boxes found, every detection right: VOC all-point 0.5; COCO's 101-point curve counts recall 0..0.5
    # inclusive, 51 / 101.
    half = [(gt[0].astype(float), np.array([0.9])), (gt[1][:1].astype(float), np.array([0.8]))]
    gt_half = [gt[0], np.concatenate([gt[1], [[100, 10, 130, 40]]])]
    assert average_precision_at_iou(half, gt_half).ap == pytest.approx(0.5)
    assert coco_map(half, gt_half)["map50"] == pytest.approx(51 / 101)
    # A false positive ranked first: precision 1/2 at recall 1 → AP 0.5 in both.
    fp_first = [(np.array([[60, 60, 90, 90], [10, 10, 50, 50]], dtype=float), np.array([0.9, 0.5]))]
    assert average_precision_at_iou(fp_first, gt[:1]).ap == pytest.approx(0.5)
    assert coco_map(fp_first, gt[:1])["map50"] == pytest.approx(0.5)
    # A box shifted to IoU 0.6: a hit at 0.5 for both, but COCO's 0.5:0.95 average only counts thresholds ≤ 0.6.
    shifted = [(np.array([[10, 10, 50, 50]], dtype=float) + [10, 0, 10, 0], np.array([0.9]))]
    iou = 30 * 40 / (2 * 40 * 40 - 30 * 40)
    assert iou == pytest.approx(0.6)
    assert average_precision_at_iou(shifted, gt[:1]).ap == pytest.approx(1.0)
    coco = coco_map(shifted, gt[:1])
    assert coco["map50"] == pytest.approx(1.0) and coco["map"] == pytest.approx(3 / 10)
    assert math.isnan(coco_map([(np.zeros((0, 4)), np.zeros(0))], [np.zeros((0, 4))])["map"])


def _random_eval(seed: int, n_images: int = 30) -> DetectionEval:
    """Detections around true boxes with random offsets and scores (some images without a box, some misses)."""
    rng = np.random.default_rng(seed)
    predictions, truth = [], []
    for i in range(n_images):
        gt = np.array([[20.0, 20.0, 50.0, 50.0]]) + rng.integers(0, 40) if i % 5 else np.zeros((0, 4))
        boxes = np.array([[20.0, 20.0, 50.0, 50.0]]) + rng.normal(0, 6, (3, 4)) + rng.integers(0, 40)
        predictions.append((boxes, rng.random(3)))
        truth.append(gt)
    voc = average_precision_at_iou(predictions, truth, 0.5, score_threshold=0.05, max_detections=100)
    return DetectionEval(voc=voc, coco={}, predictions=predictions, ground_truth=truth,
                         image_ids=[f"i{k}" for k in range(n_images)])


def test_map_bootstrap_matches_the_voc_ap_and_pairs_detectors():
    a, b, c = _random_eval(0), _random_eval(1), _random_eval(2)
    patients = {f"i{k}": f"p{k // 3}" for k in range(30)}
    boot = map_bootstrap({"a": [a], "ab": [a, b], "a_again": [a]}, patients, n_boot=200, seed=0)
    assert boot.point["a"] == pytest.approx(a.map50)
    assert boot.per_seed["ab"] == pytest.approx([a.map50, b.map50])
    assert boot.point["ab"] == pytest.approx((a.map50 + b.map50) / 2)
    # any resample's AP equals the AP computed directly on those images
    matches = image_matches(a)
    index = [0, 0, 4, 7, 7, 7, 12, 29]
    direct = average_precision_at_iou([a.predictions[i] for i in index], [a.ground_truth[i] for i in index], 0.5,
                                      score_threshold=0.05, max_detections=100).ap
    assert ap_of(matches, index) == pytest.approx(direct)
    value, low, high = boot.interval("a")
    assert low < value < high and boot.n_patients == 10 and boot.n_images == 30
    assert boot.difference("a", "a_again") == (0.0, 0.0, 0.0)  # paired: the same detector twice differs by nothing
    table = boot.table()
    assert list(table["detector"]) == ["a", "ab", "a_again"] and table.loc[1, "seeds"] == 2
    c.image_ids = list(reversed(c.image_ids))
    with pytest.raises(ValueError, match="other test images"):
        map_bootstrap({"a": [a], "c": [c]}, patients)
    with pytest.raises(ValueError, match="image 'i0' has no patient"):
        map_bootstrap({"a": [a]}, {})


def test_timm_lite0_tower_as_detection_backbone_and_shared_encoder_maps():
    from mammoclip_kit.models.towers import TimmImageTower

    torch.manual_seed(0)
    tower = TimmImageTower("tf_efficientnet_lite0")
    config = DetectorConfig(fpn_channels=16, anchor_scale=0.5)
    model = create_detector(tower, config)
    assert model.backbone.taps == tower.default_taps and model.backbone.in_channels == (112, 320, 1280)
    x = [torch.randn(3, 96, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.zeros(1, dtype=torch.int64)}] * 2
    model.train()
    losses = model(x, targets)
    loss = losses["classification"] + losses["bbox_regression"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in tower.parameters())  # frozen tower
    model.eval()
    with torch.no_grad():
        assert len(model(x)) == 2
    # a second seed's detector on the same frozen tower reuses the first one's encoder maps
    other = create_detector(tower, config)
    other.backbone.share_memo(model.backbone)
    model.backbone.memoize = other.backbone.memoize = True
    model.backbone(torch.stack(x))
    other.backbone(torch.stack(x))
    assert other.backbone.memo_hits == 2
    with pytest.raises(ValueError, match="same frozen encoder"):
        create_detector(TimmImageTower("tf_efficientnet_lite0"), config).backbone.share_memo(model.backbone)


def test_ensure_detector_seeds_the_heads(tiny_tables, tmp_path):
    root, images, boxes = tiny_tables
    ctx = make_context(None, profile="smoke", output_dir=str(tmp_path / "run"), device="cpu")
    data = DetectionDataset(images, boxes, root, "Mass")
    config = DetectorConfig(fpn_channels=16, anchor_scale=0.75)
    tower = TinyTower()
    models = {}
    for seed in (0, 1, 0):
        train = DetectionTrainConfig(epochs=1, batch_size=4, max_steps=1, seed=seed)
        models.setdefault(seed, []).append(ensure_detector(ctx, f"s{seed}-{len(models)}", tower, config, train,
                                                           (data, data, data), progress=False)[0])
    first, second = models[0][0].state_dict(), models[1][0].state_dict()
    key = next(k for k in first if k.startswith("head.classification_head.conv"))
    assert not torch.equal(first[key], second[key])
    assert torch.equal(first[key], models[0][1].state_dict()[key])
