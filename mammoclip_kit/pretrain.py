"""Pretraining CLI: ``python -m mammoclip_kit.pretrain --config configs/pretrain/classroom.yaml [key=value ...]``.

Also runs under ``torchrun --nproc_per_node N -m mammoclip_kit.pretrain --config ...`` (DDP, one process per device;
gloo on CPU, NCCL on CUDA; multi-node with torchrun's ``--nnodes`` / ``--rdzv-*`` arguments). Reads the built tables
(``--tables``, default ``<output-dir>/tables``; image paths in them are relative to ``--output-dir``). ``--profile``
takes the tables folder, output folder and device of a profile run context instead (building the cohort / tables if
needed).

Examples::

    python -m mammoclip_kit.pretrain --config configs/pretrain/classroom.yaml --profile classroom --variant clip
    python -m mammoclip_kit.pretrain --config configs/pretrain/paper-b5.yaml --output-dir runs/paper \\
        --text-encoder /models/Bio_ClinicalBERT --out runs/paper/checkpoints/mammoclip batch_size=12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mammoclip_kit.errors import cli_errors
from mammoclip_kit.train.config import VARIANTS, load_config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.pretrain", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="preset YAML (configs/pretrain/*.yaml)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="ablation variant: sets loss and data sources (default: the YAML's)")
    parser.add_argument("--profile", default=None, help="take tables/output/device from this profile's run context")
    parser.add_argument("--output-dir", default=None, help="root the tables' image paths are relative to")
    parser.add_argument("--tables", default=None, help="folder of the built tables (default <output-dir>/tables)")
    parser.add_argument("--out", default=None, help="checkpoint folder (default <output-dir>/checkpoints/<variant>)")
    parser.add_argument("--text-encoder", default=None, help="hub id or local folder of the text encoder")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA, then MPS, then CPU)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing train/last.pt")
    parser.add_argument("--stop-at-step", type=int, default=None, help="save the state after this step and exit")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume train/last.pt even though the config differs from the interrupted run's")
    parser.add_argument("overrides", nargs="*", help="PretrainConfig overrides as key=value (YAML values)")
    return parser.parse_args(argv)


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mammoclip_kit import env
    from mammoclip_kit.train.distributed import cleanup, init_distributed
    from mammoclip_kit.train.pipeline import run_pretraining

    overrides = list(args.overrides)
    if args.text_encoder:
        overrides.append(f"text_encoder={args.text_encoder}")
    cfg = load_config(args.config, overrides=overrides, variant=args.variant)
    variant = args.variant or next((v for v, o in VARIANTS.items()
                                    if o["loss"] == cfg.loss and o["sources"] == cfg.sources), "custom")
    if args.profile:
        from mammoclip_kit.context import make_context
        from mammoclip_kit.data.records import ensure_tables

        ctx = make_context(profile=args.profile, output_dir=args.output_dir, device=args.device, seed=cfg.seed)
        ensure_tables(ctx)
        output_dir, tables, device = ctx.output_dir, ctx.tables_dir, ctx.device
    else:
        if not args.output_dir:
            print("error: give --output-dir (root of the tables' image paths) or --profile", file=sys.stderr)
            return 2
        output_dir = Path(args.output_dir)
        tables = Path(args.tables) if args.tables else output_dir / "tables"
        device = env.pick_device(args.device)
    out = Path(args.out) if args.out else Path(output_dir) / "checkpoints" / variant
    info = init_distributed(device)
    try:
        env.seed_everything(cfg.seed)
        result = run_pretraining(cfg, Path(tables), Path(output_dir), out, device=info.device, dist_info=info,
                                 resume=not args.no_resume, progress=info.is_main, stop_at_step=args.stop_at_step,
                                 allow_config_change=args.allow_config_change)
        if info.is_main:
            print(json.dumps({"out": str(out), "steps": result.steps, "interrupted": result.interrupted,
                              "wall_time_s": round(result.wall_time_s, 1),
                              "final_val_loss": result.metrics.get("final_val_loss")}, indent=2))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
