"""Data sets: synthetic low-rank problems, MovieLens and ratings files, MNIST IDX files."""

from .mnist import MNIST, load_mnist
from .synthetic import (
    CompletionProblem,
    completion_problem,
    low_rank_matrix,
    orthogonal_classes,
    sample_entries,
)

__all__ = [
    "MNIST", "CompletionProblem", "completion_problem", "load_mnist", "low_rank_matrix",
    "orthogonal_classes", "sample_entries",
]
