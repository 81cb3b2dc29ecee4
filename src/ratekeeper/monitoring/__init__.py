"""Monitoring: population drift (PSI) against the reference profile, actual vs expected."""

from ratekeeper.monitoring.ae import AEReport, actual_vs_expected
from ratekeeper.monitoring.drift import Bands, DriftReport, FactorDrift, drift

__all__ = ["AEReport", "Bands", "DriftReport", "FactorDrift", "actual_vs_expected", "drift"]
