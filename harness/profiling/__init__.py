"""Efficiency measurement: multiply-add counts (fvcore, attention included) and wall-clock speed."""
