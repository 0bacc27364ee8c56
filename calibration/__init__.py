"""calibration: see design.md §2 (never imports torch)."""
