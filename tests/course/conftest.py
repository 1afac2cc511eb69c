"""Fixtures of the course tests: the rehearsal profile's inputs (a released-layout .tar, a tiny text-encoder folder and a
real-format data root), written once per session exactly as the runner's preparation writes them."""

from __future__ import annotations

import pytest

from mammoclip_kit.context import load_profile_settings
from mammoclip_kit.course.rehearsal import build_rehearsal_inputs


@pytest.fixture(scope="session")
def rehearsal_inputs(tmp_path_factory):
    """{"data_root", "checkpoint", "text_encoder"} → path, from ``configs/profiles/rehearsal.yaml``'s inputs section."""
    return build_rehearsal_inputs(tmp_path_factory.mktemp("rehearsal-inputs"), load_profile_settings("rehearsal")["inputs"])
