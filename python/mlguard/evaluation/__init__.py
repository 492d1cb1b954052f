"""Robustness evaluation: run removal attacks (mlguard.attacks) on a watermarked model and
score every attacked model itself with verify; calibration of the false-positive rate."""

from ..attacks.registry import ATTACKS
from .calibration import BinomialFit, binomial_fit
from .evaluate import accuracy, attacker_key, evaluate
from .registry import parse_cli
from .report import Row, RobustnessReport

__all__ = ["evaluate", "RobustnessReport", "Row", "ATTACKS", "parse_cli", "accuracy",
           "attacker_key", "binomial_fit", "BinomialFit"]
