"""Datasets in real published formats, and the offline benchmark generator that writes them."""
