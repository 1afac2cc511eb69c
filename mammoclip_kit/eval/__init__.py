"""Downstream evaluation: metrics, zero-shot, probes, detection, robustness."""
