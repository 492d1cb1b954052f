"""Weight-space watermarks: a T-bit message in chosen weights through keyed projections
(watermark.py: the training regularizer and the training-free embedding), and per-customer
fingerprint keys derived from one master secret (fingerprints.py)."""

from .fingerprints import Fingerprints, Identification
from .watermark import WeightEmbedReport, WeightWatermark, embed_weights

__all__ = ["Fingerprints", "Identification", "WeightEmbedReport", "WeightWatermark",
           "embed_weights"]
