"""Loading a local Hugging Face Llama-style checkpoint into :class:`DecoderLM`.

COMP prunes any decoder LM with Llama's layer names; our :class:`DecoderLM` uses them, so a
local checkpoint folder maps onto it name for name (no ``transformers`` import, no download):

- ``config.json`` with ``model_type`` ``llama`` (or ``architectures`` ``LlamaForCausalLM``);
- weights in ``model.safetensors`` or shards listed by ``model.safetensors.index.json``
  (``.bin`` pickles are refused: loading them would unpickle);
- ``tokenizer.json`` read with Hugging Face's ``tokenizers`` package.

Supported (anything else raises :class:`UnsupportedCheckpoint` naming the field): multi-head
attention (``num_key_value_heads == num_attention_heads``; grouped-query attention is not),
SiLU MLP, no attention/MLP biases, plain rotary positions (no ``rope_scaling``), optional tied
embeddings. Weights are loaded as float32. The RMSNorm epsilon of the checkpoint is applied to
the norms (our config does not record it; :func:`set_norm_eps` re-applies it after a reload).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ml.models.transformer import DecoderConfig, DecoderLM

#: Our parameter name -> the Hugging Face one (``{i}`` is the block index).
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


class UnsupportedCheckpoint(ValueError):
    """The folder is not a local Llama-style checkpoint this loader handles."""


def hf_name(ours: str) -> str:
    """The Hugging Face name of one of our parameter names."""
    if ours == "embed.weight":
        return "model.embed_tokens.weight"
    if ours == "norm.weight":
        return "model.norm.weight"
    if ours == "head.weight":
        return "lm_head.weight"
    _, index, rest = ours.split(".", 2)  # blocks.{i}.<rest>
    return f"model.layers.{index}.{_BLOCK_NAMES[rest]}"


def llama_config(folder: Path) -> tuple[DecoderConfig, float]:
    """``(DecoderConfig, rms_norm_eps)`` from ``folder/config.json``, or UnsupportedCheckpoint."""
    path = folder / "config.json"
    if not path.is_file():
        raise UnsupportedCheckpoint(f"{folder} has no config.json: not a Hugging Face checkpoint")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in cfg.get("architectures", []):
        raise UnsupportedCheckpoint(f"model_type {cfg.get('model_type')!r} is not supported; "
                                    "only Llama-style checkpoints (model_type 'llama') are")
    heads = cfg["num_attention_heads"]
    problems = []
    if cfg.get("num_key_value_heads", heads) != heads:
        problems.append(f"grouped-query attention (num_key_value_heads "
                        f"{cfg['num_key_value_heads']} != num_attention_heads {heads})")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {cfg['hidden_act']!r} (only silu)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        problems.append("attention/MLP biases")
    if cfg.get("rope_scaling"):
        problems.append(f"rope_scaling {cfg['rope_scaling']!r}")
    if cfg.get("head_dim", cfg["hidden_size"] // heads) != cfg["hidden_size"] // heads:
        problems.append("head_dim other than hidden_size / num_attention_heads")
    if problems:
        raise UnsupportedCheckpoint(f"{folder}: unsupported " + "; ".join(problems))
    return DecoderConfig(
        vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"], n_heads=heads, d_ff=cfg["intermediate_size"],
        max_seq_len=cfg.get("max_position_embeddings", 2048), positional="rope",
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_base=float(cfg.get("rope_theta", 10000.0)),
    ), float(cfg.get("rms_norm_eps", 1e-6))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    if any(folder.glob("*.bin")):
        raise UnsupportedCheckpoint(f"{folder} holds only PyTorch .bin weights; convert them to "
                                    "safetensors (we never unpickle checkpoints)")
    raise UnsupportedCheckpoint(f"{folder} has no model.safetensors or "
                                "model.safetensors.index.json")


def set_norm_eps(model: DecoderLM, eps: float) -> None:
    """Use ``eps`` in every RMSNorm of ``model``."""
    for module in model.modules():
        if isinstance(module, nn.RMSNorm):
            module.eps = eps


def load_llama(folder: str | Path) -> tuple[DecoderLM, float]:
    """``(model, rms_norm_eps)`` of the local Llama-style checkpoint in ``folder`` (float32)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    cfg, eps = llama_config(folder)
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        tensors.update(load_file(str(file)))
    model = DecoderLM(cfg)
    state = {}
    missing = []
    for name in model.state_dict():
        if cfg.tie_embeddings and name == "head.weight":
            continue
        key = hf_name(name)
        if key not in tensors:
            missing.append(key)
            continue
        state[name] = tensors[key].float()
    if missing:
        raise UnsupportedCheckpoint(f"{folder} lacks tensors {missing[:5]}"
                                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    if cfg.tie_embeddings:
        model.head.weight = model.embed.weight
    set_norm_eps(model, eps)
    return model.eval(), eps


class HFTokenizer:
    """The checkpoint's ``tokenizer.json`` through the ``tokenizers`` package."""

    def __init__(self, folder: str | Path):
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise UnsupportedCheckpoint(f"{folder} has no tokenizer.json")
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self.path = str(path)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self._tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        return {"kind": "hf", "path": self.path}


def save_llama(model: DecoderLM, folder: str | Path, eps: float = 1e-6) -> Path:
    """Write ``model`` (unpruned shapes) as a Llama-style folder (config.json +
    model.safetensors): the inverse of :func:`load_llama`, used to test the name mapping."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "num_hidden_layers": len(model.blocks), "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads, "intermediate_size": cfg.d_ff,
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": eps,
        "rope_theta": cfg.rope_base, "hidden_act": "silu",
        "tie_word_embeddings": cfg.tie_embeddings}), encoding="utf-8")
    state = {hf_name(k): v.contiguous() for k, v in model.state_dict().items()
             if not (cfg.tie_embeddings and k == "head.weight")}
    save_file(state, str(folder / "model.safetensors"))
    return folder
