"""The shapes demo kit: a procedural dataset, and the training of the demo VAE, denoisers and classifier.

Development only (not shipped to registry installs). The vocabulary and prompt encoder the shipped
demo node uses live in the pack's ``shapes`` package.
"""
