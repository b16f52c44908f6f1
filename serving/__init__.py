"""SynthGuard detection core: CLIP encoders, detector heads, calibration, evaluation.

`serving` never imports `stream` (checked by import-linter in the test run).
"""

__version__ = "0.1.0"
