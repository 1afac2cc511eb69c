"""DICOM → pixel array + PHI-free metadata: decoders, modality LUT, VOI LUT / window, MONOCHROME1
(docs/reference-notes.md §6.1, §10).

The reference preprocessing reads stored pixel values and min–max scales them, ignoring the header's rescale, window and
VOI LUT (docs/reference-notes.md §6.1). This module reads everything a viewer would use so that
:mod:`mammoclip_kit.data.preprocess` can offer both the paper-exact path and a header-aware ("voi") path:

* :func:`read_dicom` decodes the pixel data through pydicom's pixel-data plugins (JPEG 2000, JPEG-LS, JPEG, RLE, …). When a
  decoder is missing, the error names the transfer syntax and the PyPI package(s) to install.
* :class:`DicomImage` keeps the stored pixels, a PHI-free ``meta`` dict and a header reduced to the pixel-description and
  LUT tags (never patient identifiers).
* :func:`modality_values` applies the modality LUT (Modality LUT Sequence or Rescale Slope/Intercept);
  :func:`window_image` / :func:`apply_lut_table` apply a VOI window (LINEAR, LINEAR_EXACT, SIGMOID, PS3.3 C.11.2.1.2) or
  a VOI LUT table; :meth:`DicomImage.display` chains them with MONOCHROME1 inversion into a [0, 1] image where bright
  means dense.
* :func:`write_dicom` writes small mammography-like DICOMs (tests, benchmarks, the broken-file demo of notebook 02).

Nothing here copies PatientName, birth date or other identifiers into ``meta``; error messages are scrubbed of the
header's identifying values.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DECODER_PACKAGES",
    "PHI_KEYWORDS",
    "DicomError",
    "DicomImage",
    "MissingDecoderError",
    "apply_lut_table",
    "auto_window",
    "decoder_hint",
    "modality_values",
    "plot_windows",
    "read_dicom",
    "read_header",
    "safe_meta",
    "window_explorer",
    "window_image",
    "write_dicom",
]

#: Transfer syntax UID → the PyPI packages whose pydicom plugins decode it (first choice first).
DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow, or python-gdcm)",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg (or pillow, or python-gdcm)",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg, or python-gdcm)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg, or python-gdcm)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg>=2.4",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg>=2.4",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg>=2.4",  # HTJ2K
    "1.2.840.10008.1.2.5": "pydicom (built in; pylibjpeg pylibjpeg-rle is faster)",  # RLE lossless
}

#: Header keywords whose values identify a person or a visit. Never copied anywhere; scrubbed from error messages.
#: (PatientID is not in the list: the kit names files by the folder's de-identified ID, never by the header value.)
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs", "OtherPatientNames",
    "OtherPatientIDsSequence", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "MedicalRecordLocator", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "AccessionNumber", "StationName", "DeviceSerialNumber", "IssuerOfPatientID",
)

# Tags kept in DicomImage.header: what is needed to interpret the pixels, nothing about the person.
_LUT_KEYWORDS: tuple[str, ...] = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "NumberOfFrames", "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence",
    "PresentationLUTShape", "PixelIntensityRelationship", "PixelIntensityRelationshipSign", "Modality",
)

_WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class DicomError(ValueError):
    """A DICOM file that cannot be read or decoded. ``str(error)`` names the file; ``reason`` is the bare cause."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class MissingDecoderError(DicomError):
    """The transfer syntax is known but no installed pydicom plugin decodes it (the message says what to install)."""


@dataclass
class DicomImage:
    """One decoded single-frame grayscale DICOM image.

    Attributes:
        pixels: (H, W) stored values as decoded (no rescale, window or inversion), integer dtype as stored.
        meta: PHI-free description (photometric, bit depth, transfer syntax, windows, rescale, vendor, laterality,
            view, size, pixel spacing, ...); JSON-serialisable.
        header: a pydicom ``Dataset`` holding only pixel-description and LUT tags (used by the LUT functions).
        path: the file it came from (``None`` when read from memory).
    """

    pixels: np.ndarray
    meta: dict[str, Any]
    header: Any = field(default=None, repr=False)
    path: Path | None = None

    @property
    def photometric(self) -> str:
        return str(self.meta.get("photometric", ""))

    @property
    def is_monochrome1(self) -> bool:
        return self.photometric == "MONOCHROME1"

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def modality(self) -> np.ndarray:
        """Stored values through the modality LUT (float32): rescale slope/intercept or the Modality LUT Sequence."""
        return modality_values(self.pixels, self.header)

    def voi_source(self, prefer_lut: bool = True) -> str:
        """Which VOI the header offers: ``"voi_lut"``, ``"window"`` or ``"auto"`` (none: percentiles are used)."""
        if prefer_lut and self.meta.get("n_voi_luts", 0) > 0:
            return "voi_lut"
        if self.meta.get("window_center"):
            return "window"
        return "auto"

    def display(self, window: tuple[float, float] | None = None, *, index: int = 0, function: str | None = None,
                prefer_lut: bool = True, invert_monochrome1: bool = True,
                auto_percentiles: tuple[float, float] = (0.5, 99.5), values: np.ndarray | None = None) -> np.ndarray:
        """The image a viewer shows, float32 in [0, 1], bright = dense (MONOCHROME1 inverted).

        Args:
            window: ``(center, width)`` in modality units overriding the header; ``None`` uses the header's VOI LUT
                (``prefer_lut``) or window ``index``, or a percentile window when the header has none.
            index: which of several header windows / VOI LUTs to use.
            function: ``LINEAR`` | ``LINEAR_EXACT`` | ``SIGMOID``; ``None`` takes the header's VOI LUT Function.
            prefer_lut: use a VOI LUT Sequence before windows when both exist (as pydicom and most viewers do).
            invert_monochrome1: invert MONOCHROME1 images so that high values are always bright.
            auto_percentiles: percentiles of the modality values used as the window when the header has none.
            values: modality values to display instead of the whole image's (e.g. a resized crop of them); the auto
                window is then computed on them too.
        """
        values = self.modality() if values is None else values
        fn = (function or self.meta.get("voi_lut_function") or "LINEAR").upper()
        if window is not None:
            out = window_image(values, window[0], window[1], fn)
        else:
            source = self.voi_source(prefer_lut)
            if source == "voi_lut":
                seq = self.header.VOILUTSequence
                if index >= len(seq):
                    raise DicomError(self.path, f"VOI LUT index {index} out of range: the header has {len(seq)}")
                out = apply_lut_table(values, seq[index])
            elif source == "window":
                centers, widths = self.meta["window_center"], self.meta["window_width"]
                if index >= len(centers):
                    raise DicomError(self.path, f"window index {index} out of range: the header has {len(centers)}")
                out = window_image(values, centers[index], widths[index], fn)
            else:
                center, width = auto_window(values, auto_percentiles)
                out = window_image(values, center, width, "LINEAR_EXACT")
        if invert_monochrome1 and self.is_monochrome1:
            out = 1.0 - out
        return out.astype(np.float32, copy=False)


def decoder_hint(transfer_syntax: str) -> str:
    """The ``pip install`` advice for a transfer syntax (empty when pydicom decodes it natively)."""
    packages = DECODER_PACKAGES.get(str(transfer_syntax))
    return f"pip install {packages}" if packages else ""


#: Faster plugins picked first when installed (measured here on classroom-cohort files).
_PREFERRED_PLUGINS: dict[str, str] = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.5": "pylibjpeg",  # pylibjpeg-rle: 3–4× faster than pydicom's own RLE decoder
}


def _preferred_plugin(ts: Any) -> str:
    plugin = _PREFERRED_PLUGINS.get(str(ts), "")
    if not plugin:
        return ""
    from pydicom.pixels import get_decoder

    return plugin if plugin in get_decoder(ts).available_plugins else ""


def _check_decoder(path: Path, ts: Any) -> None:
    """Raise a :class:`DicomError` naming the transfer syntax (and the package to install) if it cannot be decoded."""
    from pydicom.pixels import get_decoder

    name = getattr(ts, "name", "") or "unknown"
    label = f"{ts} ({name})" if name != str(ts) else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomError(path, f"transfer syntax {label}: pydicom has no pixel-data decoder for it") from None
    if not decoder.is_available:
        hint = decoder_hint(str(ts)) or "a pydicom pixel-data plugin for it"
        raise MissingDecoderError(path, f"transfer syntax {label} needs a decoder that is not installed: {hint}")


def _phi_values(ds: Any) -> list[str]:
    values = []
    for keyword in PHI_KEYWORDS:
        value = ds.get(keyword)
        if value is None or keyword.endswith("Sequence"):
            continue
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        values += [str(v) for v in items if len(str(v)) >= 3]
    return values


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


def _floats(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [float(v) for v in items]


def _strings(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v) for v in items]


def safe_meta(ds: Any) -> dict[str, Any]:
    """A PHI-free, JSON-serialisable description of a DICOM header (whitelisted tags only)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    laterality = ds.get("ImageLaterality") or ds.get("Laterality") or ""
    sop = str(ds.get("SOPClassUID", ""))
    meta: dict[str, Any] = {
        "modality": str(ds.get("Modality", "")),
        "sop_class": sop,
        "presentation_intent": str(ds.get("PresentationIntentType", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1) or 1),
        "number_of_frames": int(ds.get("NumberOfFrames", 1) or 1),
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
        "transfer_syntax": str(ts) if ts is not None else "",
        "transfer_syntax_name": getattr(ts, "name", "") if ts is not None else "",
        "rescale_slope": float(ds.get("RescaleSlope", 1.0) or 1.0),
        "rescale_intercept": float(ds.get("RescaleIntercept", 0.0) or 0.0),
        "rescale_type": str(ds.get("RescaleType", "")),
        "has_modality_lut": "ModalityLUTSequence" in ds,
        "window_center": _floats(ds.get("WindowCenter")),
        "window_width": _floats(ds.get("WindowWidth")),
        "window_explanation": _strings(ds.get("WindowCenterWidthExplanation")),
        "voi_lut_function": str(ds.get("VOILUTFunction", "") or ""),
        "n_voi_luts": len(ds.VOILUTSequence) if "VOILUTSequence" in ds else 0,
        "presentation_lut_shape": str(ds.get("PresentationLUTShape", "")),
        "pixel_intensity_relationship": str(ds.get("PixelIntensityRelationship", "")),
        "manufacturer": str(ds.get("Manufacturer", "")),
        "model": str(ds.get("ManufacturerModelName", "")),
        "laterality": str(laterality),
        "view": str(ds.get("ViewPosition", "")),
        "pixel_spacing": _floats(spacing),
        "burned_in_annotation": str(ds.get("BurnedInAnnotation", "")),
    }
    return meta


def _lut_header(ds: Any) -> Any:
    from pydicom.dataset import Dataset

    header = Dataset()
    for keyword in _LUT_KEYWORDS:
        element = ds.data_element(keyword) if keyword in ds else None
        if element is not None:
            header.add(element)
    return header


def read_dicom(path: str | os.PathLike) -> DicomImage:
    """Read and decode one single-frame grayscale DICOM file.

    Raises:
        FileNotFoundError: the file does not exist.
        MissingDecoderError: the transfer syntax needs a plugin that is not installed (the message says which).
        DicomError: anything else (not DICOM, truncated, no pixel data, colour or multi-frame, unknown transfer syntax);
            the message names the file and the cause, never a patient identifier.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DICOM file")
    try:
        with warnings.catch_warnings():  # truncation warnings become the error below; no duplicate noise
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DicomError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as exc:  # truncated headers surface as EOFError, struct.error, ValueError, ...
        raise DicomError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    try:
        return _decode(path, ds)
    except DicomError as exc:
        raise type(exc)(path, _scrub(exc.reason, _phi_values(ds))) from None
    except Exception as exc:
        reason = f"pixel data could not be decoded ({type(exc).__name__}: {exc})"
        raise DicomError(path, _scrub(reason, _phi_values(ds))) from None


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The PHI-free :func:`safe_meta` of a file without decoding its pixels (fast: for scanning many files).

    Also reports ``has_pixel_data`` and ``phi_tags_in_file``: how many identifying tags the file carries (their
    names are in :data:`PHI_KEYWORDS`; their values are never returned).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise DicomError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as exc:
        raise DicomError(path, f"unreadable DICOM header ({type(exc).__name__})") from None
    meta = safe_meta(ds)
    meta["phi_tags_in_file"] = sum(1 for keyword in PHI_KEYWORDS if keyword in ds)
    return meta


#: Largest declared image (rows × columns) decoded: 2^28 pixels, about 13 times a full-field mammogram (4096 × 5120).
MAX_PIXELS = 1 << 28
_NUMERIC_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                 "NumberOfFrames", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


def check_header(path: Path, ds: Any) -> None:
    """Refuse, before decoding, header values the pipeline would choke on: non-numeric numbers (e.g. a Window Center
    of ``"abc"``) and a declared size too large to be a mammogram (a few bytes of a compressed file could otherwise
    ask for gigabytes). Messages name the tag and value (these tags never hold patient identifiers)."""
    for keyword in _NUMERIC_TAGS:
        if keyword not in ds:
            continue
        try:
            _floats(ds.get(keyword))
        except (TypeError, ValueError):
            raw = ds.get_item(keyword).value  # the raw element: converting it is what failed
            raise DicomError(path, f"header tag {keyword}: value {_raw_text(raw)!r} is not a number") from None
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * columns > MAX_PIXELS:
        raise DicomError(path, f"declared size {rows} × {columns} pixels ({rows * columns:.3g}) is larger than "
                               f"{MAX_PIXELS:.3g}; not a mammogram (a damaged or hostile header) — not decoded")
    if rows < 1 or columns < 1:
        raise DicomError(path, f"declared size {rows} × {columns} pixels; the image is empty")


def _raw_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip()[:40]
    return str(value)[:40]


def _decode(path: Path, ds: Any) -> DicomImage:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raw = path.read_bytes()
        if b"\xe0\x7f\x10\x00" in raw:  # the (7FE0,0010) tag is there but pydicom stopped before its end
            raise DicomError(path, f"truncated file: the Pixel Data element is cut off ({len(raw)} bytes on disk)")
        raise DicomError(path, f"no pixel data: no (7FE0,0010) Pixel Data element in the file's {len(raw)} bytes "
                               "(a header-only object, or a file truncated before its pixels)")
    file_meta = getattr(ds, "file_meta", None)
    ts = getattr(file_meta, "TransferSyntaxUID", None)
    if ts is None:
        raise DicomError(path, "no Transfer Syntax UID (0002,0010) in the file meta information")
    _check_decoder(path, ts)
    check_header(path, ds)
    meta = safe_meta(ds)
    if meta["samples_per_pixel"] != 1:
        raise DicomError(path, f"colour image ({meta['samples_per_pixel']} samples per pixel, "
                               f"{meta['photometric']}): mammograms are grayscale")
    if meta["photometric"] not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(path, f"photometric interpretation {meta['photometric']!r} is not MONOCHROME1/2")
    if meta["number_of_frames"] != 1:
        raise DicomError(path, f"multi-frame image ({meta['number_of_frames']} frames, e.g. tomosynthesis): "
                               "only single-frame mammograms are supported")
    plugin = _preferred_plugin(ts)
    if plugin:
        from pydicom.pixels import pixel_array

        pixels = pixel_array(ds, decoding_plugin=plugin)
    else:
        pixels = ds.pixel_array
    if pixels.ndim != 2:
        raise DicomError(path, f"decoded pixel array has shape {tuple(pixels.shape)}, expected (rows, columns)")
    return DicomImage(pixels=pixels, meta=meta, header=_lut_header(ds), path=path)


def modality_values(pixels: np.ndarray, header: Any = None) -> np.ndarray:
    """Apply the modality LUT: the Modality LUT Sequence if present, else ``x · slope + intercept``.

    Returns float32 (exact for stored values up to 24 bits, and half the memory of float64 on full-size mammograms).
    """
    if header is not None and "ModalityLUTSequence" in header:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(pixels, header), dtype=np.float32)
    slope = float(header.get("RescaleSlope", 1.0) or 1.0) if header is not None else 1.0
    intercept = float(header.get("RescaleIntercept", 0.0) or 0.0) if header is not None else 0.0
    values = pixels.astype(np.float32)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def window_image(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI window of PS3.3 C.11.2.1.2 mapped onto [0, 1] (float32 in → float32 out, else float64).

    ``LINEAR``: ``((x − (c − 0.5)) / (w − 1) + 0.5)`` clipped, with ``x ≤ c − 0.5 − (w − 1)/2`` → 0 and
    ``x > c − 0.5 + (w − 1)/2`` → 1 (w ≤ 1 is a step at ``c − 0.5``). ``LINEAR_EXACT``: ``(x − c)/w + 0.5`` clipped.
    ``SIGMOID``: ``1 / (1 + exp(−4 (x − c)/w))``.
    """
    function = (function or "LINEAR").upper()
    if function not in _WINDOW_FUNCTIONS:
        raise ValueError(f"VOI LUT Function {function!r} is not one of {', '.join(_WINDOW_FUNCTIONS)}")
    x = np.asarray(values)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    center, width = float(center), float(width)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -80, 80)))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:
        return (x > center - 0.5).astype(x.dtype)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def apply_lut_table(values: np.ndarray, item: Any) -> np.ndarray:
    """Apply one VOI LUT Sequence item (LUT Descriptor + LUT Data) and scale its output range onto [0, 1].

    Inputs below the first mapped value take the first entry, inputs past the table take the last (PS3.3 C.11.2.1.1).
    The output is divided by the table's own range, so a 16-bit table that only uses 12 bits still fills [0, 1].
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    n_entries, first = descriptor[0] or 65536, descriptor[1]
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        dtype = np.uint8 if descriptor[2] <= 8 and len(data) == n_entries else np.uint16
        data = np.frombuffer(data, dtype=dtype)
    table = np.asarray(data, dtype=np.float64).ravel()[:n_entries]
    if table.size == 0:
        raise ValueError("VOI LUT Sequence item has an empty LUT Data")
    index = np.clip(np.rint(np.asarray(values, dtype=np.float64)) - first, 0, table.size - 1).astype(np.int64)
    low, high = float(table.min()), float(table.max())
    scale = (high - low) or 1.0
    return (table[index] - low) / scale


def auto_window(values: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """``(center, width)`` spanning two percentiles of ``values`` (for files without any VOI in the header)."""
    step = max(1, int(np.sqrt(values.size / 250_000)))  # percentiles of a ≥250k-pixel grid sample
    low, high = np.percentile(values[::step, ::step], percentiles)
    if high <= low:
        low, high = float(values.min()), float(values.max())
    width = max(float(high - low), 1e-6)
    return float(low) + width / 2.0, width


def write_dicom(path: str | os.PathLike, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, window: Sequence[tuple[float, float]] | None = None,
                window_explanation: Sequence[str] | None = None, voi_function: str | None = None,
                voi_lut: tuple[int, int, np.ndarray] | None = None, rescale: tuple[float, float] | None = None,
                transfer_syntax: str = "1.2.840.10008.1.2.1", attributes: Mapping[str, Any] | None = None) -> Path:
    """Write a single-frame grayscale mammography (MG) DICOM, optionally compressed.

    Args:
        path: output file (parents are created).
        pixels: (H, W) uint8/uint16/int16 stored values.
        photometric: ``MONOCHROME1`` or ``MONOCHROME2``.
        bits_stored: defaults to the dtype's bits; values must fit.
        window: ``[(center, width), ...]`` written as Window Center/Width.
        window_explanation: one text per window.
        voi_function: ``LINEAR`` | ``LINEAR_EXACT`` | ``SIGMOID`` (VOI LUT Function).
        voi_lut: ``(first_mapped, bits, table)`` written as one VOI LUT Sequence item.
        rescale: ``(slope, intercept)``.
        transfer_syntax: UID; compressed syntaxes are encoded with pydicom's encoder plugins (RLE, JPEG-LS, JPEG 2000).
        attributes: any extra header keywords (e.g. ``Manufacturer``, ``ViewPosition``, test PHI).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"write_dicom expects a 2-D array, got shape {tuple(pixels.shape)}")
    if pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"write_dicom expects uint8, uint16 or int16 pixels, got {pixels.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    allocated = pixels.dtype.itemsize * 8
    bits = int(bits_stored or allocated)
    signed = pixels.dtype == np.int16
    if not signed and pixels.size and int(pixels.max()) >= 2 ** bits:
        raise ValueError(f"pixel max {int(pixels.max())} does not fit in {bits} bits stored")

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.2")  # Digital Mammography, For Presentation
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        ds.RescaleType = "US"
    if window:
        ds.WindowCenter = [f"{c:g}" for c, _ in window]
        ds.WindowWidth = [f"{w:g}" for _, w in window]
        if window_explanation:
            ds.WindowCenterWidthExplanation = list(window_explanation)
    if voi_function:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, lut_bits, table = voi_lut
        item = pydicom.Dataset()
        table = np.asarray(table, dtype=np.uint16)
        item.LUTDescriptor = [len(table) % 65536, int(first), int(lut_bits)]
        item.add_new(0x00283006, "US", table.tolist())  # LUT Data
        item.LUTExplanation = "kit test LUT"
        ds.VOILUTSequence = [item]
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if str(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(UID(str(transfer_syntax)), np.ascontiguousarray(pixels), generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Figures (notebook 02)


def _default_windows(image: DicomImage) -> list[tuple[str, tuple[float, float] | None, str | None]]:
    """(label, window or None for the header's VOI, function) triples that show what a window does."""
    values = image.modality()
    center, width = auto_window(values)
    if image.meta.get("window_center"):
        center, width = image.meta["window_center"][0], image.meta["window_width"][0]
    # Raising the center darkens a MONOCHROME2 display; a MONOCHROME1 display is inverted, so there it is lowering it.
    shift = -width / 3 if image.is_monochrome1 else width / 3
    return [
        ("header VOI" if image.voi_source() != "auto" else "auto (percentiles)", None, None),
        ("narrow: width / 3", (center, width / 3), "LINEAR"),
        ("wide: width × 3", (center, width * 3), "LINEAR"),
        (f"darker: center {'−' if shift < 0 else '+'} width / 3", (center + shift, width), "LINEAR"),
        ("SIGMOID, same center/width", (center, width), "SIGMOID"),
    ]


def plot_windows(image: DicomImage, windows: Sequence[tuple[str, tuple[float, float] | None, str | None]] | None = None,
                 size: float = 3.0):
    """A static row of the same image under several VOI windows (the fallback of :func:`window_explorer`).

    ``windows`` are ``(label, (center, width) or None for the header's VOI, function or None)`` triples. Each panel's
    title ends with the mean displayed value (0 = black, 1 = white), so "darker" and "brighter" can be checked.
    """
    import matplotlib.pyplot as plt

    windows = list(windows or _default_windows(image))
    fig, axes = plt.subplots(1, len(windows), figsize=(size * len(windows), size * 1.5), squeeze=False)
    for ax, (label, window, function) in zip(axes[0], windows, strict=True):
        shown = image.display(window, function=function)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
        title = label if window is None else f"{label}\nc={window[0]:.0f}, w={window[1]:.0f}"
        ax.set_title(f"{title}\nmean shown {float(shown.mean()):.3f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def window_explorer(image: DicomImage):
    """An ipywidgets viewer: sliders for window center and width and a VOI LUT Function menu.

    Needs a live kernel (:func:`mammoclip_kit.env.widgets_available`); elsewhere (a batch-executed notebook, a script)
    it prints where to use it and returns None, so pair it with :func:`plot_windows`.
    """
    from mammoclip_kit.env import widgets_available

    if not widgets_available():
        print("window explorer: interactive only in a live Jupyter kernel (open this notebook in JupyterLab)")
        return None
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    values = image.modality()
    low, high = float(values.min()), float(values.max())
    center, width = auto_window(values)
    if image.meta.get("window_center"):
        center, width = image.meta["window_center"][0], image.meta["window_width"][0]
    step = max((high - low) / 500, 1e-3)

    def show(center: float, width: float, function: str) -> None:
        fig, ax = plt.subplots(figsize=(4, 5))
        ax.imshow(image.display((center, width), function=function), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{function}: center {center:.0f}, width {width:.0f}", fontsize=9)
        ax.axis("off")
        plt.show()

    return widgets.interactive(
        show,
        center=widgets.FloatSlider(value=center, min=low, max=high, step=step, description="center"),
        width=widgets.FloatSlider(value=width, min=max(step, 1.0), max=2 * (high - low) + 1, step=step,
                                  description="width"),
        function=widgets.Dropdown(options=list(_WINDOW_FUNCTIONS), value="LINEAR", description="function"))
