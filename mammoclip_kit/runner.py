"""``python -m mammoclip_kit.runner``: the notebook runner (see :mod:`mammoclip_kit.course.runner`)."""

from mammoclip_kit.course.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
