"""Random patch selection at COPA's token budget (seeded by torch's global generator)."""
model = dict(type='random', scale='tiny')
