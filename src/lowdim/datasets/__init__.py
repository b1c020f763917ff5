"""Data sets: synthetic low-rank problems, MovieLens and ratings files."""

from .synthetic import CompletionProblem, completion_problem, low_rank_matrix, sample_entries

__all__ = ["CompletionProblem", "completion_problem", "low_rank_matrix", "sample_entries"]
