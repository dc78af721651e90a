"""Accuracy predictors."""
