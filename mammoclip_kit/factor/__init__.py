"""Mammo-FActOR: which channels of the image tower speak about a finding, and where they look (the paper's §2.3).

The public names are re-exported here (``from mammoclip_kit import factor as FA``); the modules hold one job each (see
:mod:`mammoclip_kit.factor.pipeline` for the whole method and its design notes).
"""

from mammoclip_kit.factor.pipeline import *  # noqa: F403
from mammoclip_kit.factor.pipeline import __all__  # noqa: F401
