"""EViT: keep the patches the image [CLS] attends to most, fuse the rest; COPA's token budget."""
model = dict(type='evit', scale='tiny')
