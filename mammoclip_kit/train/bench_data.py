"""``python -m mammoclip_kit.bench data``: the training loader's cost per image and per worker, stage by stage.

Stages of one training image (:class:`~mammoclip_kit.data.datasets.ImageTextDataset` with ``train=True``, no image
cache): PNG decode (``load_image``), resize to the input size (a no-op when the PNG already has it, as the paper
preprocessing writes 1520 × 912), the paper's augmentation (flips, affine with p 0.5, elastic with p 0.5; the
affine and elastic steps are also timed alone, as if always applied) and normalisation to the 3 × H × W float input
(``to_model_input``). Stage timings run in this process with one OpenCV and one torch thread, i.e. what one loader
worker does; ``img/s per worker`` = 1000 / (sum of the stage means). Then the real ``DataLoader`` (collate included)
runs with each ``--workers`` count and reports img/s in total and per worker. Images: ``--tables`` + ``--data-root``
(reports_pretrain.csv), or synthetic 8-bit PNGs written to a temporary folder at ``--png-height × --png-width``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["benchmark", "stage_times", "loader_rate"]


def _mean_ms(fn: Callable[[int], Any], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return 1000 * (time.perf_counter() - start) / n


def stage_times(paths: Sequence[Path], size: tuple[int, int], repeats: int = 1, seed: int = 0) -> dict[str, float]:
    """Mean milliseconds per image of each loader stage over ``paths`` (each read ``repeats`` times)."""
    import cv2

    from mammoclip_kit.data.transforms import (
        ImageAugmentConfig,
        augment,
        load_image,
        random_affine,
        random_elastic,
        resize_to,
        to_model_input,
    )

    items = [Path(p) for p in paths] * repeats
    n = len(items)
    rng = np.random.default_rng(seed)
    config = ImageAugmentConfig()
    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        decoded = [load_image(items[0])]
        ms = {"decode": _mean_ms(lambda i: decoded.__setitem__(0, load_image(items[i])), n)}
        image = decoded[0]
        ms["resize"] = _mean_ms(lambda i: resize_to(image, *size), n)
        image = resize_to(image, *size)
        ms["augment (p as trained)"] = _mean_ms(lambda i: augment(image, rng, config), max(n, 8))
        ms["  affine alone"] = _mean_ms(lambda i: random_affine(image, rng, config), n)
        ms["  elastic alone"] = _mean_ms(lambda i: random_elastic(image, rng, config), n)
        ms["normalise"] = _mean_ms(lambda i: to_model_input(image), n)
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])
    ms["total"] = ms["decode"] + ms["resize"] + ms["augment (p as trained)"] + ms["normalise"]
    return ms


def loader_rate(tables: Path, root: Path, size: tuple[int, int], workers: int, batch: int, batches: int,
                seed: int = 0) -> float:
    """Images per second delivered by the training ``DataLoader`` (two views per breast) with ``workers``."""
    from torch.utils.data import DataLoader

    from mammoclip_kit.data.datasets import ImageTextDataset, PairCollate
    from mammoclip_kit.data.records import read_table

    dataset = ImageTextDataset(read_table(tables / "reports_pretrain.csv"), root, size, train=True, seed=seed,
                               cache_images=False, table="reports_pretrain.csv")
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        collate_fn=PairCollate(), generator=torch.Generator().manual_seed(seed),
                        prefetch_factor=2 if workers else None)
    images, start, seen = 0, None, 0
    while seen < batches + 1:
        for item in loader:
            if start is None:  # the first batch pays for the workers' start-up
                start = time.perf_counter()
            else:
                images += 2 * item["image"].shape[0]
            seen += 1
            if seen >= batches + 1:
                break
    return images / (time.perf_counter() - start)


def benchmark(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, print the stage table and the loader rates, return them."""
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.bench data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1520, help="model input height")
    parser.add_argument("--width", type=int, default=912, help="model input width")
    parser.add_argument("--png-height", type=int, default=None, help="synthetic PNG height (default: --height)")
    parser.add_argument("--png-width", type=int, default=None, help="synthetic PNG width (default: --width)")
    parser.add_argument("--images", type=int, default=8, help="images timed per stage")
    parser.add_argument("--tables", default=None, help="folder with reports_pretrain.csv (default: synthetic PNGs)")
    parser.add_argument("--data-root", default=None, help="root of the tables' image paths")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="loader worker counts to run")
    parser.add_argument("--batch", type=int, default=4, help="loader batch (breasts)")
    parser.add_argument("--batches", type=int, default=4, help="timed loader batches per worker count")
    args = parser.parse_args(list(argv) if argv is not None else None)

    from mammoclip_kit.data.datasets import as_list
    from mammoclip_kit.data.records import read_table
    from mammoclip_kit.train.bench import write_synthetic_pngs

    size = (args.height, args.width)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mammoclip-bench-data-") as tmp:
        if args.tables:
            tables = Path(args.tables)
            root = Path(args.data_root) if args.data_root else tables.parent
            what = f"tables {tables}"
        else:
            png = (args.png_height or args.height, args.png_width or args.width)
            breasts = max((args.images + 1) // 2, args.batch * (args.batches + 1) // 2 + 1)
            tables, root = write_synthetic_pngs(Path(tmp), breasts, png, seed=0), Path(tmp)
            what = f"{2 * breasts} synthetic 8-bit PNGs of {png[0]}x{png[1]}"
        table = read_table(tables / "reports_pretrain.csv")
        paths = [root / p for _, row in table.iterrows() for v in as_list(row["views"]) for p in as_list(row[v])]
        ms = stage_times(paths[:args.images], size)
        per_worker = 1000.0 / ms["total"]
        print(f"bench data: {what} → {size[0]}x{size[1]} (paper augmentation), {min(args.images, len(paths))} "
              "images, one thread (= one loader worker)")
        for stage, value in ms.items():
            print(f"  {stage:<24}{value:8.1f} ms/img")
        print(f"  {'per worker':<24}{per_worker:8.1f} img/s")
        result.update({"ms": ms, "img_per_s_per_worker": per_worker})
        rates = {}
        for workers in args.workers:
            rate = loader_rate(tables, root, size, workers, args.batch, args.batches)
            rates[workers] = rate
            print(f"  DataLoader, {workers} worker(s): {rate:7.1f} img/s"
                  + (f" ({rate / workers:.1f} per worker)" if workers else " (in the main process)"))
        result["loader_img_per_s"] = rates
    return result
