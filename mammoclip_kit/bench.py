"""Benchmarks that print numbers: ``python -m mammoclip_kit.bench {cohort,preprocess,data,pretrain,embed,gpu-check} [args]``.

Each subcommand lives next to the code it measures (a ``benchmark(argv)`` function in the owning module); this module
only dispatches, so that ``--help`` of a subcommand shows its own arguments.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "cohort": ("mammoclip_kit.cohort.generate", "images/s of the synthetic cohort generator"),
    "preprocess": ("mammoclip_kit.data.preprocess", "images/s per core of DICOM → PNG, paper and voi modes"),
    "data": ("mammoclip_kit.train.bench_data", "ms per stage and img/s per worker of the training loader"),
    "pretrain": ("mammoclip_kit.train.bench", "img/s, step time and peak memory of a pretraining step "
                 "(--data real: end to end)"),
    "embed": ("mammoclip_kit.inference", "embedding throughput (img/s) of an image tower"),
    "gpu-check": ("mammoclip_kit.train.gpu_check", "the GPU-readiness table (paper-b5/b2, bf16, batch that fits)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from mammoclip_kit.env import tune_cpu_allocator

    tune_cpu_allocator()  # as every notebook does: the step times measured are the ones a notebook sees
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in SUBCOMMANDS:
        print(__doc__)
        for name, (_, what) in SUBCOMMANDS.items():
            print(f"  {name:<12}{what}")
        return 0 if not argv or argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    module.benchmark(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
