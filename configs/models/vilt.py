"""ViLT-style single stream: text and patch tokens through the same ViT blocks; ITM + MLM."""
model = dict(type='vilt', scale='tiny')
