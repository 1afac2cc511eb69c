"""Notebook 02's window panels: the "darker" panel is darker on screen for MONOCHROME1 and MONOCHROME2 alike."""

import re

import matplotlib
import numpy as np
import pytest

from mammoclip_kit.data import dicom
from mammoclip_kit.data.dicom import read_dicom, write_dicom

matplotlib.use("Agg")


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_darker_panel_is_darker_on_screen(tmp_path, photometric):
    import matplotlib.pyplot as plt

    ramp = np.tile(np.linspace(0, 4000, 96, dtype=np.float32), (80, 1)).astype(np.uint16)
    image = read_dicom(write_dicom(tmp_path / "a.dcm", ramp, bits_stored=12, window=[(2000, 1500)],
                                   photometric=photometric))
    assert image.is_monochrome1 == (photometric == "MONOCHROME1")
    fig = dicom.plot_windows(image)
    means = {ax.get_title().split("\n")[0]: float(re.search(r"mean shown ([\d.]+)", ax.get_title()).group(1))
             for ax in fig.axes}
    plt.close(fig)
    darker = next(label for label in means if label.startswith("darker"))
    assert means[darker] < means["header VOI"] - 0.05, means
    assert ("−" in darker) == (photometric == "MONOCHROME1")
