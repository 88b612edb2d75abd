"""Chatterbox predictor."""
