"""Pretraining CLI: ``python -m mammoclip_kit.pretrain --config configs/pretrain/<preset>.yaml [key=value ...]``.

Trains Mammo-CLIP (MVS loss) or a variant from the built tables into a checkpoint folder (kit format), with exact
resume from ``train/last.pt``. One process per device under ``torchrun`` (DDP: gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from mammoclip_kit.errors import cli_errors
from mammoclip_kit.train.config import VARIANTS, load_config

DESCRIPTION = """\
Pretrain Mammo-CLIP (or the CLIP / +VinDr variant) from built tables into a checkpoint folder.

Data, two ways:
  --profile P [--data-root D]  a profile run: builds PNGs and tables from the data root D (vindr/, rsna/, reports/;
                               required for the paper profile) under --output-dir, then trains. Under torchrun the
                               first process builds them while the others wait: build a full dataset's PNGs first
                               in one process (mammoclip-run --profile paper --only 03 -p data_root=D), not in torchrun.
  --tables T --data-root R     tables already built (reports_pretrain.csv, vindr_pretrain.csv, vindr_images.csv);
                               their image paths are relative to R. With a kit run folder, --output-dir alone is
                               enough (tables in <output-dir>/tables, image paths relative to <output-dir>).

Every PretrainConfig field can be overridden as key=value (YAML values), e.g. batch_size=4 image_size=[1520,912]
amp=bf16 grad_checkpointing=true channels_last=true image_init=/weights/tf_efficientnet_b5.safetensors.
Progress: a line with loss, img/s, elapsed time and ETA every progress_every_steps steps, on the console and in
<out>/train/progress.log; per-step values (with img/s and ETA) in <out>/train/log.csv, TensorBoard in <out>/train/tb."""

EPILOG = """\
examples:
  # one process (one GPU, or the CPU)
  python -m mammoclip_kit.pretrain --config configs/pretrain/paper-b5.yaml \\
      --tables runs/paper/tables --data-root runs/paper --text-encoder /models/Bio_ClinicalBERT \\
      --out runs/paper/checkpoints/mammoclip image_init=/weights/tf_efficientnet_b5.ns_jft_in1k.safetensors

  # a profile run: PNGs and tables built from the real data root first
  python -m mammoclip_kit.pretrain --config configs/pretrain/paper-b5.yaml --profile paper \\
      --data-root /data/mammo --output-dir runs/paper --text-encoder /models/Bio_ClinicalBERT

  # all GPUs of one machine (batch_size is per process; the loss gathers every rank's rows as negatives)
  torchrun --standalone --nproc_per_node 8 -m mammoclip_kit.pretrain --config configs/pretrain/paper-b5.yaml \\
      --tables runs/paper/tables --data-root runs/paper --text-encoder /models/Bio_ClinicalBERT batch_size=2

  # two machines × 8 GPUs: run on each node with its --node_rank (0 and 1), same rendezvous endpoint
  torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0:29500 \\
      --rdzv_id mammoclip -m mammoclip_kit.pretrain --config configs/pretrain/paper-b5.yaml \\
      --tables runs/paper/tables --data-root runs/paper --text-encoder /models/Bio_ClinicalBERT

  # resume: rerun the same command; it continues from <out>/train/last.pt (same config required unless
  # --allow-config-change; --no-resume starts over). --stop-at-step N saves the state after step N and exits.

  # smoke test of the multi-process path on a CPU (gloo): 2 processes
  torchrun --standalone --nproc_per_node 2 -m mammoclip_kit.pretrain --config configs/pretrain/smoke.yaml \\
      --output-dir runs/smoke --variant clip max_steps=2 batch_size=1 image_init=null

batch_size is per process: 1 is allowed with 2+ processes (a single process needs 2 breasts per batch for a
contrastive negative). Speed settings: amp (auto = bf16 on CUDA when supported), grad_checkpointing, channels_last,
compile; measure them with `python -m mammoclip_kit.bench pretrain` and `make gpu-check`."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mammoclip_kit.pretrain", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="preset YAML (configs/pretrain/*.yaml)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="ablation variant: sets loss and data sources (default: the YAML's)")
    parser.add_argument("--profile", default=None,
                        help="build PNGs and tables with this profile's run context (data from --data-root)")
    parser.add_argument("--data-root", default=None,
                        help="without --profile: the folder the tables' image paths are relative to (default "
                             "--output-dir); with --profile: the data root holding vindr/, rsna/, reports/")
    parser.add_argument("--output-dir", default=None,
                        help="run folder: default tables (<output-dir>/tables) and checkpoints "
                             "(<output-dir>/checkpoints/<variant>)")
    parser.add_argument("--tables", default=None, help="folder of the built tables (default <output-dir>/tables)")
    parser.add_argument("--out", default=None, help="checkpoint folder (default <output-dir>/checkpoints/<variant>)")
    parser.add_argument("--text-encoder", default=None, help="hub id or local folder of the text encoder")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA, then MPS, then CPU; under "
                                                       "torchrun each process takes cuda:LOCAL_RANK)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing train/last.pt")
    parser.add_argument("--stop-at-step", type=int, default=None, help="save the state after this step and exit")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume train/last.pt even though the config differs from the interrupted run's")
    parser.add_argument("overrides", nargs="*", help="PretrainConfig overrides as key=value (YAML values)")
    return parser.parse_args(argv)


def resolve_paths(args: argparse.Namespace, variant: str) -> tuple[Path, Path, Path]:
    """``(tables, image root, checkpoint folder)`` of a run without ``--profile``; ``ValueError`` naming what is
    missing (never a hint at environment variables: the paths are given here)."""
    if not args.output_dir and not (args.tables and args.data_root):
        raise ValueError("say where the data is: --tables (folder of the built tables) with --data-root (the folder "
                         "their image paths are relative to), or --output-dir (a kit run folder holding tables/), "
                         "or --profile with --data-root")
    output_dir = Path(args.output_dir) if args.output_dir else None
    tables = Path(args.tables) if args.tables else output_dir / "tables"
    root = Path(args.data_root) if args.data_root else output_dir
    if not args.out and output_dir is None:
        raise ValueError("give --out (the checkpoint folder) or --output-dir (checkpoints go to "
                         "<output-dir>/checkpoints/<variant>)")
    out = Path(args.out) if args.out else output_dir / "checkpoints" / variant
    if not tables.is_dir():
        raise FileNotFoundError(f"{tables}: no tables folder (build the tables with a profile run or "
                                "mammoclip-build-* first, or pass --tables)")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --data-root is not a folder (the tables' image paths are relative to it)")
    return tables, root, out


@cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mammoclip_kit import env
    from mammoclip_kit.train.distributed import cleanup, init_distributed
    from mammoclip_kit.train.pipeline import run_pretraining

    env.tune_cpu_allocator()

    overrides = list(args.overrides)
    if args.text_encoder:
        overrides.append(f"text_encoder={args.text_encoder}")
    cfg = load_config(args.config, overrides=overrides, variant=args.variant)
    variant = args.variant or next((v for v, o in VARIANTS.items()
                                    if o["loss"] == cfg.loss and o["sources"] == cfg.sources), "custom")
    if args.profile:
        from mammoclip_kit.context import make_context

        ctx = make_context(profile=args.profile, data_root=args.data_root, output_dir=args.output_dir,
                           device=args.device, seed=cfg.seed)
        root, tables, device = Path(ctx.output_dir), Path(ctx.tables_dir), ctx.device
        out = Path(args.out) if args.out else root / "checkpoints" / variant
    else:
        tables, root, out = resolve_paths(args, variant)
        device = env.pick_device(args.device)
    info = init_distributed(device)
    try:
        if args.profile:  # under torchrun the first process builds PNGs and tables, the others wait for them
            from mammoclip_kit.data.records import ensure_tables
            from mammoclip_kit.train.distributed import barrier

            if info.is_main:
                ensure_tables(ctx)
            barrier()
        env.seed_everything(cfg.seed)
        result = run_pretraining(cfg, tables, root, out, device=info.device, dist_info=info,
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
