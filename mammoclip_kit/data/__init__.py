"""Data: synthetic cohort, DICOM decoding and preprocessing, tables, text, transforms and datasets."""
