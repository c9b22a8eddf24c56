"""validate: external validation and calibration suite."""
__version__ = "0.1.0"
