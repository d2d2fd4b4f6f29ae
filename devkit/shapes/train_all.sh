#!/usr/bin/env bash
# Retrain every shapes demo model with the recipe of the committed weights (devkit/shapes/README.md has the
# history of the committed run and its times). Each step resumes from its checkpoint in
# .comfyui/shapes_checkpoints/, so an interrupted run can be restarted; delete that folder to start afresh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.comfyui/venv/bin/python
$PY devkit/shapes/classifier.py --steps 600
$PY devkit/shapes/train_vae.py --steps 1000 --batch 16 --lr 1e-3
$PY devkit/shapes/train_vae.py --export
$PY devkit/shapes/latents.py --count 4096
# The denoisers and the decoder (encoder frozen) train side by side, one thread each.
$PY devkit/shapes/train_denoiser.py sd15 --steps 900 --lr 4e-4 --threads 1 &
$PY devkit/shapes/train_denoiser.py sd3 --steps 3000 --batch 32 --lr 4e-4 --threads 1 &
OMP_NUM_THREADS=1 $PY devkit/shapes/train_vae.py --steps 1300 --batch 16 --lr 5e-4 --decoder-only
wait
$PY devkit/shapes/train_vae.py --export
$PY devkit/shapes/train_denoiser.py sd15 --export
$PY devkit/shapes/train_denoiser.py sd3 --export
