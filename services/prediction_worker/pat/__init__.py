"""PAT, the Pretrained Actigraphy Transformer (Ruan et al., arXiv 2411.15240): a numpy encoder.

Weights: the authors' PAT-S/M/L Keras files (CC BY 4.0, attribution required), read from a configured
path by ``load_encoder``; nothing is downloaded at run time. A classification head is only ever loaded from a
file whose provenance (task, training data, AUC, hash) travels with its scores (``load_head``).
"""

from .encoder import (
    NORMALISATIONS,
    PatEncoder,
    PopulationStats,
    normalisation_label,
    normalise,
    positional_encoding,
)
from .heads import HeadRefused, TrainedHead, load_head
from .weights import PatWeightsError, file_sha256, load_encoder, load_population_stats

__all__ = [
    "NORMALISATIONS",
    "HeadRefused",
    "PatEncoder",
    "PatWeightsError",
    "PopulationStats",
    "TrainedHead",
    "file_sha256",
    "load_encoder",
    "load_head",
    "load_population_stats",
    "normalisation_label",
    "normalise",
    "positional_encoding",
]
