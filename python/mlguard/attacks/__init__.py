"""Removal attacks a thief would use on a watermarked model; each returns a new model and
never changes its input (what it did is in the result's `attack_info`).

Model-side: fine_tune (FTLL, FTAL, RTLL, RTAL), prune, fine_prune, quantize, cast,
weight_noise, distill, overwrite, label_smoothing, label_noise, weight_shifting,
regularization, adversarial_training, neural_cleanse, neural_laundering, random_occlusion;
model extraction (retrain, smooth_retrain, knockoff, transfer); the free transforms that keep
the function exactly (permute, rescale, add_dummy_units). Query-side (a model behind an API):
jpeg, blur, mean_smoothing, median_smoothing, input_noising, input_quantization,
feature_squeezing, input_flipping, input_reconstruction.
Attacker data is a DataLoader, a Dataset or an (x, y) pair of tensors as the model takes them.
Each attack registers itself with @register_attack (registry.py); list_attacks() names them.
stack(a, b, ...) applies several as one ("rtal:2+distill" on the command line).
"""

from ._data import TrainingDiverged, last_conv, last_linear
from .adversarial_training import adversarial_training
from .distill import distill
from .dummy_units import add_dummy_units
from .extraction import knockoff, retrain, smooth_retrain, transfer
from .fine_tune import MODES, fine_tune
from .input_reconstruction import input_reconstruction
from .input_transforms import (feature_squeezing, input_flipping, input_noising,
                               input_quantization, mean_smoothing, median_smoothing)
from .neural_cleanse import neural_cleanse
from .neural_laundering import neural_laundering
from .noise import weight_noise
from .overwrite import overwrite
from .permute import permute
from .prune import fine_prune, prune
from .quantize import cast, quantize
from .query import blur, jpeg
from .registry import ATTACKS, get_attack, list_attacks, register_attack
from .random_occlusion import random_occlusion
from .regularization import regularization
from .rescale import rescale
from .soft_labels import label_noise, label_smoothing
from .stacked import Stack, stack
from .weight_shifting import weight_shifting

__all__ = ["fine_tune", "MODES", "prune", "fine_prune", "quantize", "cast", "weight_noise",
           "distill", "overwrite", "permute", "rescale", "add_dummy_units", "jpeg", "blur",
           "mean_smoothing", "median_smoothing", "input_noising", "input_quantization",
           "feature_squeezing", "input_flipping", "label_smoothing", "label_noise",
           "weight_shifting", "regularization", "adversarial_training", "Stack", "stack",
           "retrain", "knockoff", "transfer", "neural_cleanse", "neural_laundering",
           "smooth_retrain",
           "input_reconstruction", "random_occlusion",
           "last_linear", "last_conv", "TrainingDiverged",
           "ATTACKS", "register_attack", "get_attack", "list_attacks"]
