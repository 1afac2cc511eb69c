"""Vendor ("acquisition") profiles of the synthetic cohort and the DICOM Part 10 writer.

Each :class:`Vendor` fixes what differs between real mammography systems: detector pitch and matrix, bit depth,
photometric interpretation (MONOCHROME1 or 2), the VOI information in the header (LINEAR / SIGMOID window, several
windows, a VOI LUT Sequence), the vendor's tone curve, noise level, periphery equalisation and whether laterality/view
text is burnt into the pixels. Geometry follows the cited detectors (docs/cohort.md §8.1); bit depth,
photometric interpretation and VOI are assigned to exercise preprocessing and are *not* claims about those vendors.

Files are written as "Digital Mammography X-Ray Image Storage - For Presentation" (Modality MG). Depending on the
dataset part and the vendor, pixel data is stored uncompressed, JPEG 2000 lossless (RSNA site 1, like the real RSNA
data), JPEG-LS lossless (pyjpegls; RSNA site 2, GE and Siemens elsewhere) or RLE lossless (pydicom's own encoder, slow:
used only for the few Fuji images of the report part).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: SOP Class UID of Digital Mammography X-Ray Image Storage - For Presentation.
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
#: Prefix of every fake PatientName: tests grep outputs for it to prove that no PHI leaks.
PHI_NAME_PREFIX = "SYNTH^PATIENT^"
#: Fake PatientBirthDate values always use this month and day (0707), another greppable marker.
PHI_BIRTH_MONTHDAY = "0707"

COMPRESSIONS = ("none", "jpeg2000", "jpegls", "rle")


@dataclass(frozen=True)
class Vendor:
    """One acquisition profile (a scanner family) of the synthetic cohort."""

    key: str
    manufacturer: str
    model: str
    spacing_mm: float                 # native detector pitch
    rows: int                         # native matrix (portrait: rows > columns)
    cols: int
    bits_stored: int                  # 12, 14 or 16
    photometric: str                  # MONOCHROME1 or MONOCHROME2
    voi: str                          # "linear", "sigmoid" or "lut" (VOI LUT Sequence + a window)
    n_windows: int = 1                # how many window centre/width pairs the header carries
    gamma: float = 1.0                # tone curve exponent applied to presentation intensity
    contrast: float = 1.0             # slope of a mild S-curve around mid grey (1 = none)
    periphery: float = 0.35           # how much darker the thin breast edge stays (0 = fully equalised)
    noise: float = 0.010              # relative quantum noise at mid grey
    heel: float = 0.0                 # top-to-bottom intensity gradient (anode heel effect)
    blur_px: float = 0.6              # Gaussian MTF blur in native pixels
    range_fraction: float = 0.85      # fraction of the stored range used by tissue
    offset_fraction: float = 0.04     # stored value of air, as a fraction of the range
    marker_probability: float = 0.0   # chance of a burnt-in "L CC"-style marker
    rescale: tuple[float, float] | None = None  # (slope, intercept) written to the header when set
    compression: dict[str, str] = field(default_factory=dict)  # dataset part -> compression name
    rsna_machine_ids: tuple[int, ...] = ()
    rsna_site: int = 1

    @property
    def max_value(self) -> int:
        return (1 << self.bits_stored) - 1

    def shape(self, image_scale: float) -> tuple[int, int]:
        """Rows and columns of this vendor's images at ``image_scale`` × the native matrix (even numbers)."""
        rows = max(96, int(round(self.rows * image_scale / 2)) * 2)
        cols = max(64, int(round(self.cols * image_scale / 2)) * 2)
        return rows, cols

    def spacing(self, image_scale: float) -> float:
        """Pixel pitch in mm at ``image_scale`` (scaled-down real geometry: fewer, larger pixels)."""
        return self.spacing_mm / image_scale


#: The cohort's acquisition profiles, keyed by a short name (``--vendors`` takes these names).
VENDORS: dict[str, Vendor] = {
    "hologic": Vendor(
        key="hologic", manufacturer="HOLOGIC, Inc.", model="Selenia Dimensions", spacing_mm=0.070, rows=4096,
        cols=3328, bits_stored=12, photometric="MONOCHROME2", voi="linear", n_windows=1, gamma=1.0, contrast=1.15,
        periphery=0.25, noise=0.008, blur_px=0.6, marker_probability=0.3,
        compression={"rsna": "jpeg2000"}, rsna_machine_ids=(49, 93, 170), rsna_site=1),
    "ge": Vendor(
        key="ge", manufacturer="GE MEDICAL SYSTEMS", model="Senographe Essential", spacing_mm=0.100, rows=3062,
        cols=2394, bits_stored=14, photometric="MONOCHROME2", voi="sigmoid", n_windows=3, gamma=0.85, contrast=1.0,
        periphery=0.10, noise=0.006, blur_px=0.6, marker_probability=0.0,
        compression={"rsna": "jpeg2000", "vindr": "jpegls", "reports": "jpegls"}, rsna_machine_ids=(21, 29, 216),
        rsna_site=1),
    "siemens": Vendor(
        key="siemens", manufacturer="SIEMENS", model="Mammomat Inspiration", spacing_mm=0.085, rows=3584,
        cols=2816, bits_stored=16, photometric="MONOCHROME2", voi="linear", n_windows=2, gamma=1.25, contrast=0.9,
        periphery=0.45, noise=0.012, heel=0.08, blur_px=0.5, rescale=(1.0, 0.0), marker_probability=0.5,
        compression={"rsna": "jpegls", "reports": "jpegls"}, rsna_machine_ids=(48, 190), rsna_site=2),
    "fuji": Vendor(
        key="fuji", manufacturer="FUJIFILM Corporation", model="AMULET Innovality", spacing_mm=0.050, rows=5928,
        cols=4728, bits_stored=12, photometric="MONOCHROME1", voi="lut", n_windows=1, gamma=1.1, contrast=1.1,
        periphery=0.30, noise=0.018, blur_px=0.7, marker_probability=1.0,
        compression={"rsna": "jpegls", "reports": "rle"}, rsna_machine_ids=(197, 210), rsna_site=2),
}

_TRANSFER_SYNTAX = {
    "none": "1.2.840.10008.1.2.1",        # Explicit VR Little Endian
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "jpegls": "1.2.840.10008.1.2.4.80",    # JPEG-LS Lossless
    "rle": "1.2.840.10008.1.2.5",          # RLE Lossless
}


def resolve_vendors(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate a list of vendor keys (``None`` = all); raises ``ValueError`` naming an unknown key."""
    if not names:
        return list(VENDORS)
    unknown = [name for name in names if name not in VENDORS]
    if unknown:
        raise ValueError(f"unknown vendor(s) {unknown}: expected some of {sorted(VENDORS)}")
    return list(dict.fromkeys(names))


def uid_from(*parts: Any) -> str:
    """A deterministic DICOM UID (2.25 form) derived from ``parts`` (same parts ⇒ same UID)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def to_stored(intensity: np.ndarray, breast: np.ndarray, vendor: Vendor) -> np.ndarray:
    """Map presentation intensity (air 0, dense tissue ~1) to the vendor's stored integers.

    Applies the vendor tone curve, scales into its bit depth and inverts for MONOCHROME1 (where high = dark).
    Air keeps one constant value so that background detection downstream stays simple, as on processed images.
    """
    levels = 4096
    x = np.linspace(0.0, 1.0, levels, dtype=np.float64)
    if vendor.gamma != 1.0:
        x = np.power(x, vendor.gamma)
    if vendor.contrast != 1.0:
        x = np.clip(0.5 + (x - 0.5) * vendor.contrast, 0.0, 1.0)
    maxv = vendor.max_value
    lut = np.clip(np.rint((vendor.offset_fraction + vendor.range_fraction * x) * maxv), 0, maxv).astype(np.uint16)
    index = np.clip(intensity * (levels - 1) + 0.5, 0, levels - 1).astype(np.uint16)
    stored = lut[index]
    stored[~breast] = np.uint16(round(vendor.offset_fraction * maxv))
    if vendor.photometric == "MONOCHROME1":
        stored = (maxv - stored).astype(np.uint16)
    return stored


def burn_marker(stored: np.ndarray, text: str, laterality: str, vendor: Vendor) -> None:
    """Burn ``text`` (e.g. "L CC") into the top corner on the air side (away from the chest wall), in place."""
    import cv2

    rows, cols = stored.shape
    scale = max(0.3, rows / 900.0)
    thickness = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(3, rows // 60)
    x = cols - tw - margin if laterality == "L" else margin
    y = margin + th
    bright = 0 if vendor.photometric == "MONOCHROME1" else vendor.max_value
    canvas = np.zeros(stored.shape, np.uint8)
    cv2.putText(canvas, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_8)
    stored[canvas > 0] = bright


def window_values(stored: np.ndarray, breast: np.ndarray, vendor: Vendor) -> list[tuple[float, float]]:
    """Window centre/width pairs a vendor would write: the first covers the breast's 1–99 % range."""
    values = stored[breast] if breast.any() else stored.ravel()
    lo, hi = np.percentile(values, [1, 99])
    centre, width = float(round((lo + hi) / 2)), float(max(2.0, round(hi - lo)))
    windows = [(centre, width)]
    for k in range(1, vendor.n_windows):
        windows.append((centre, float(round(width * (1.0 + 0.35 * k)))))
    return windows


@dataclass
class DicomMeta:
    """Header facts of one image (identifiers, patient, exam)."""

    patient_id: str
    patient_name: str
    birth_date: str
    age: int
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    laterality: str
    view: str
    accession: str
    thickness_mm: float
    burned_in: bool = False
    instance_number: int = 1


def build_dataset(stored: np.ndarray, meta: DicomMeta, vendor: Vendor, spacing_mm: float,
                  windows: list[tuple[float, float]]):
    """A pydicom ``FileDataset`` (MG, For Presentation) holding ``stored`` uncompressed."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    file_meta.MediaStorageSOPInstanceUID = meta.sop_uid
    file_meta.TransferSyntaxUID = _TRANSFER_SYNTAX["none"]
    file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1999.1"
    file_meta.ImplementationVersionName = "MAMMOCLIPKIT01"
    ds = FileDataset("", {}, file_meta=file_meta, preamble=b"\0" * 128)

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.sop_uid
    ds.StudyDate = meta.study_date
    ds.ContentDate = meta.study_date
    ds.StudyTime = "093000"
    ds.AccessionNumber = meta.accession
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = vendor.manufacturer
    ds.ManufacturerModelName = vendor.model
    ds.InstitutionName = "Synthetic Teaching Hospital"
    ds.StudyDescription = "MAMMOGRAPHY SCREENING BILATERAL"
    ds.SeriesDescription = f"{meta.laterality} {meta.view}"
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.patient_id
    ds.PatientBirthDate = meta.birth_date
    ds.PatientSex = "F"
    ds.PatientAge = f"{meta.age:03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.BodyPartThickness = f"{meta.thickness_mm:.0f}"
    ds.CompressionForce = "110"
    ds.KVP = "29"
    ds.ViewPosition = meta.view
    ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.StudyInstanceUID = meta.study_uid
    ds.SeriesInstanceUID = meta.series_uid
    ds.StudyID = meta.accession[-8:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = meta.instance_number
    # Real MG orientation: rows run to the feet (F) or, on MLO, obliquely; columns away from the chest wall.
    ds.PatientOrientation = ["A", "R" if meta.laterality == "L" else "L"] if meta.view == "CC" else \
        ["A", "FR" if meta.laterality == "L" else "FL"]
    ds.ImageLaterality = meta.laterality
    ds.Laterality = meta.laterality
    view_code = Dataset()
    view_code.CodeValue = "R-10242" if meta.view == "CC" else "R-10226"
    view_code.CodingSchemeDesignator = "SRT"
    view_code.CodeMeaning = "cranio-caudal" if meta.view == "CC" else "medio-lateral oblique"
    ds.ViewCodeSequence = Sequence([view_code])
    ds.BreastImplantPresent = "NO"
    ds.BurnedInAnnotation = "YES" if meta.burned_in else "NO"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = vendor.photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.PresentationLUTShape = "INVERSE" if vendor.photometric == "MONOCHROME1" else "IDENTITY"
    if vendor.rescale is not None:
        ds.RescaleSlope = f"{vendor.rescale[0]:g}"
        ds.RescaleIntercept = f"{vendor.rescale[1]:g}"
        ds.RescaleType = "US"
    ds.WindowCenter = [f"{c:g}" for c, _ in windows] if len(windows) > 1 else f"{windows[0][0]:g}"
    ds.WindowWidth = [f"{w:g}" for _, w in windows] if len(windows) > 1 else f"{windows[0][1]:g}"
    names = ["NORMAL", "HARDER", "SOFTER"][: len(windows)]
    ds.WindowCenterWidthExplanation = names if len(names) > 1 else names[0]
    if vendor.voi == "sigmoid":
        ds.VOILUTFunction = "SIGMOID"
    elif vendor.voi == "linear":
        ds.VOILUTFunction = "LINEAR"
    elif vendor.voi == "lut":
        ds.VOILUTSequence = Sequence([_voi_lut_item(windows[0], vendor)])
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    return ds


def _voi_lut_item(window: tuple[float, float], vendor: Vendor):
    """A sampled VOI LUT (4096 entries, 12-bit output) following a gentle S-curve across ``window``."""
    from pydicom.dataset import Dataset

    centre, width = window
    entries = 4096
    first = int(max(0, centre - width / 2))
    step = max(1.0, width / (entries - 1))
    x = first + np.arange(entries) * step
    y = 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / max(width, 1.0)))
    y = (y - y.min()) / max(float(y.max() - y.min()), 1e-6)
    # The LUT maps stored values; a MONOCHROME1 inversion is applied after the VOI stage, as PS3.3 describes.
    item = Dataset()
    item.LUTDescriptor = [entries, first, 12]
    item.LUTExplanation = "VENDOR S-CURVE"
    item.add_new(0x00283006, "OW", np.rint(y * 4095).astype("<u2").tobytes())  # LUTData
    return item


def write_vendor_dicom(path: Path, stored: np.ndarray, meta: DicomMeta, vendor: Vendor, spacing_mm: float,
                       windows: list[tuple[float, float]], compression: str = "none") -> str:
    """Write one Part 10 file; returns the transfer syntax UID used."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}: expected one of {COMPRESSIONS}")
    ds = build_dataset(stored, meta, vendor, spacing_mm, windows)
    if compression != "none":
        ds.compress(_TRANSFER_SYNTAX[compression], np.ascontiguousarray(stored), generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.file_meta.TransferSyntaxUID)
