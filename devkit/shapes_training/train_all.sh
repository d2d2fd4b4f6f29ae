#!/usr/bin/env bash
# Retrain every shapes demo model with the recipe of the committed weights, as far as they got (the committed run's
# own history, with its restarts and times, is in devkit/shapes_training/README.md; raise --steps to train further).
# Each step resumes from its checkpoint in .comfyui/shapes_checkpoints/, so an interrupted run can be restarted; delete that folder to start afresh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.comfyui/venv/bin/python
$PY devkit/shapes_training/train_vae.py --steps 1000 --batch 16 --lr 1e-3
$PY devkit/shapes_training/train_vae.py --export
$PY devkit/shapes_training/latents.py --count 4096
# One at a time: side by side on 2 cores they slow each other down far more than 2x. The decoder-only steps keep
# the encoder, and so the cached latents, fixed.
$PY devkit/shapes_training/train_vae.py --steps 1100 --batch 16 --lr 5e-4 --decoder-only
$PY devkit/shapes_training/train_vae.py --steps 1900 --batch 16 --lr 3e-4 --decoder-only
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 4000 --batch 32 --lr 5e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 7000 --batch 32 --lr 3e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 11000 --batch 32 --lr 2e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 14000 --batch 32 --lr 1.5e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 17000 --batch 32 --lr 1e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 20000 --batch 32 --lr 6e-5 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd3 --steps 23000 --batch 32 --lr 3e-5 --threads 2 --object-weight 2 --ema-decay 0.999
$PY devkit/shapes_training/train_denoiser.py sd3 --export
# The two-level UNet. From step 3250 on it learns from the exported DiT (--teacher) with v-prediction's weighting;
# the last steps of the first two chunks see the fp8 rounding its file stores (it proved to cost nothing measurable).
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 3000 --batch 8 --lr 4e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 3150 --batch 8 --lr 4e-4 --threads 2 --object-weight 2 --fp8-aware
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 3250 --batch 8 --lr 4e-4 --threads 2 --object-weight 2
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 6000 --batch 8 --lr 4e-4 --threads 2 --object-weight 2 --teacher --v-weighting
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 6700 --batch 8 --lr 2e-4 --threads 2 --object-weight 2 --teacher --v-weighting --fp8-aware
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 10000 --batch 8 --lr 4e-4 --threads 2 --object-weight 2 --teacher --v-weighting
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 13500 --batch 8 --lr 4e-4 --threads 2 --object-weight 2 --teacher --v-weighting
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 17200 --batch 8 --lr 4e-4 --threads 2 --object-weight 2 --teacher --v-weighting
# Batch 16 under bfloat16 autocast (about 2.8 times the samples per minute of batch 8 in fp32); the committed run
# started this chunk from the step-17200 file with a fresh optimiser (--from-export).
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 21000 --batch 16 --lr 2e-4 --threads 2 --object-weight 2 --teacher --v-weighting --bf16
# Two thirds of each batch at sigma >= 5 (the same loss in expectation) and a longer EMA; the committed run started
# this chunk from the step-21000 file with a fresh optimiser (--from-export).
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 26000 --batch 16 --lr 2e-4 --threads 2 --object-weight 2 --teacher --v-weighting --weighted-timesteps --ema-decay 0.999 --bf16
# The committed run resumed this chunk from the step-26000 checkpoint, optimiser and EMA included.
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 32000 --batch 16 --lr 2e-4 --threads 2 --object-weight 2 --teacher --v-weighting --weighted-timesteps --ema-decay 0.999 --bf16
# Half the rate. The committed run started this chunk from the step-32000 file with a fresh optimiser
# (--from-export): its checkpoints had been lost with the machine.
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 36500 --batch 16 --lr 1e-4 --threads 2 --object-weight 2 --teacher --v-weighting --weighted-timesteps --ema-decay 0.999 --bf16
# The committed run resumed this chunk from the step-36500 checkpoint, optimiser and EMA included.
$PY devkit/shapes_training/train_denoiser.py sd15 --steps 41000 --batch 16 --lr 1e-4 --threads 2 --object-weight 2 --teacher --v-weighting --weighted-timesteps --ema-decay 0.999 --bf16
$PY devkit/shapes_training/train_vae.py --export
$PY devkit/shapes_training/train_denoiser.py sd15 --export
# The judge learns the final VAE's softened shapes too: half of each batch is sent through it.
$PY devkit/shapes_training/classifier.py --steps 1200 --through-vae
# The decoder meets 256 px scenes: every other step a 128 px crop of one (the encoder, and so every latent, is kept;
# the export keeps the committed scale and shift).
$PY devkit/shapes_training/train_vae.py --decoder-only --steps 2300 --batch 12 --lr 3e-4 --sides 128 256
$PY devkit/shapes_training/train_vae.py --export
# The 256x256 DiT: its own latent cache, a fine-tune of the exported 128 px DiT on 256 image tokens per block at the
# fp8-rounded weights its file stores, a check of its checkpoint on the second held-out set, and its own file.
$PY devkit/shapes_training/latents.py --count 2048 --side 256
$PY devkit/shapes_training/train_denoiser.py sd3 --side 256 --from-export --steps 4000 --batch 32 --lr 2e-4 --threads 2 --object-weight 2 --fp8-aware --bf16
$PY devkit/shapes_training/sanity.py sd3 --side 256 --checkpoint --seed 2000003 --samples 192 --threads 2
$PY devkit/shapes_training/train_denoiser.py sd3 --side 256 --export
