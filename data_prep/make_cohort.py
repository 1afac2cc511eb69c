"""Generate the synthetic teaching cohort.

    python -m data_prep.make_cohort --preset classroom --out data/cohort/classroom --seed 0 --workers 2

Options: ``--n-patients`` (one number or vindr=..,rsna=..,reports=..), ``--image-scale``, ``--prevalence``,
``--vendors``, ``--no-compress``. See :mod:`mammoclip_kit.cohort.generate` for the presets and the output layout.
"""

from __future__ import annotations

from mammoclip_kit.cohort.generate import main


def cli() -> int:
    """Console-script entry point: run :func:`main` and exit 0 (errors exit non-zero with their message)."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
