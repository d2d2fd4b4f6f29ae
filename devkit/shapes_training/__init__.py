"""The shapes demo training kit: a procedural dataset, and the training of the demo VAE, denoisers and classifier.

Development only (not shipped to registry installs). The vocabulary and prompt encoder the shipped demo node uses
live in the pack's ``shapes`` package; the kit imports them from there as ``tokenmerge.shapes`` (the whole pack
where ComfyUI is loaded, else the bare package: ``devkit.comfy_env.import_algorithms``), so there is one module.
"""

from devkit import comfy_env

comfy_env.import_algorithms()
