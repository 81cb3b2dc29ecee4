"""Rollouts: a version released beside the Production one (shadow, canary, staged), guarded."""

from ratekeeper.rollouts.plan import Guards, RolloutPlan
from ratekeeper.rollouts.rollout import Rollout

__all__ = ["Guards", "Rollout", "RolloutPlan"]
