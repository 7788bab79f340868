"""synthdet: tell real photographs from synthetic images (CG renders, GAN and diffusion outputs).

Python API::

    import synthdet
    det = synthdet.load("runs/demo/best.safetensors")
    for result in det.predict(["photo.jpg", "renders/"]):
        print(result.input, result.label, result.prob_synthetic, result.error)
"""

from synthdet.config import Config, load_config
from synthdet.inference.detector import Detector, Prediction, load
from synthdet.pipeline import train
from synthdet.version import __version__

__all__ = ["Config", "Detector", "Prediction", "__version__", "load", "load_config", "train"]
