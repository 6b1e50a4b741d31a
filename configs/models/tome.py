"""ToMe bipartite token merging, run to COPA's token budget (ceil(k * N) + 2 tokens per point)."""
model = dict(type='tome', scale='tiny')
