"""Train the demo denoisers on cached VAE latents, with condition dropout so that CFG works.

* ``sd15``: a UNet of ComfyUI's SD1.x family (``openaimodel.UNetModel``). ComfyUI recognises SD1.x by
  320 model channels and a 768-wide context, so the width is fixed; the depth is cut to two resolution
  levels (see :func:`unet_config`), and the file stores its kernels in fp8 to fit the budget
  (``FP8_RUNS``; ``--fp8-aware`` trains with that rounding in the loop). eps prediction on SD1.x's
  discrete schedule; the residual branches start at zero, as SD's own init does. With ``--teacher`` and
  ``--v-weighting`` it learns from the trained DiT at high noise, weighted as v-prediction would be
  (:mod:`devkit.shapes_training.teacher`): 25 times dearer per sample than the DiT on this CPU, it cannot average the
  scenes' own randomness out of an eps target at high noise, where the layout is drawn.
* ``sd3``: a small MMDiT (``mmdit.OpenAISignatureMMDITWrapper``) that ComfyUI sizes from its tensors:
  depth 3 (hidden 192, 3 heads), patch size 2 (64 image tokens on a 16x16 latent; ComfyUI's
  position embedding crop assumes patch 2), 768-wide context and pooled inputs. Rectified flow
  (v = noise - x0) with SD3's shift of 3. ``--side 256`` trains it on 256x256 scenes (a 32x32 latent, 256 image
  tokens per block, where token merging matters) in a run of its own (``sd3-256``, :func:`run_name`), written to a
  file of its own (:func:`weights_file`); ``--from-export`` starts that run from the committed 128 px weights.
  The weights do not depend on the token count, and the position table already spans 256 px: ComfyUI's MMDiT
  (``mmdit.MMDiT.cropped_pos_embed``) crops the centre of its ``pos_embed_max_size`` x ``pos_embed_max_size``
  table (16 x 16, ``POS_EMBED_SIDE``) to the token grid, so a 128 px scene's 8x8 tokens read rows and columns 4-11
  of it and a 256 px scene's 16x16 tokens the whole table (top and left offsets 0), the largest grid it serves.
  The five slots sit at other table positions at 256 px, which the fine-tune has to learn.

Both use ComfyUI's own ``model_sampling`` objects for the noise, input scaling and timestep conversion, so
training matches what the samplers do. Conditioning comes from :mod:`shapes.prompt`; 10 % of the samples
get the empty prompt (condition dropout), and the size and background words are dropped from some
prompts so partial prompts work too. An EMA of the weights (decay 0.995) is what ``--export`` writes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from devkit import comfy_env
from devkit.shapes_training.scenes import SIDE
from devkit.shapes_training.teacher import MIN_SIGMA, DitTeacher
from devkit.shapes_training.training import DEMO_MODELS, Run, denoiser_file_name
from tokenmerge.shapes import prompt as shapes_prompt

UNET_FILE = DEMO_MODELS / "diffusion_models" / "tokenmerge_shapes_sd15.safetensors"
DIT_FILE = DEMO_MODELS / "diffusion_models" / "tokenmerge_shapes_sd3.safetensors"
# The side of the DiT's position table in tokens, and the largest scene it serves: a token is a 2x2 patch of the VAE's
# 1/8 latent, 16 px of the scene (see the module docstring).
POS_EMBED_SIDE = 16
PX_PER_TOKEN = 8 * 2
MAX_DIT_SIDE = PX_PER_TOKEN * POS_EMBED_SIDE
COND_DROPOUT = 0.1
EMA_DECAY = 0.995
# The runs (run_name) whose file stores its matrices and convolution kernels in fp8 (e4m3, unscaled; the biases and
# norms in fp16). ComfyUI loads such a file like any other and computes in its usual dtype. The two-level UNet needs it
# to fit the 60 MB budget (31.9 M parameters are 64 MB in fp16); so does the 256 px DiT beside the 128 px one.
FP8_RUNS = ("sd15", "sd3-256")
FP8_MAX = 448.0  # the largest finite float8_e4m3fn; anything larger would cast to NaN


def unet_config() -> dict:
    """Two resolution levels (16x16 and 8x8), one ResBlock down and two up per level, a middle block without a
    transformer. Transformers (``UNetModel`` takes ``transformer_depth_output`` from its end): at 8x8 in
    ``input_blocks.3`` and ``output_blocks.0``, and at 16x16 (256 tokens) in ``output_blocks.2``.
    A second level is what lets an SD1.x UNet, which has no position embedding, learn where it is (from the zero
    padding of its 8x8 convolutions)."""
    from devkit.standin_files import SD15_LOADABLE

    return {
        **SD15_LOADABLE,
        "channel_mult": [1, 1],
        "num_res_blocks": [1, 1],
        "transformer_depth": [0, 1],
        "transformer_depth_output": [0, 1, 0, 1],
        "transformer_depth_middle": -1,
    }


def dit_config() -> dict:
    from devkit.tiny_models import SD3_TINY

    width = shapes_prompt.CONTEXT_DIM
    return {
        **SD3_TINY,
        "depth": 3,
        "patch_size": 2,
        "adm_in_channels": width,
        "pos_embed_max_size": POS_EMBED_SIDE,
        "num_patches": POS_EMBED_SIDE * POS_EMBED_SIDE,
        "context_embedder_config": {
            "target": "torch.nn.Linear",
            "params": {"in_features": width, "out_features": 64 * 3},
        },
    }


def weights_file(family: str, side: int = SIDE) -> Path:
    """The UNETLoader file of ``family`` trained on ``side`` px scenes: the committed file at 128 px
    (``UNET_FILE``, ``DIT_FILE``), a file of its own at another side."""
    return DEMO_MODELS / "diffusion_models" / denoiser_file_name(family, side)


def run_name(family: str, side: int = SIDE) -> str:
    """The training run (checkpoint and log) of ``family`` on ``side`` px scenes: ``sd3`` at 128 px, ``sd3-256``
    at 256, so that the runs of two sides never share a checkpoint."""
    return family if side == SIDE else f"{family}-{side}"


def export_to_start_from(run: Run, family: str, side: int) -> tuple[Path, int, float]:
    """(file, step, elapsed seconds) that ``--from-export`` continues ``run`` from: ``family``'s export at ``side``,
    at the step its log records; at a side other than 128 px that has no export yet, the committed 128 px file,
    from step 0 of the new run (a fine-tune: the weights fit any token grid the position table covers)."""
    path = weights_file(family, side)
    if side != SIDE and not path.exists():
        return weights_file(family), 0, 0.0
    return path, *run.last_export()


def build(family: str):
    """The ComfyUI model (``model_base``) of ``family`` with random weights: diffusion_model + model_sampling."""
    import comfy.supported_models

    from devkit.tiny_models import random_init_

    config_class, unet = (
        (comfy.supported_models.SD15, unet_config()) if family == "sd15" else (comfy.supported_models.SD3, dit_config())
    )
    model_config = config_class(unet)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    random_init_(model.diffusion_model, seed=0, scale=0.5)
    if family == "sd15":
        zero_residual_outputs_(model.diffusion_model)
    if family == "sd3":
        # ComfyUI keeps the MMDiT's position table as a buffer (checkpoints carry it; it is never trained), and the
        # random init leaves it at std 0.02: the blocks could barely tell where a token is. SD3 ships a 2D sin-cos
        # table; so does the demo DiT.
        net = model.diffusion_model
        net.pos_embed.copy_(sincos_position_table(net.pos_embed_max_size, net.pos_embed.shape[-1]))
    return model


def zero_residual_outputs_(unet: torch.nn.Module) -> None:
    """Start every residual branch of the UNet at zero, as SD's own init does (``zero_module``): the last
    convolution of each ResBlock, each transformer's ``proj_out`` and the output convolution. Each block starts as
    its skip path, which trains faster than random residuals."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    for module in unet.modules():
        if isinstance(module, ResBlock):
            torch.nn.init.zeros_(module.out_layers[-1].weight)
            torch.nn.init.zeros_(module.out_layers[-1].bias)
        elif isinstance(module, SpatialTransformer):
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    torch.nn.init.zeros_(unet.out[-1].weight)
    torch.nn.init.zeros_(unet.out[-1].bias)


def sincos_position_table(side: int, width: int) -> torch.Tensor:
    """A 2D sin-cos position table [1, side * side, width] over a side x side token grid, rows first (the layout
    of the MMDiT's ``pos_embed``): the first half of the channels encodes the column, the second the row."""
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter) / quarter)  # [quarter]
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")  # [side, side] each

    def encode(coordinate: torch.Tensor) -> torch.Tensor:
        angles = coordinate.flatten()[:, None] * frequencies[None]  # [side * side, quarter]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # [side * side, width / 2]

    return torch.cat([encode(columns), encode(rows)], dim=-1)[None]  # [1, side * side, width]


def training_prompt(text: str, gen: torch.Generator) -> shapes_prompt.ScenePrompt:
    """The scene's prompt, with the size words (20 %) or the background (30 %) dropped, or empty (10 %)."""
    if torch.rand((), generator=gen) < COND_DROPOUT:
        return shapes_prompt.ScenePrompt()
    parsed = shapes_prompt.parse(text)
    objects = parsed.objects
    if torch.rand((), generator=gen) < 0.2:
        objects = tuple(shapes_prompt.ObjectPhrase(o.colour, o.shape, o.position) for o in objects)
    background = None if torch.rand((), generator=gen) < 0.3 else parsed.background
    return shapes_prompt.ScenePrompt(objects, background)


def unet_timestep_probabilities(sigmas: torch.Tensor, weighted: bool = False) -> torch.Tensor:
    """P(index) [len(sigmas)] of the UNet's training timesteps. Plain: the index round((n - 1) sqrt(U)), U uniform,
    which has density 2t (more high-noise steps). ``weighted``: that times sqrt(1 + sigma^2), renormalised: the
    draw of ``--weighted-timesteps``, which takes half of v-prediction's weight into the sampling."""
    n = len(sigmas)
    edges = ((torch.arange(n + 1, dtype=torch.float64) - 0.5) / (n - 1)).clamp(0, 1)  # index i <- sqrt(U) in these
    probabilities = edges[1:].square() - edges[:-1].square()  # [n]
    if weighted:
        probabilities = probabilities * (1 + sigmas.double().square()).sqrt()
    return (probabilities / probabilities.sum()).float()


def model_inputs(
    family: str,
    model,
    raw: torch.Tensor,
    gen: torch.Generator,
    teacher: DitTeacher | None = None,
    context: torch.Tensor | None = None,
    pooled: torch.Tensor | None = None,
    v_weighting: bool = False,
    weighted_timesteps: bool = False,
):
    """(noisy model input, timestep, target, per-sample loss weight [B]) for a batch of raw latents, through
    ComfyUI's model_sampling. The UNet only: with a ``teacher``, the eps target of the high-noise samples comes from
    it, under ``context``/``pooled``; with ``v_weighting``, a sample's weight is 1 + sigma^2, which turns its eps loss
    into v-prediction's loss: the clean latent's error at high noise, the noise's error at low noise. (An eps loss
    divides the clean latent's error by sigma^2, so at sigma 14 a UNet can be worse than the dataset mean at what it
    draws first, and barely feel it.) ``weighted_timesteps`` (with ``v_weighting``) draws the timesteps in
    proportion to sqrt(1 + sigma^2) more and weighs each sample by sqrt(1 + sigma^2) only: the same loss in
    expectation, with more of the batch at high noise, where nearly all of that loss is."""
    ms = model.model_sampling
    x0 = model.process_latent_in(raw)
    noise = torch.randn(x0.shape, generator=gen)
    batch = x0.shape[0]
    if family == "sd15":
        # Timesteps drawn with density 2t (more high-noise steps): the layout, which the prompt decides, is learned
        # at high noise, and a short training run is weakest there.
        if weighted_timesteps:
            probabilities = unet_timestep_probabilities(ms.sigmas, weighted=True)
            index = torch.multinomial(probabilities, batch, replacement=True, generator=gen)
        else:
            u = torch.rand(batch, generator=gen).sqrt()
            index = (u * (len(ms.sigmas) - 1)).round().long()
        sigma = ms.sigmas[index]
        noisy = ms.noise_scaling(sigma, noise, x0)  # x0 + sigma * noise
        target = noise if teacher is None else teacher.eps_target(noisy, sigma, noise, context, pooled, gen)
        weight = torch.ones(batch)
        if v_weighting:
            weight = (1 + sigma.square()).sqrt() if weighted_timesteps else 1 + sigma.square()
        return ms.calculate_input(sigma, noisy), ms.timestep(sigma), target, weight
    u = torch.sigmoid(torch.randn(batch, generator=gen))  # logit-normal, as SD3 trains
    shift = ms.shift
    sigma = shift * u / (1 + (shift - 1) * u)
    noisy = ms.noise_scaling(sigma, noise, x0)
    return noisy, ms.timestep(sigma), noise - x0, torch.ones(batch)


def forward(family: str, net: torch.nn.Module, x, timestep, context, pooled):
    if family == "sd15":
        return net(x, timestep, context)
    return net(x, timestep, context=context, y=pooled)


def loss_weights(count: int, latent_side: int, object_weight: float) -> torch.Tensor:
    """Per-latent-pixel loss weights [count, 1, latent_side, latent_side] for the cached scenes: 1 on the background,
    1 + ``object_weight`` inside the objects. The backgrounds' textures dominate a plain MSE, yet the objects are
    what the prompt (and the classifier) is about. A scene's geometry is in fractions of its side, so the masks are
    rendered at the latent's side, whatever side the cache's scenes were rendered at (16 for 128 px, 32 for 256)."""
    from devkit.shapes_training import latents as latent_cache
    from devkit.shapes_training import scenes

    masks = []
    for start in range(0, count, latent_cache.CHUNK):
        chunk = scenes.sample_scenes(latent_cache.scene_seed(start), latent_cache.CHUNK)
        _, chunk_masks = scenes.render(chunk, latent_side)
        masks.append(chunk_masks.amax(1, keepdim=True))  # union of the objects [CHUNK, 1, latent_side, latent_side]
    return 1 + object_weight * torch.cat(masks)[:count]


def load_teacher(student, side: int = SIDE) -> DitTeacher:
    """The exported DiT of ``side`` px scenes (``DIT_FILE`` at 128) as the UNet's teacher, or as the DiT that
    ``denoise_errors.py`` compares the UNet with."""
    import safetensors.torch

    dit = build("sd3")
    path = weights_file("sd3", side)
    dit.diffusion_model.load_state_dict(safetensors.torch.load_file(str(path)))  # fp16 into fp32 parameters
    return DitTeacher(student, dit)


def train(
    family: str,
    steps: int,
    batch: int,
    lr: float,
    object_weight: float = 0.0,
    from_export: bool = False,
    ema_decay: float = EMA_DECAY,
    fp8_aware: bool = False,
    taught: bool = False,
    v_weighting: bool = False,
    bf16: bool = False,
    weighted_timesteps: bool = False,
    save_every: int = 50,
    side: int = SIDE,
) -> None:
    """Train ``family`` to ``steps`` in total on the cached latents of ``side`` px scenes (the arguments are the
    command line's flags), resuming its run's checkpoint."""
    from devkit.shapes_training import latents as latent_cache

    model = build(family)
    # ComfyUI 0.33's model_base builds the diffusion model frozen (inference only); 0.3.75 left it trainable.
    net = model.diffusion_model.requires_grad_(requires_grad=True)
    ema = copy.deepcopy(net).requires_grad_(requires_grad=False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    run = Run(run_name(family, side), {"net": net, "ema": ema}, optimizer)
    if from_export and not run.resumed:
        import safetensors.torch

        path, step, elapsed = export_to_start_from(run, family, side)
        exported = safetensors.torch.load_file(str(path))  # the EMA weights, fp16 or fp8
        net.load_state_dict(exported)  # copied into the fp32 parameters
        ema.load_state_dict(exported)
        run.start_from(step, elapsed, source=path.name)
    cache = latent_cache.load_cache(side)
    raw_all = cache["latents"]
    if family == "sd3":
        from devkit.shapes_training.train_vae import VAE3_FILE, VAE_FILE

        raw_all = latent_cache.to_sd3_raw(raw_all, VAE_FILE, VAE3_FILE)
    weights = loss_weights(raw_all.shape[0], raw_all.shape[-1], object_weight)
    teacher = load_teacher(model) if taught else None
    if teacher is not None:
        run.log(f"targets at sigma >= {MIN_SIGMA} from the DiT's clean estimate ({DIT_FILE.name})")
    if v_weighting:
        run.log("sample weights 1 + sigma^2 (v-prediction's loss)")
    if weighted_timesteps:
        run.log("timesteps drawn in proportion to sqrt(1 + sigma^2) more, weights sqrt(1 + sigma^2) (the same loss)")
    if bf16:
        run.log("forward and backward under bfloat16 autocast (fp32 weights, optimiser and loss)")
    gen = torch.Generator().manual_seed(1000 + run.step)
    while run.step < steps:
        index = torch.randint(0, raw_all.shape[0], (batch,), generator=gen)
        prompts = [training_prompt(cache["prompts"][i], gen) for i in index.tolist()]
        context, pooled = shapes_prompt.encode_batch(prompts)
        with mixed_precision(bf16):
            x, timestep, target, sample_weight = model_inputs(
                family, model, raw_all[index], gen, teacher, context, pooled, v_weighting, weighted_timesteps
            )
        run.warm_up_lr(lr)
        w = weights[index] * sample_weight.view(-1, 1, 1, 1)  # [batch, 1, h, w], broadcast over the latent channels
        with fp8_rounded_weights(net) if fp8_aware else contextlib.nullcontext():
            with mixed_precision(bf16):
                prediction = forward(family, net, x, timestep, context, pooled)
            loss = ((prediction.float() - target).pow(2) * w).mean() / w.mean()
            run.backward(loss)
        run.apply_gradients(clip_norm=1.0)
        with torch.no_grad():
            decay = min(ema_decay, (run.step + 1) / (run.step + 10))
            for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        run.advance(loss, steps, log_every=10, save_every=save_every)


def mixed_precision(bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the CPU when ``bf16``: convolutions and matrix products in bf16 (fast on a CPU with
    AVX512-BF16; the UNet's training log has the rates), the weights, the optimiser and the loss stay fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def is_fp8_stored(tensor: torch.Tensor) -> bool:
    """Whether the exported file stores ``tensor`` in fp8: every matrix and kernel (2-D or more), not the
    biases, norms or buffers."""
    return tensor.is_floating_point() and tensor.ndim >= 2


def to_fp8(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


@contextlib.contextmanager
def fp8_rounded_weights(net: torch.nn.Module) -> Iterator[None]:
    """Inside, the weights that the file stores in fp8 hold their fp8-rounded values; on leaving, the exact ones
    come back. Forward and backward run inside, the optimiser step outside: the gradient is taken at the rounded
    weights and applied to the exact ones (the straight-through estimator of quantisation-aware training)."""
    with torch.no_grad():
        exact = [(param, param.detach().clone()) for param in net.parameters() if is_fp8_stored(param)]
        for param, _ in exact:
            param.copy_(to_fp8(param).to(param.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in exact:
                param.copy_(value)


def export_dtype(run: str, tensor: torch.Tensor, buffer: bool = False) -> torch.Tensor:
    """``tensor`` as the file of ``run`` (:func:`run_name`) stores it: fp8 for the matrices of an ``FP8_RUNS`` model,
    fp16 otherwise, and for a ``buffer`` (the DiT's sin-cos position table, never trained nor rounded in training)."""
    if run in FP8_RUNS and not buffer and is_fp8_stored(tensor):
        return to_fp8(tensor).contiguous()
    return tensor.half().contiguous()


def stored_state(run: str, weights: dict[str, torch.Tensor], buffers: set[str]) -> dict[str, torch.Tensor]:
    """The state dict ``weights`` of ``run``'s model as its file stores it; ``buffers`` names the model's buffers."""
    return {name: export_dtype(run, tensor, name in buffers) for name, tensor in weights.items()}


def buffer_names(module: torch.nn.Module) -> set[str]:
    return {name for name, _ in module.named_buffers()}


def checkpoint_weights(family: str, side: int = SIDE) -> tuple[int, dict[str, torch.Tensor]]:
    """(step, EMA weights) of the training checkpoint of ``family`` on ``side`` px scenes, in the dtypes the export
    would write (fp8 kernels for the UNet), so that a figure measured on them is the file's."""
    from devkit.shapes_training.training import CHECKPOINTS

    state = torch.load(CHECKPOINTS / f"{run_name(family, side)}.pt", weights_only=True)
    buffers = buffer_names(build(family).diffusion_model)
    return state["step"], stored_state(run_name(family, side), state["ema"], buffers)


def export(family: str, side: int = SIDE) -> None:
    """Write the EMA weights of the checkpoint of ``family`` on ``side`` px scenes to its UNETLoader file."""
    import safetensors.torch

    model = build(family)
    ema = copy.deepcopy(model.diffusion_model)
    run = Run(run_name(family, side), {"net": model.diffusion_model, "ema": ema}, torch.optim.AdamW(model.parameters()))
    path = weights_file(family, side)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(stored_state(run.name, ema.state_dict(), buffer_names(ema)), path)
    run.log(f"exported the EMA weights of step {run.step} to {path.name} ({path.stat().st_size / 1e6:.1f} MB)")


def side_error(family: str, side: int, export_needed: bool = False) -> str | None:
    """Why ``family`` has no run on ``side`` px scenes, or None if it has: the UNet is trained at 128 px only; the
    DiT's side must be a whole number of tokens within its position table; with ``export_needed``, the run's file
    must exist."""
    if side != SIDE and family != "sd3":
        return f"--side is for sd3 only ({family} is trained on {SIDE} px scenes), got --side {side} for {family}"
    if side != SIDE and (side % PX_PER_TOKEN or not PX_PER_TOKEN <= side <= MAX_DIT_SIDE):
        return (
            f"--side for sd3 must be a multiple of {PX_PER_TOKEN} (px per token) up to {MAX_DIT_SIDE} (its "
            f"{POS_EMBED_SIDE}x{POS_EMBED_SIDE} position table), got {side}"
        )
    if export_needed and not weights_file(family, side).exists():
        return (
            f"{weights_file(family, side).name} is not exported yet: export the run (train_denoiser.py {family} "
            f"--side {side} --export)"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=("sd15", "sd3"))
    parser.add_argument("--steps", type=int, default=1000, help="total optimiser steps (resumes from a checkpoint)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--object-weight", type=float, default=0.0, help="extra loss weight inside the objects (0: plain MSE)"
    )
    parser.add_argument(
        "--from-export",
        action="store_true",
        help="without a checkpoint, continue from the committed weights (step from the log); at a --side with no "
        f"export yet, fine-tune the {SIDE} px file from step 0",
    )
    parser.add_argument(
        "--side",
        type=int,
        default=SIDE,
        help=f"sd3: train on scenes of this side in px (its own latent cache, run and file; default {SIDE})",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=EMA_DECAY,
        help="decay of the exported weight average (a longer one for the last, low-rate chunk)",
    )
    parser.add_argument(
        "--fp8-aware",
        action="store_true",
        help="forward and backward at the fp8-rounded weights the file will hold (for "
        f"the runs {', '.join(FP8_RUNS)}; quantisation-aware training)",
    )
    parser.add_argument(
        "--teacher",
        action="store_true",
        help=f"sd15: at sigma >= {MIN_SIGMA}, learn the noise implied by the trained DiT's clean "
        "estimate instead of the scene's own (distillation; see devkit/shapes_training/teacher.py)",
    )
    parser.add_argument(
        "--v-weighting",
        action="store_true",
        help="sd15: weight each sample's eps loss by 1 + sigma^2 (v-prediction's loss; normalised "
        "over the batch), so that the UNet learns what it draws at high noise",
    )
    parser.add_argument(
        "--weighted-timesteps",
        action="store_true",
        help="sd15, with --v-weighting: draw the timesteps in proportion to sqrt(1 + sigma^2) more "
        "and weigh each sample by sqrt(1 + sigma^2) only: the same loss in expectation, with "
        "more of each batch at high noise",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run the forward and backward passes (the teacher's too) under bfloat16 autocast: "
        "faster on a CPU with AVX512-BF16 (the UNet's log: 49 steps of 16 a minute, 35 of 8 "
        "in fp32)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--export", action="store_true", help="write the UNETLoader file from the checkpoint")
    args = parser.parse_args(argv)
    error = side_error(args.family, args.side)
    if error is not None:
        parser.error(error)
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy_env.bootstrap_comfyui()
    if args.export:
        export(args.family, args.side)
    else:
        if not 0.0 <= args.ema_decay < 1.0:
            parser.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
        run = run_name(args.family, args.side)
        if args.fp8_aware and run not in FP8_RUNS:
            parser.error(f"--fp8-aware is for the fp8-stored runs ({', '.join(FP8_RUNS)}), not {run}")
        if args.family != "sd15" and (args.teacher or args.v_weighting):
            parser.error("--teacher and --v-weighting are for sd15 (the DiT is its teacher; it already learns v)")
        if args.weighted_timesteps and not args.v_weighting:
            parser.error("--weighted-timesteps moves half of --v-weighting's weight into the draw; add --v-weighting")
        train(
            args.family,
            args.steps,
            args.batch,
            args.lr,
            args.object_weight,
            args.from_export,
            args.ema_decay,
            args.fp8_aware,
            args.teacher,
            args.v_weighting,
            args.bf16,
            args.weighted_timesteps,
            side=args.side,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
