"""ONNX export of the whole network (features included) and loading it with onnxruntime.

The exported graph takes the same uint8 batch as :class:`~synthdet.network.DetectorNet`
(B x 3 x h x w, any B) and returns the same logits; the FFT, DCT and residual features
are ONNX operators inside it. The checkpoint's metadata travels in the ONNX file's
``metadata_props`` (key ``synthdet``), so ``synthdet.load("model.onnx")`` needs nothing else.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from synthdet.checkpoint import METADATA_KEY, CheckpointError, CheckpointMeta, parse_metadata
from synthdet.network import load_network
from synthdet.rundir import atomic_path, prepare_folder


def export_onnx(checkpoint: str | Path, out_path: str | Path) -> tuple[Path, float]:
    """Write ``out_path``; returns it with the largest |logit| difference to torch on a test batch."""
    import onnx

    net, meta = load_network(checkpoint)
    out_path = prepare_folder(Path(out_path).parent) / Path(out_path).name
    height, width = meta.crop
    example = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it lists every torchvision op it skips
    with atomic_path(out_path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(tmp), dynamo=True, input_names=["images"],
                              output_names=["logits"], dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                              external_data=False, verbose=False)  # one file, no weights beside it
        exporter_log.setLevel(level)
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, meta.model_dump_json()
        onnx.save(model, str(tmp))
        with torch.inference_mode():
            expected = net(example).numpy()
        difference = float(np.abs(OnnxNet(tmp)(example).numpy() - expected).max())
    return out_path, difference


class OnnxNet:
    """An onnxruntime session that stands in for the torch network inside :class:`Detector`."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"images": np.ascontiguousarray(images.cpu().numpy())})[0]
        return torch.from_numpy(logits)

    def eval(self) -> "OnnxNet":
        return self

    def to(self, device) -> "OnnxNet":
        return self


def load_onnx(path: str | Path) -> tuple[OnnxNet, CheckpointMeta]:
    """The onnxruntime session and the validated metadata of an exported model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    try:
        net = OnnxNet(path)
    except Exception as exc:  # onnxruntime raises its own error types for damaged files
        raise CheckpointError(f"{path}: not a loadable ONNX model ({exc})") from None
    if METADATA_KEY not in net.metadata:
        raise CheckpointError(f"{path}: ONNX model without synthdet metadata (export it with synthdet export)")
    meta = parse_metadata(net.metadata[METADATA_KEY], path)
    inputs, outputs = net.session.get_inputs(), net.session.get_outputs()
    if (len(inputs) != 1 or len(outputs) != 1 or [inputs[0].name, *inputs[0].shape[1:]] != ["images", 3, *meta.crop]
            or outputs[0].shape[-1] != len(meta.class_names)):
        raise CheckpointError(f"{path}: the graph does not match its metadata (input 'images' of 3x{meta.crop[0]}"
                              f"x{meta.crop[1]} crops, {len(meta.class_names)} logits): it has inputs "
                              f"{[(i.name, i.shape) for i in inputs]} and outputs {[o.shape for o in outputs]}")
    return net, meta
