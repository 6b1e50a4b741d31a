"""ALBEF-style dual stream, no patch reduction: ITC + ITM (hard negatives) + MLM + PrefixLM.

Scales and method presets live in zoo.build (SCALES, METHODS); any VLPModel argument can be added here
as an override, e.g. ``dict(type='albef', scale='base', image_size=384)``. Build with the copa registry
(``default_scope='copa_bench'``).
"""
model = dict(type='albef', scale='tiny')
