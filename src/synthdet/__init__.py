"""synthdet: tell real photographs from synthetic images (CG renders, GAN and diffusion outputs).

Python API::

    import synthdet
    det = synthdet.load("runs/demo/best.safetensors")
    for result in det.predict(["photo.jpg", "renders/"]):
        print(result.input, result.label, result.prob_synthetic, result.error)
"""

from synthdet.config import Config, load_config
from synthdet.inference.detector import Detector, Prediction, load
from synthdet.version import __version__

__all__ = ["Config", "Detector", "Prediction", "__version__", "load", "load_config", "train"]


def __getattr__(name: str):
    """``synthdet.train`` is imported on first use: training and evaluation bring scikit-learn,
    SciPy and matplotlib, about 150 MB that loading a detector to predict does not need."""
    if name == "train":
        from synthdet.pipeline import train

        return train
    raise AttributeError(f"module 'synthdet' has no attribute {name!r}")
