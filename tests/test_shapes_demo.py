"""The shapes demo kit: the procedural dataset, the prompt grammar and encoder, the demo prompt node, the committed
trained models (through the stock loaders on a real server, judged by the committed classifier) and the quick mode
of the quality benchmark."""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.shapes_training import scenes
from devkit.shapes_training.training import DEMO_FILES, DEMO_MODELS, EVAL_SEED
from tokenmerge.shapes import prompt

# ------------------------------------------------------------------------------------------- dataset


def test_the_dataset_is_deterministic():
    first, again, other = scenes.sample_scenes(5, 6), scenes.sample_scenes(5, 6), scenes.sample_scenes(6, 6)
    assert first == again
    assert first != other
    images, masks = scenes.render(first)
    images_again, masks_again = scenes.render(again)
    assert torch.equal(images, images_again)
    assert torch.equal(masks, masks_again)
    assert images.shape == (6, 3, 128, 128)
    assert images.min() >= 0
    assert images.max() <= 1


def test_scenes_have_one_to_three_objects_in_distinct_slots_with_masks_and_labels():
    batch = scenes.sample_scenes(11, 40)
    _, masks = scenes.render(batch)
    counts = {len(scene.objects) for scene in batch}
    assert counts == {1, 2, 3}
    for i, scene in enumerate(batch):
        positions = [obj.phrase.position for obj in scene.objects]
        assert len(set(positions)) == len(positions)
        labels = scene.slot_labels()
        assert int((labels > 0).sum()) == len(scene.objects)
        for j, obj in enumerate(scene.objects):
            area = masks[i, j].sum().item()
            radius_px = obj.radius * scenes.SIDE
            assert 0.3 * radius_px**2 < area < 4.5 * radius_px**2  # a shape of about its size
            cy, cx = int(obj.cy * scenes.SIDE), int(obj.cx * scenes.SIDE)
            assert masks[i, j, cy, cx] == 1  # its centre is inside it
        assert masks[i, len(scene.objects) :].sum() == 0


def test_a_prompt_describes_its_scene():
    scene = scenes.sample_scenes(3, 1)[0]
    parsed = prompt.parse(scene.prompt.text())
    assert parsed == scene.prompt
    assert scene.background in scene.prompt.text()


# -------------------------------------------------------------------------------------------- prompt
def _scene_prompts():
    obj = st.builds(
        prompt.ObjectPhrase,
        st.sampled_from(list(prompt.COLOURS)),
        st.sampled_from(prompt.SHAPES),
        st.sampled_from(prompt.POSITIONS),
        st.one_of(st.none(), st.sampled_from(prompt.SIZES)),
    )
    return st.builds(
        prompt.ScenePrompt,
        st.lists(obj, max_size=3).map(tuple),
        st.one_of(st.none(), st.sampled_from(prompt.BACKGROUNDS)),
    )


@settings(max_examples=60, deadline=None)
@given(_scene_prompts())
def test_prompt_text_round_trips_and_encodes_to_fixed_shapes(scene_prompt):
    assert prompt.parse(scene_prompt.text()) == scene_prompt
    context, pooled = prompt.encode(scene_prompt)
    assert context.shape == (prompt.CONTEXT_TOKENS, prompt.CONTEXT_DIM)
    assert pooled.shape == (prompt.CONTEXT_DIM,)
    used = int((context.abs().sum(1) > 0).sum())
    assert used == len(scene_prompt.objects) + (scene_prompt.background is not None)  # a token per object
    assert torch.equal(prompt.encode(scene_prompt)[0], context)  # fixed vectors, no randomness per call


def test_the_empty_prompt_is_all_zero_and_words_matter():
    empty, pooled = prompt.encode(prompt.parse("  "))
    assert not empty.any()
    assert not pooled.any()
    red = prompt.encode(prompt.parse("a red circle at center"))[0]
    blue = prompt.encode(prompt.parse("a blue circle at center"))[0]
    assert not torch.equal(red, blue)
    # One token per object binds its words: the same words bound the other way round give other tokens.
    bound = prompt.encode(prompt.parse("a red circle at center and a blue square at top left"))[0]
    swapped = prompt.encode(prompt.parse("a blue circle at center and a red square at top left"))[0]
    assert not torch.equal(bound[:2], swapped[:2])
    assert torch.equal(bound[0], red[0])  # an object's token does not depend on the other objects
    assert torch.allclose(bound[0].var(), torch.tensor(1.0), atol=0.15)  # unit variance, like one word


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a red blob at top left", "'blob'"),
        ("a red circle at the middle", "'the middle'"),
        ("a red circle", "'a red circle'"),
        ("a red circle at center on a wavy background", "'wavy'"),
        (" and ".join(["a red circle at center"] * 4), "at most 3"),
    ],
)
def test_bad_prompts_are_refused_naming_the_part_and_the_vocabulary(text, names):
    with pytest.raises(ValueError, match=re.escape(names)):
        prompt.parse(text)


def test_the_demo_prompt_node_validates_and_emits_conditioning(pack):
    from tokenmerge.nodes.demo_prompt import TokenMergeDemoPrompt

    message = TokenMergeDemoPrompt.validate_inputs("a red blob at center")
    assert isinstance(message, str)
    assert message.startswith("unknown word 'blob'")  # ComfyUI prefixes the input's name: "text - unknown ..."
    assert "circle" in message  # the vocabulary is listed
    schema_text = TokenMergeDemoPrompt.GET_SCHEMA().inputs[0]
    assert all(
        word in schema_text.placeholder
        for word in (*prompt.COLOURS, *prompt.SHAPES, *prompt.POSITIONS, *prompt.BACKGROUNDS)
    )
    with pytest.raises(ValueError, match=r"^text: unknown word 'blob'"):
        TokenMergeDemoPrompt.execute("a red blob at center")
    assert TokenMergeDemoPrompt.validate_inputs("a small red circle at center") is True
    ((context, extras),) = TokenMergeDemoPrompt.execute("a small red circle at center").result[0]
    assert context.shape == (1, prompt.CONTEXT_TOKENS, 768)  # 3 object tokens and the background token
    assert extras["pooled_output"].shape == (1, 768)


# -------------------------------------------------------------------------------- committed models
def test_committed_demo_models_fit_the_budget():
    files = [DEMO_MODELS / sub / name for sub, names in DEMO_FILES.items() for name in names]
    files.append(DEMO_MODELS / "classifier" / "tokenmerge_shapes_classifier.safetensors")
    total = sum(path.stat().st_size for path in files)
    assert total <= 60e6, f"{total / 1e6:.1f} MB"
    ignore = (DEMO_MODELS.parent / ".comfyignore").read_text().split()
    assert "demo_models/" in ignore  # registry installs do not carry the weights


def test_the_classifier_names_held_out_scenes():
    from devkit.shapes_training import classifier

    assert classifier.accuracy(classifier.load(), count=256) >= 0.95


def test_the_classifier_names_scenes_sent_through_the_demo_vae(pack):
    """The judge of the samples must read what the VAE can show: it was trained on VAE round trips too."""
    from devkit.shapes_training import classifier
    from devkit.shapes_training.latents import load_vae
    from devkit.shapes_training.train_vae import VAE_FILE

    assert classifier.accuracy(classifier.load(), count=128, vae=load_vae(VAE_FILE)) >= 0.85


def _png_to_tensor(data: bytes) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


MODELS = [
    ("tokenmerge_shapes_sd15.safetensors", "tokenmerge_shapes_taesd.safetensors", "EmptyLatentImage", 128),
    ("tokenmerge_shapes_sd3.safetensors", "tokenmerge_shapes_taesd3.safetensors", "EmptySD3LatentImage", 128),
    ("tokenmerge_shapes_sd3_256.safetensors", "tokenmerge_shapes_taesd3.safetensors", "EmptySD3LatentImage", 256),
]


def sample_on_server(
    server, unet: str, vae: str, latent: str, text: str, *, side: int = 128, seed: int = 3
) -> torch.Tensor:
    """Four ``side`` px samples of ``text`` (cfg 3, 20 steps) through the stock loaders, as images [4, 3, H, W]."""
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "TokenMergeDemoPrompt", "inputs": {"text": text}},
        "3": {"class_type": "TokenMergeDemoPrompt", "inputs": {"text": ""}},
        "4": {"class_type": latent, "inputs": {"width": side, "height": side, "batch_size": 4}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": seed,
                "steps": 20,
                "cfg": 3.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "shapes_check"}},
    }
    entry = server.run(prompt)
    return torch.stack([_png_to_tensor(server.view(image)) for image in entry["outputs"]["8"]["images"]])


def _yellowness(images: torch.Tensor) -> float:
    """Mean of (R + G) / 2 - B over the centre slot (the middle 40 x 40 px of 128): high for yellow, low for blue."""
    side = images.shape[-1]
    low, high = side * 44 // 128, side * 84 // 128
    centre = images[:, :, low:high, low:high]
    return ((centre[:, 0] + centre[:, 1]) / 2 - centre[:, 2]).mean().item()


@pytest.mark.server
@pytest.mark.parametrize(("unet", "vae", "latent", "side"), MODELS)
def test_trained_models_load_through_stock_loaders_and_follow_the_prompt(comfy_server, unet, vae, latent, side):
    yellow = sample_on_server(comfy_server, unet, vae, latent, "a large yellow square at center", side=side)
    blue = sample_on_server(comfy_server, unet, vae, latent, "a large blue square at center", side=side)
    assert yellow.shape == (4, 3, side, side)
    # Same seeds, only the colour word differs: the prompted colour appears where the prompt puts the object.
    assert _yellowness(yellow) > _yellowness(blue) + 0.1


@pytest.mark.server
@pytest.mark.parametrize(("unet", "vae", "latent", "side"), MODELS)
def test_trained_models_draw_the_prompted_object_recognisably(comfy_server, unet, vae, latent, side):
    from devkit.shapes_training import classifier
    from devkit.shapes_training.sanity import judged_view

    text = "a large yellow square at center on a plain background"
    images = judged_view(sample_on_server(comfy_server, unet, vae, latent, text, side=side))  # [4, 3, 128, 128]
    with torch.no_grad():
        predicted = classifier.load()(images).argmax(-1)  # [4, 5 slots]
    square_yellow = 1 + scenes.SHAPES.index("square") * len(scenes.COLOURS) + list(scenes.COLOURS).index("yellow")
    centre = scenes.POSITIONS.index("center")
    assert (predicted[:, centre] == square_yellow).sum() >= 3, predicted.tolist()


# ---------------------------------------------------------------------------------- quality benchmark
@pytest.mark.release_independent
def test_quality_benchmark_quick_mode_checks_its_invariants(tmp_path, pack):
    from benchmarks import quality

    results, report = quality.run(quality.parse_args(["--quick", "--out", str(tmp_path)]), log=lambda _: None)
    assert report.exists()
    assert "| unmerged (repeat) | 0.0 |" in report.read_text()
    assert {r["family"] for r in results} == {"sd15", "sd3"}
    for result in results:
        rows = {row["cell"]: row for row in result["rows"]}
        assert math.isinf(rows["unmerged (repeat)"]["psnr"])  # the same seed gives the same image
        assert rows["unmerged (repeat)"]["ssim"] == pytest.approx(1.0)
        assert math.isinf(rows["unmerged (repeat)"]["psnr_in"])  # inside and outside the objects alike
        assert rows["unmerged (repeat)"]["ssim_out"] == pytest.approx(1.0)
        assert rows["unmerged (repeat)"]["feature_distance"] == pytest.approx(0.0, abs=1e-6)
        assert {"tome 0.5", "ibtm 0.5"} <= set(rows)
        merged = rows["ibtm 0.5"]
        assert len(merged["per_image"]["psnr_in"]) == 8  # a value per prompt
        assert 0 < merged["psnr_in_se"] < merged["psnr_in"]
        assert 0 <= merged["feature_distance"] <= 2
        for row in result["rows"]:
            assert row["psnr"] > 0
            assert -1 <= row["ssim"] <= 1
            assert 0 <= row["accuracy"] <= 1
            assert row["frechet"] >= 0
            assert row["speedup"] > 0
            assert row["speedup_q1"] <= row["speedup"] <= row["speedup_q3"]
        assert all(0 <= a <= 1 for a in result["auc_by_step"] if not math.isnan(a))
        assert len(result["auc_by_step"]) == 6
        for figure in result["figures"]:
            assert (tmp_path / figure).stat().st_size > 5000
    assert "sdtm 0.5" in {row["cell"] for row in results[1]["rows"]}
    text = report.read_text()
    assert "| tome 0.5 | " in text.split("Inside and outside the prompted objects")[1]
    assert re.search(r"Paired, ibtm minus spatial ToMe .*\n\n.*\n.*\n\| 0\.5 \| [+-]\d+\.\d\d ± \d+\.\d\d \|", text)


def test_the_full_benchmark_cells_are_valid_configs_with_unique_names(pack):
    from benchmarks import quality

    for family in ("sd15", "sd3"):
        cells = quality.cells_for(family, (0.3, 0.5, 0.7), quick=False)  # builds and validates every config
        names = [cell.name for cell in cells]
        assert len(names) == len(set(names))
        assert {"ibtm 0.5 pool_factor 2.0", "ibtm 0.5 dst_fraction 0.1", "ibtm 0.5 prune_until 0.3"} <= set(names)
        assert ("ibtm 0.5 max_downsample 2" in names) is (family == "sd15")  # the DiT has one grid
        assert ("sdtm 0.4 protect_every 6" in names) is (family == "sd3")  # SDTM's options on the DiT only


def test_quality_benchmark_takes_a_sample_count_per_model_and_refuses_bad_ones(capsys):
    from benchmarks import quality

    assert quality.parse_args(["--samples", "24", "sd3=192"]).samples == {"sd15": 24, "sd3": 192}
    assert quality.parse_args(["--samples", "sd3=5", "--models", "sd3"]).samples == {"sd3": 5}
    assert quality.parse_args([]).samples == {"sd15": 128, "sd3": 128}
    assert quality.parse_args(["--quick", "--samples", "sd3=192"]).samples == {"sd15": 8, "sd3": 8}
    assert quality.parse_args(["--models", "sd3-256", "--samples", "sd3-256=48"]).samples == {"sd3-256": 48}
    day = dt.datetime.now(dt.UTC).date().isoformat()
    assert quality.report_stem(quality.parse_args(["--models", "sd3", "sd15"])).name == f"quality-{day}"
    assert quality.report_stem(quality.parse_args(["--models", "sd3-256"])).name == f"quality-sd3-256-{day}"
    for bad, named in (("sdxl=5", "unknown model 'sdxl'"), ("0", "at least 1"), ("sd3=many", "whole count")):
        with pytest.raises(SystemExit):
            quality.parse_args(["--samples", bad])
        assert named in capsys.readouterr().err


def test_eval_scenes_are_held_out_from_training():
    from devkit.shapes_training import latents

    assert latents.scene_seed(10**6) < EVAL_SEED  # training chunk seeds stay far below the evaluation seed


def test_the_sanity_rates_count_prompted_objects_by_hand():
    from devkit.shapes_training.sanity import rates

    colours = len(scenes.COLOURS)

    def label(shape: int, colour: int) -> int:
        return 1 + shape * colours + colour

    labels = torch.tensor([[label(0, 0), 0, 0, 0, label(2, 3)], [0, label(1, 5), 0, 0, 0]])
    predicted = torch.tensor(
        [
            [label(0, 0), label(3, 3), 0, 0, label(2, 1)],  # right; wrong colour (shape right)
            [0, 0, label(0, 0), 0, 0],
        ]
    )  # the prompted object missing: wrong in every rate
    # 3 prompted objects: both right 1, colour right 1, shape right 2; the extra object in an empty slot is not counted
    assert rates(predicted, labels) == pytest.approx({"object": 1 / 3, "colour": 1 / 3, "shape": 2 / 3})


def test_the_dit_position_table_encodes_column_then_row_in_its_two_halves():
    """The demo DiT's position table (ComfyUI's MMDiT keeps it as an untrained buffer): tokens in rows-first
    order, the first half of the channels a function of the column only, the second of the row only."""
    from devkit.shapes_training.train_denoiser import sincos_position_table

    table = sincos_position_table(4, 8)[0].view(4, 4, 8)  # [row, column, channel]
    assert torch.allclose(table[0, 2, :4], table[3, 2, :4])  # same column, other row: first half equal
    assert torch.allclose(table[1, 0, 4:], table[1, 3, 4:])  # same row, other column: second half equal
    # By hand, width 8: frequencies 1 and 1/100; the token at row 1, column 2 is sin/cos of (2, 0.02) | (1, 0.01).
    expected = torch.tensor(
        [
            math.sin(2),
            math.sin(0.02),
            math.cos(2),
            math.cos(0.02),
            math.sin(1),
            math.sin(0.01),
            math.cos(1),
            math.cos(0.01),
        ]
    )
    assert torch.allclose(table[1, 2], expected, atol=1e-6)
    assert len({tuple(row.tolist()) for row in table.view(16, 8)}) == 16  # every token has its own code


def test_a_fresh_clone_continues_training_from_the_committed_export(tmp_path, monkeypatch):
    """Checkpoints stay out of git, so a new chunk starts from the export the log records, with a fresh optimiser
    whose warm-up counts from there."""
    from devkit.shapes_training import training

    monkeypatch.setattr(training, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(training, "CHECKPOINTS", tmp_path / "checkpoints")
    net = torch.nn.Linear(2, 2)
    run = training.Run("toy", {"net": net}, torch.optim.AdamW(net.parameters()))
    assert not run.resumed
    with pytest.raises(FileNotFoundError, match="no export"):
        run.last_export()
    run.log_path.write_text(
        "[toy] step 40 loss 0.1 wall 3.0 min\n[toy] step 50 loss 0.1 wall 4.5 min\n"
        "[toy] exported the EMA weights of step 50 to toy.safetensors (1.0 MB)\n"
        "[toy] step 60 loss 0.1 wall 6.0 min\n"
    )  # a later chunk that was never exported
    assert run.last_export() == (50, 270.0)
    run.start_from(*run.last_export(), source="toy.safetensors")
    assert (run.step, run.optimiser_from, run.resumed) == (50, 50, True)
    assert 270.0 <= run.wall() < 280.0
    run.save()
    resumed = training.Run("toy", {"net": torch.nn.Linear(2, 2)}, torch.optim.AdamW(net.parameters()))
    assert (resumed.step, resumed.optimiser_from) == (50, 50)
    # The VAE's export line has its own wording; it is found too.
    run.log("exported at step 70: raw encoder mean 0.0 std 1.0; vae_scale 0.2 (4ch), 1.7 (16ch)")
    assert run.last_export()[0] == 70
    # An export that was not kept (the file went back to an earlier step in git) is followed by a line naming the
    # step the file holds again; a fresh clone starts there, at that step's wall time.
    run.log("restored the committed file to the EMA weights of step 50 (git checkout: the step-70 export was not kept)")
    assert run.last_export() == (50, 270.0)


def test_the_vae_decoder_goes_on_training_from_the_committed_file_with_the_encoder_kept(tmp_path, monkeypatch, pack):
    """``train_vae.py --decoder-only --from-export``: a fresh clone improves the committed decoder without moving the
    latent space the denoisers were trained in."""
    import safetensors.torch

    from devkit.shapes_training import train_vae, training

    monkeypatch.setattr(training, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(training, "CHECKPOINTS", tmp_path / "checkpoints")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "vae.log").write_text(
        "[vae] step 10 loss 0.3 wall 1.0 min\n[vae] exported at step 10: "
        "raw encoder mean 0.0 std 1.0; vae_scale 0.2 (4ch), 1.7 (16ch)\n"
    )
    rendered, render = [], train_vae.scenes.render
    monkeypatch.setattr(
        train_vae.scenes, "render", lambda batch, side=128: rendered.append(side) or render(batch, side)
    )
    # Steps 10 and 11 take their scenes in turn from each side (step 10 at 128 px, 11 at 256 px).
    train_vae.train(steps=12, batch=2, lr=1e-3, decoder_only=True, from_export=True, sides=(128, 256))
    assert rendered == [128, 256]
    committed = safetensors.torch.load_file(str(train_vae.VAE_FILE))
    trained = torch.load(tmp_path / "checkpoints" / "vae.pt", weights_only=True)
    assert trained["step"] == 12
    weights = trained["vae"]
    encoder = [k for k in weights if k.startswith("taesd_encoder.")]
    decoder = [k for k in weights if k.startswith("taesd_decoder.")]
    assert all(torch.equal(weights[k], committed[k].float()) for k in encoder)
    assert not all(torch.equal(weights[k], committed[k].float()) for k in decoder)
    # The export of a decoder-only run keeps the committed scale and shift bit for bit (every cached latent and
    # denoiser was made with them); it writes into copies here, not the committed files.
    committed3 = safetensors.torch.load_file(str(train_vae.VAE3_FILE))
    for name in ("VAE_FILE", "VAE3_FILE"):
        copy = tmp_path / getattr(train_vae, name).name
        shutil.copy(getattr(train_vae, name), copy)
        monkeypatch.setattr(train_vae, name, copy)
    train_vae.export()
    exported = safetensors.torch.load_file(str(train_vae.VAE_FILE))
    exported3 = safetensors.torch.load_file(str(train_vae.VAE3_FILE))
    for key in train_vae.AFFINE:
        assert torch.equal(exported[key], committed[key])
        assert torch.equal(exported3[key], committed3[key])
    assert not torch.equal(exported["taesd_decoder.1.weight"], committed["taesd_decoder.1.weight"])
    # An encoder that moved does not keep them.
    moved = {k: v.float() for k, v in exported.items()}
    moved["taesd_encoder.0.weight"] = moved["taesd_encoder.0.weight"] + 0.01
    assert train_vae.committed_affine(moved) is None


def test_fp8_aware_training_takes_the_gradient_at_the_rounded_weights_and_steps_the_exact_ones():
    """``train_denoiser.py --fp8-aware``: inside the context the layer computes with the weight its fp8 file will hold;
    the optimiser then moves the exact weight. By hand: 0.3 lies between the e4m3 values 0.28125 and 0.3125 and
    rounds to 0.3125; the bias (1-D) stays fp16-stored, so it is not rounded."""
    from devkit.shapes_training.train_denoiser import fp8_rounded_weights

    layer = torch.nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(0.3)
        layer.bias.fill_(0.3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.tensor([[2.0]])
    with fp8_rounded_weights(layer):
        y = layer(x)
        assert y.item() == pytest.approx(0.3125 * 2 + 0.3)
        (y * y).sum().backward()  # d/dw = 2y * x at the rounded weight
    assert layer.weight.item() == pytest.approx(0.3)  # the exact weight is back
    optimizer.step()
    assert layer.weight.item() == pytest.approx(0.3 - 0.1 * 2 * (0.3125 * 2 + 0.3) * 2)


def test_bf16_training_computes_in_bfloat16_and_keeps_fp32_weights_and_gradients():
    """``train_denoiser.py --bf16``: under the autocast the layers compute in bfloat16 while the parameters and their
    gradients stay fp32 for the optimiser; without the flag nothing changes."""
    from devkit.shapes_training.train_denoiser import mixed_precision

    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with mixed_precision(bf16=True):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), layer(x), rtol=2e-2, atol=2e-2)  # bf16 keeps 8 bits of mantissa
    y.float().square().sum().backward()
    assert layer.weight.dtype == layer.weight.grad.dtype == torch.float32
    with mixed_precision(bf16=False):
        assert layer(x).dtype == torch.float32


def test_the_unets_timestep_draw_by_hand_and_weighted_timesteps_keep_the_v_loss_in_expectation():
    """``train_denoiser.py --weighted-timesteps``. The plain draw is round(2 sqrt(U)) over three timesteps: index 0
    for sqrt(U) < 1/4, 1 up to 3/4, 2 above, so 1/16, 1/2 and 7/16. Weighted, each index is drawn sqrt(1 + sigma^2)
    times more and weighs sqrt(1 + sigma^2) (not 1 + sigma^2), so draw x weight is the plain draw x (1 + sigma^2):
    the same v-weighted loss in expectation."""
    from devkit.shapes_training.train_denoiser import unet_timestep_probabilities

    sigmas = torch.tensor([0.0, 1.0, 7.0])
    plain = unet_timestep_probabilities(sigmas)
    assert plain.tolist() == pytest.approx([1 / 16, 1 / 2, 7 / 16])
    weighted = unet_timestep_probabilities(sigmas, weighted=True)
    scale = torch.tensor([1.0, 2.0, 50.0]).sqrt()
    assert weighted.tolist() == pytest.approx((plain * scale / (plain * scale).sum()).tolist())
    in_expectation = weighted * scale
    assert (in_expectation / in_expectation.sum()).tolist() == pytest.approx(
        (plain * scale.square() / (plain * scale.square()).sum()).tolist()
    )


def test_weighted_timesteps_draw_more_of_the_batch_at_high_noise(pack, capsys):
    """On the UNet's own schedule, ``--weighted-timesteps`` puts about two thirds of the draws at sigma >= 5 (the
    plain draw about a third), weighs each by sqrt(1 + sigma^2), and needs ``--v-weighting``."""
    from devkit.shapes_training.train_denoiser import build, main, model_inputs, unet_timestep_probabilities

    student = build("sd15")
    sigmas = student.model_sampling.sigmas
    assert unet_timestep_probabilities(sigmas)[sigmas >= 5].sum() == pytest.approx(0.366, abs=0.01)
    assert unet_timestep_probabilities(sigmas, weighted=True)[sigmas >= 5].sum() == pytest.approx(0.674, abs=0.01)
    gen = torch.Generator().manual_seed(0)
    _, timestep, _, weight = model_inputs(
        "sd15", student, torch.randn(400, 4, 2, 2), gen, v_weighting=True, weighted_timesteps=True
    )
    sigma = student.model_sampling.sigma(timestep)
    assert torch.allclose(weight, (1 + sigma.square()).sqrt(), rtol=1e-4)
    assert 0.6 < (sigma >= 5).float().mean() < 0.75
    with pytest.raises(SystemExit):
        main(["sd15", "--weighted-timesteps"])
    assert "add --v-weighting" in capsys.readouterr().err


def test_the_unet_and_256_px_dit_exports_store_their_matrices_in_fp8_and_the_rest_in_fp16():
    """The UNet's and the 256 px DiT's files hold fp8 kernels (the 60 MB budget); the 128 px DiT's stays fp16."""
    from devkit.shapes_training.train_denoiser import export_dtype

    kernel, bias = torch.tensor([[0.3, 1000.0, -1000.0]]), torch.tensor([0.3])
    stored = export_dtype("sd15", kernel)
    assert stored.dtype == torch.float8_e4m3fn
    assert stored.float().tolist() == [[0.3125, 448.0, -448.0]]  # clamped to the largest finite value, never NaN
    assert export_dtype("sd15", bias).dtype == torch.float16
    assert export_dtype("sd3", kernel).dtype == torch.float16
    assert export_dtype("sd3-256", kernel).dtype == torch.float8_e4m3fn
    assert export_dtype("sd3-256", bias).dtype == torch.float16
    assert export_dtype("sd3-256", kernel, buffer=True).dtype == torch.float16  # the position table


class _ZeroVelocity(torch.nn.Module):
    """A stand-in teacher network that predicts v = 0 and records what it was asked with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x, timestep, context=None, y=None):
        self.calls.append((timestep, context, y))
        return torch.zeros_like(x)


def test_the_dit_teacher_maps_the_unets_noisy_latent_onto_rectified_flow_and_back(pack):
    """``train_denoiser.py sd15 --teacher``. The UNet's noisy latent x0 + sigma eps is, on the DiT's first four
    channels, x0' + k sigma eps (x0' = k x0 + b), which rectified flow sees at time s = k sigma / (1 + k sigma) after
    dividing by 1 + k sigma. A teacher predicting v = 0 returns its input as the clean estimate, so by hand the
    estimate is ((k noisy + b) / (1 + k sigma) - b) / k, and the eps target (noisy - estimate) / sigma from
    sigma = 1 on; below it the true noise stays."""
    from devkit.shapes_training.teacher import MIN_SIGMA, DitTeacher
    from devkit.shapes_training.train_denoiser import build, model_inputs

    student = build("sd15")
    teacher = DitTeacher(student, build("sd3"))
    assert teacher.scale == pytest.approx(1.0, abs=1e-4)  # the two VAE files' scales put both spaces on one scale
    teacher.net = _ZeroVelocity()
    gen = torch.Generator().manual_seed(0)
    sigma = torch.tensor([0.5, MIN_SIGMA, 4.0])
    noise = torch.randn(3, 4, 2, 2, generator=gen)
    noisy = torch.randn(3, 4, 2, 2, generator=gen) + sigma.view(-1, 1, 1, 1) * noise
    context, pooled = prompt.encode_batch(
        [
            prompt.parse(text)
            for text in ("a red circle at center", "a blue square at top left", "a green triangle at center")
        ]
    )
    target = teacher.eps_target(noisy, sigma, noise, context, pooled, gen)
    k, b, level = teacher.scale, teacher.offset, teacher.scale * sigma[1:].view(-1, 1, 1, 1)
    estimate = ((k * noisy[1:] + b) / (1 + level) - b) / k
    assert torch.equal(target[0], noise[0])
    assert torch.allclose(target[1:], (noisy[1:] - estimate) / sigma[1:].view(-1, 1, 1, 1), atol=1e-5)
    timestep, asked_context, asked_pooled = teacher.net.calls[0]
    assert torch.allclose(timestep, 1000 * level.flatten() / (1 + level.flatten()))
    assert torch.equal(asked_context, context[1:])  # each taught sample under its own prompt
    assert torch.equal(asked_pooled, pooled[1:])
    # --v-weighting: each sample weighs 1 + sigma^2.
    _, timestep, _, weight = model_inputs("sd15", student, torch.randn(5, 4, 2, 2), gen, v_weighting=True)
    assert torch.allclose(weight, 1 + student.model_sampling.sigma(timestep).square(), rtol=1e-4)


def test_denoise_errors_split_the_error_into_objects_and_layout_by_hand():
    """``denoise_errors.py``: an estimate off by +1 on the top-left 4x4 tile of one channel of two: a mean square of
    1/2 on those 16 of 64 pixels, so 1/8 over the latent and 1/4 over the top half (the objects); pooled 4x4, the
    error is +1 in one of 2 x 2 x 2 cells: 1/8."""
    from devkit.shapes_training.denoise_errors import squared_errors

    clean = torch.zeros(1, 2, 8, 8)
    estimate = clean.clone()
    estimate[0, 0, :4, :4] = 1.0
    objects = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    objects[0, 0, :4, :] = True  # the top half
    errors = squared_errors(estimate, clean, objects)
    assert errors == pytest.approx({"all": 1 / 8, "objects": 1 / 4, "layout": 1 / 8})


def test_denoise_errors_of_the_committed_models_fall_with_the_noise(pack):
    """Both trained denoisers estimate the clean latent of held-out scenes better at low noise than at high noise,
    and at sigma 0.1 far better than the dataset's spread (about 0.6)."""
    import safetensors.torch

    from devkit.shapes_training.denoise_errors import denoise_errors
    from devkit.shapes_training.train_denoiser import UNET_FILE

    rows = denoise_errors(safetensors.torch.load_file(str(UNET_FILE)), samples=4, seed=3_000_001)
    assert [row["sigma"] for row in rows] == sorted((row["sigma"] for row in rows), reverse=True)
    for model in ("unet", "dit"):
        errors = [row[model]["all"] for row in rows]
        assert all(0 < e < 2 for e in errors)
        assert errors[-1] < errors[0] / 10
        assert errors[-1] < 0.05


# ------------------------------------------------------------------------------------------ the 256 px DiT
def test_256_px_scenes_draw_the_same_objects_twice_as_large_at_the_same_places():
    """``scenes.render(..., 256)``: a scene's geometry is in fractions of its side, so each object of a 256 px render
    covers four times the pixels of its 128 px render (twice the size each way), centred at the same fraction of the
    side; slots and labels do not depend on the side."""
    batch = scenes.sample_scenes(11, 12)
    _, small = scenes.render(batch)
    images, large = scenes.render(batch, 256)
    assert images.shape == (12, 3, 256, 256)
    assert large.shape == (12, scenes.MAX_OBJECTS, 256, 256)

    def centre(mask: torch.Tensor) -> torch.Tensor:
        """The centre of mass (x, y) of ``mask`` [side, side], in fractions of the side."""
        coords = (torch.arange(mask.shape[-1]) + 0.5) / mask.shape[-1]
        return torch.stack([(mask.sum(0) * coords).sum(), (mask.sum(1) * coords).sum()]) / mask.sum()

    for i, scene in enumerate(batch):
        for j in range(len(scene.objects)):
            assert large[i, j].sum().item() == pytest.approx(4 * small[i, j].sum().item(), rel=0.03)
            # The same centre, within half a pixel of the 128 px render.
            assert torch.allclose(centre(large[i, j]), centre(small[i, j]), atol=0.5 / 128)
        assert large[i, len(scene.objects) :].sum() == 0


def test_the_sanity_check_judges_256_px_samples_downscaled_to_what_the_classifier_knows():
    """``sanity.py --side 256`` area-downscales its samples to 128 px before the classifier (trained on 128 px
    renders) names them: on 256 px renders of held-out scenes it names the objects as it does at 128 px."""
    from devkit.shapes_training import classifier
    from devkit.shapes_training.sanity import judged_view, rates

    batch = scenes.sample_scenes(EVAL_SEED, 32)
    images, _ = scenes.render(batch, 256)
    view = judged_view(images)
    assert view.shape == (32, 3, 128, 128)
    small, _ = scenes.render(batch)
    assert torch.allclose(judged_view(small), small, atol=1e-6)  # a 128 px sample is judged as it is
    labels = torch.stack([scene.slot_labels() for scene in batch])
    with torch.no_grad():
        predicted = classifier.load()(view).argmax(-1)  # [32, 5 slots]
    assert rates(predicted, labels)["object"] >= 0.9


def test_side_128_keeps_every_file_name_and_256_gets_its_own():
    """The 128 px models' cache, run (checkpoint and log) and file keep their names; the 256 px DiT's differ, so
    neither side's run overwrites the other's."""
    from devkit.shapes_training import latents, train_denoiser

    assert train_denoiser.weights_file("sd3") == train_denoiser.DIT_FILE
    assert train_denoiser.weights_file("sd15") == train_denoiser.UNET_FILE
    assert train_denoiser.weights_file("sd3", 256) == train_denoiser.DIT_FILE.with_name(
        "tokenmerge_shapes_sd3_256.safetensors"
    )
    assert [train_denoiser.run_name("sd3"), train_denoiser.run_name("sd15"), train_denoiser.run_name("sd3", 256)] == [
        "sd3",
        "sd15",
        "sd3-256",
    ]
    assert latents.cache_path().name == "latents.pt"
    assert latents.cache_path(256) == latents.cache_path().with_name("latents-256.pt")
    assert "tokenmerge_shapes_sd3_256.safetensors" in DEMO_FILES["diffusion_models"]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["sd15", "--side", "256"], "--side is for sd3 only"),
        (["sd15", "--side", "256", "--export"], "--side is for sd3 only"),
        (["sd3", "--side", "200"], "a multiple of 16"),
        (["sd3", "--side", "512"], "up to 256"),
    ],
)
def test_train_denoiser_refuses_a_side_its_model_has_no_run_for(argv, named, capsys):
    """The UNet is trained at 128 px only; the DiT's side must be whole tokens (16 px) within its 16x16 position
    table."""
    from devkit.shapes_training.train_denoiser import main

    with pytest.raises(SystemExit):
        main(argv)
    assert named in capsys.readouterr().err


def test_the_sanity_check_refuses_a_side_without_a_model(tmp_path, monkeypatch, capsys, pack):
    """``sanity.py --side 256`` needs the 256 px DiT: refused for the UNet, and for the DiT until it is exported
    (its checkpoint can be judged before, with ``--checkpoint``)."""
    from devkit.shapes_training import sanity, train_denoiser

    monkeypatch.setattr(train_denoiser, "DEMO_MODELS", tmp_path)  # no 256 px export there
    for argv, named in (
        (["sd15", "--side", "256"], "--side is for sd3 only"),
        (["sd3", "--side", "256"], "not exported"),
    ):
        with pytest.raises(SystemExit):
            sanity.main(argv)
        assert named in capsys.readouterr().err


def _small_cache(tmp_path, monkeypatch, side: int) -> dict:
    """A latent cache of 4 training scenes rendered at ``side`` px, in ``tmp_path`` (chunks of 2 scenes instead of 64,
    for speed; the loss weights read the same chunks)."""
    from devkit.shapes_training import latents

    monkeypatch.setattr(latents, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(latents, "CHUNK", 2)
    latents.build_cache(4, side)
    return latents.load_cache(side)


def test_256_px_training_batches_are_32x32_latents_that_the_committed_dit_reads_as_256_tokens(
    tmp_path, monkeypatch, pack
):
    """The 256 px cache holds 32x32 latents, its loss weights mask the objects at 32x32, and the committed 128 px DiT
    runs on them unchanged: 256 image tokens per block, the whole of its 16x16 position table (a 16x16 latent reads
    the centre 8x8 of it), and an output of the input's shape."""
    import safetensors.torch

    from devkit.shapes_training import latents
    from devkit.shapes_training.train_denoiser import DIT_FILE, build, forward, loss_weights, model_inputs
    from devkit.shapes_training.train_vae import VAE3_FILE, VAE_FILE

    cache = _small_cache(tmp_path, monkeypatch, 256)
    assert latents.cache_path(256).exists()
    assert cache["latents"].shape == (4, 4, 32, 32)
    raw = latents.to_sd3_raw(cache["latents"], VAE_FILE, VAE3_FILE)  # [4, 16, 32, 32]
    weights = loss_weights(4, raw.shape[-1], object_weight=2.0)
    assert weights.shape == (4, 1, 32, 32)
    assert (weights.min().item(), weights.max().item()) == (1.0, 3.0)  # the background, inside the objects
    model = build("sd3")
    net = model.diffusion_model
    net.load_state_dict(safetensors.torch.load_file(str(DIT_FILE)))
    x, timestep, target, _ = model_inputs("sd3", model, raw, torch.Generator().manual_seed(0))
    assert x.shape == target.shape == (4, 16, 32, 32)
    tokens = []
    net.x_embedder.register_forward_hook(lambda _module, _inputs, output: tokens.append(tuple(output.shape)))
    context, pooled = prompt.encode_batch([prompt.parse(text) for text in cache["prompts"]])
    with torch.no_grad():
        prediction = forward("sd3", net, x, timestep, context, pooled)
    assert prediction.shape == (4, 16, 32, 32)
    assert tokens == [(4, 256, 192)]
    table = net.pos_embed.view(1, 16, 16, -1)  # [1, row, column, width]
    assert torch.equal(net.cropped_pos_embed((32, 32)), net.pos_embed)
    assert torch.equal(net.cropped_pos_embed((16, 16)), table[:, 4:12, 4:12].reshape(1, 64, -1))


def test_the_256_px_run_fine_tunes_the_committed_128_px_dit_and_exports_under_its_own_names(
    tmp_path, monkeypatch, pack
):
    """``train_denoiser.py sd3 --side 256 --from-export``: with no 256 px export yet, the run ``sd3-256`` starts at step
    0 from the committed 128 px file; ``--export`` writes ``tokenmerge_shapes_sd3_256.safetensors`` (an SD3 model to
    the stock loader), from which a fresh clone's ``--from-export`` continues at the step the log records. Only the
    256 px run's checkpoint and log are written."""
    import comfy.sd
    import safetensors.torch

    from devkit.shapes_training import train_denoiser, training

    _small_cache(tmp_path, monkeypatch, 256)
    files = tmp_path / "demo_models" / "diffusion_models"
    files.mkdir(parents=True)
    (files / train_denoiser.DIT_FILE.name).symlink_to(train_denoiser.DIT_FILE)
    monkeypatch.setattr(train_denoiser, "DEMO_MODELS", tmp_path / "demo_models")
    monkeypatch.setattr(training, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(training, "CHECKPOINTS", tmp_path / "checkpoints")

    train_denoiser.train("sd3", steps=1, batch=2, lr=1e-4, object_weight=2.0, from_export=True, side=256)
    log = tmp_path / "logs" / "sd3-256.log"
    assert "started from tokenmerge_shapes_sd3.safetensors at step 0" in log.read_text()
    checkpoint = torch.load(tmp_path / "checkpoints" / "sd3-256.pt", weights_only=True)
    assert checkpoint["step"] == 1
    committed = safetensors.torch.load_file(str(train_denoiser.DIT_FILE))
    assert torch.equal(checkpoint["net"]["pos_embed"], committed["pos_embed"].float())  # a buffer: never trained

    train_denoiser.export("sd3", 256)
    exported = files / "tokenmerge_shapes_sd3_256.safetensors"
    loaded = comfy.sd.load_diffusion_model(str(exported))
    assert type(loaded.model).__name__ == "SD3"
    assert tuple(loaded.model.diffusion_model.pos_embed.shape) == (1, 256, 192)
    stored = safetensors.torch.load_file(str(exported))
    assert {tensor.dtype for tensor in stored.values()} == {torch.float8_e4m3fn, torch.float16}  # kernels in fp8
    assert torch.equal(stored["pos_embed"], committed["pos_embed"])  # the sin-cos table stays as it was, in fp16

    (tmp_path / "checkpoints" / "sd3-256.pt").unlink()  # a fresh clone: checkpoints are not committed
    train_denoiser.train("sd3", steps=2, batch=2, lr=1e-4, object_weight=2.0, from_export=True, side=256)
    assert "started from tokenmerge_shapes_sd3_256.safetensors at step 1" in log.read_text()
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == ["sd3-256.log"]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["sd3-256.pt"]
