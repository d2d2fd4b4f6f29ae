"""The shapes demo world: the vocabulary of the pack's small trained demo models and their prompt encoder.

The demo models (``devkit/shapes_training`` trains them) draw 1-3 coloured shapes on a textured background. Their
conditioning is not a text encoder: :mod:`.prompt` maps a prompt in the demo's small grammar to fixed,
seeded vectors, so no encoder weights exist to train, ship or download.
"""
