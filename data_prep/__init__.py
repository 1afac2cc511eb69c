"""Command-line tools over files (thin wrappers around mammoclip_kit.data)."""
