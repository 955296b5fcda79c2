"""Evaluation of policies in the real environment and the data-distance analysis."""
