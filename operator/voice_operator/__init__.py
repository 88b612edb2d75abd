"""Voice operator."""
