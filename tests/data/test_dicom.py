"""DICOM reading: decoders, PHI-free meta, modality LUT, VOI window / LUT, MONOCHROME1, error messages."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_windowing
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from mammoclip_kit.data import dicom
from mammoclip_kit.data.dicom import (
    DicomError,
    MissingDecoderError,
    apply_lut_table,
    read_dicom,
    window_image,
    write_dicom,
)

PHI = {"PatientName": "Qwertyson^Zelda", "PatientBirthDate": "19010203", "InstitutionName": "Hidden Valley Clinic",
       "AccessionNumber": "ACC77889911", "ReferringPhysicianName": "Drx^Nobody", "OtherPatientIDs": "OPID-5566"}


def _ramp(rows: int = 80, cols: int = 64, bits: int = 12) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 2 ** bits, (rows, cols)).astype(np.uint8 if bits <= 8 else np.uint16)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", JPEG2000Lossless, JPEGLSLossless, RLELossless])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_every_compression_decodes_exactly(tmp_path, syntax, bits):
    pixels = _ramp(bits=bits)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=bits, transfer_syntax=syntax)
    image = read_dicom(path)
    assert image.meta["transfer_syntax"] == str(syntax)
    assert image.pixels.shape == (80, 64)
    np.testing.assert_array_equal(image.pixels, pixels)


def test_meta_is_phi_free_and_describes_the_image(tmp_path):
    attrs = {**PHI, "Manufacturer": "ACME", "ManufacturerModelName": "M1", "ImageLaterality": "L",
             "ViewPosition": "MLO", "ImagerPixelSpacing": [0.07, 0.07]}
    path = write_dicom(tmp_path / "a.dcm", _ramp(), bits_stored=12, window=[(2048, 4096), (1000, 500)],
                       window_explanation=["NORMAL", "HARDER"], voi_function="SIGMOID", rescale=(1, 0),
                       attributes=attrs)
    image = read_dicom(path)
    meta = image.meta
    assert meta["photometric"] == "MONOCHROME2" and meta["bits_stored"] == 12 and meta["rows"] == 80
    assert meta["window_center"] == [2048.0, 1000.0] and meta["window_width"] == [4096.0, 500.0]
    assert meta["voi_lut_function"] == "SIGMOID" and meta["window_explanation"] == ["NORMAL", "HARDER"]
    assert (meta["manufacturer"], meta["model"], meta["laterality"], meta["view"]) == ("ACME", "M1", "L", "MLO")
    assert meta["pixel_spacing"] == [0.07, 0.07]
    text = json.dumps(meta)
    header_text = str(image.header)
    for value in PHI.values():
        assert value not in text and value not in header_text
    assert "PatientName" not in image.header


def test_modality_rescale_is_applied(tmp_path):
    pixels = np.array([[0, 10], [100, 4095]] * 8, dtype=np.uint16).repeat(8, axis=1)
    image = read_dicom(write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, rescale=(2, -10)))
    np.testing.assert_allclose(image.modality(), pixels * 2.0 - 10.0)


def test_linear_window_hand_computed():
    # c = 100, w = 51: x <= 74.5 -> 0, x > 124.5 -> 1, else (x - 99.5)/50 + 0.5
    x = np.array([0, 74.5, 75, 100, 124.5, 125, 1000])
    expected = np.array([0, 0, (75 - 99.5) / 50 + 0.5, 0.51, 1.0, 1, 1])
    np.testing.assert_allclose(window_image(x, 100, 51, "LINEAR"), expected)
    np.testing.assert_allclose(window_image(x, 100, 50, "LINEAR_EXACT"), np.clip((x - 100) / 50 + 0.5, 0, 1))
    np.testing.assert_allclose(window_image(np.array([100.0]), 100, 50, "SIGMOID"), [0.5])
    with pytest.raises(ValueError, match="VOI LUT Function"):
        window_image(x, 100, 50, "CUBIC")


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom(tmp_path, function):
    pixels = _ramp()
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, window=[(1500, 1200)], voi_function=function)
    ds = pydicom.dcmread(path)
    theirs = apply_windowing(pixels.astype(np.float64), ds)
    ours = read_dicom(path).display()
    np.testing.assert_allclose(ours, theirs / 4095.0, atol=1e-5)


def test_voi_lut_table_hand_computed():
    item = pydicom.Dataset()
    item.LUTDescriptor = [4, 10, 8]
    item.LUTData = [0, 50, 100, 200]
    values = np.array([0, 10, 11, 12, 13, 99])
    np.testing.assert_allclose(apply_lut_table(values, item), [0, 0, 0.25, 0.5, 1, 1])


def test_voi_lut_sequence_is_preferred_over_window(tmp_path):
    pixels = _ramp()
    table = (4095 - np.arange(4096)).astype(np.uint16)  # an inverting LUT: obviously not the window
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, window=[(2048, 4096)], voi_lut=(0, 12, table))
    image = read_dicom(path)
    assert image.voi_source() == "voi_lut"
    np.testing.assert_allclose(image.display(), 1 - pixels / 4095, atol=1e-6)
    assert image.voi_source(prefer_lut=False) == "window"


def test_monochrome1_display_is_inverted(tmp_path):
    pixels = _ramp()
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, bits_stored=12, window=[(2000, 3000)]))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, window=[(2000, 3000)],
                                photometric="MONOCHROME1"))
    np.testing.assert_array_equal(m1.pixels, m2.pixels)  # stored values are untouched
    np.testing.assert_allclose(m1.display(), 1 - m2.display(), atol=1e-6)
    np.testing.assert_allclose(m1.display(invert_monochrome1=False), m2.display(), atol=1e-6)


def test_auto_window_when_header_has_no_voi(tmp_path):
    pixels = np.linspace(0, 4000, 40 * 24).reshape(40, 24).astype(np.uint16)
    image = read_dicom(write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12))
    assert image.voi_source() == "auto"
    out = image.display()
    assert out.min() == 0 and out.max() == 1 and np.all(np.diff(out.ravel()) >= 0)


def test_missing_decoder_names_syntax_and_package(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm", _ramp(), bits_stored=12, transfer_syntax=JPEG2000Lossless)

    class Unavailable:
        is_available = False

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda uid: Unavailable())
    with pytest.raises(MissingDecoderError) as err:
        read_dicom(path)
    message = str(err.value)
    assert "1.2.840.10008.1.2.4.90" in message and "JPEG 2000" in message
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in message and "a.dcm" in message


def test_broken_inputs_give_specific_errors(tmp_path):
    good = write_dicom(tmp_path / "good.dcm", _ramp(), bits_stored=12, attributes=PHI)
    raw = good.read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(raw[:-500])
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(tmp_path / "unknown.dcm")
    (tmp_path / "text.dcm").write_text("this is not a DICOM file")
    cases = {"trunc.dcm": "pixel data", "nopix.dcm": "no pixel data", "unknown.dcm": "1.2.3.4.5.6",
             "text.dcm": "not a DICOM file"}
    for name, expected in cases.items():
        with pytest.raises(DicomError) as err:
            read_dicom(tmp_path / name)
        assert expected in str(err.value) and name in str(err.value)
        for value in PHI.values():
            assert value not in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.dcm"):
        read_dicom(tmp_path / "missing.dcm")


def test_error_messages_are_scrubbed_of_phi():
    assert dicom._scrub("failed near Qwertyson^Zelda 19010203", ["Qwertyson^Zelda", "19010203"]) == \
        "failed near <redacted> <redacted>"


def test_colour_and_write_validation(tmp_path):
    with pytest.raises(ValueError, match="does not fit in 8 bits"):
        write_dicom(tmp_path / "a.dcm", np.full((4, 4), 300, np.uint16), bits_stored=8)
    with pytest.raises(ValueError, match="2-D"):
        write_dicom(tmp_path / "a.dcm", np.zeros((2, 4, 4), np.uint16))


def test_read_header_counts_phi_tags_without_values(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", _ramp(), bits_stored=12, attributes=PHI)
    header = dicom.read_header(path)
    assert header["phi_tags_in_file"] == len(PHI) and header["rows"] == 80
    assert all(value not in json.dumps(header) for value in PHI.values())
    with pytest.raises(DicomError, match="not a DICOM file"):
        (tmp_path / "b.dcm").write_text("hello")
        dicom.read_header(tmp_path / "b.dcm")


def test_window_figures(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    image = read_dicom(write_dicom(tmp_path / "a.dcm", _ramp(), bits_stored=12, window=[(2000, 3000)]))
    fig = dicom.plot_windows(image)
    assert len(fig.axes) == 5 and "c=2000, w=1000" in fig.axes[1].get_title()
    assert dicom.window_explorer(image) is None               # no live kernel here: no widget, a printed hint
    import mammoclip_kit.env as env

    monkeypatch.setattr(env, "widgets_available", lambda: True)  # as in JupyterLab
    viewer = dicom.window_explorer(image)
    assert [w.description for w in viewer.children[:3]] == ["center", "width", "function"]
