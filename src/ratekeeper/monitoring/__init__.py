"""Monitoring: population drift (PSI) against the reference profile, actual vs expected."""

from ratekeeper.monitoring.drift import Bands, DriftReport, FactorDrift, drift

__all__ = ["Bands", "DriftReport", "FactorDrift", "drift"]
