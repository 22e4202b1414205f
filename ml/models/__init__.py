"""Models shared by the methods: split-able CNNs/ResNets, a small decoder-only LM and LoRA.

``build_model(name, num_classes, input_shape)`` builds the image models by name;
:class:`DecoderLM` is the language model (``ml.models.pretrained.pretrained_lm`` gives a trained
one); ``ml.models.lora`` adds adapters; ``ml.models.checkpoints`` saves and loads models.
"""
from __future__ import annotations

from collections.abc import Callable

from ml.models.base import SplittableModel
from ml.models.cnn import CNN, AlexNet
from ml.models.checkpoints import load_checkpoint, save_checkpoint
from ml.models.flops import count_flops, model_bytes, tensor_bytes, training_flops_per_sample
from ml.models.lora import LoRALinear, apply_lora, load_lora_state_dict, lora_state_dict
from ml.models.resnet import ResNet, cifar_resnet, resnet18
from ml.models.transformer import DecoderConfig, DecoderLM

_BUILDERS: dict[str, Callable[[int, tuple[int, int, int]], SplittableModel]] = {
    "cnn": lambda classes, shape: CNN(classes, shape),
    "cnn-small": lambda classes, shape: CNN(classes, shape, channels=(16, 32), hidden=128),
    "alexnet": lambda classes, shape: AlexNet(classes, shape),
    "resnet8": lambda classes, shape: cifar_resnet(8, classes, shape),
    "resnet20": lambda classes, shape: cifar_resnet(20, classes, shape),
    "resnet32": lambda classes, shape: cifar_resnet(32, classes, shape),
    "resnet18": resnet18,
}

#: Names accepted by :func:`build_model`.
MODELS: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> SplittableModel:
    """Build image model ``name`` (one of :data:`MODELS`) for ``input_shape`` = (C, H, W).

    Initialisation uses torch's global RNG: seed it (``torch.manual_seed``) first.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    return _BUILDERS[name](num_classes, tuple(input_shape))


__all__ = [
    "MODELS", "AlexNet", "CNN", "DecoderConfig", "DecoderLM", "LoRALinear", "ResNet",
    "SplittableModel", "apply_lora", "build_model", "cifar_resnet", "count_flops",
    "load_checkpoint", "load_lora_state_dict", "lora_state_dict", "model_bytes", "resnet18",
    "save_checkpoint", "tensor_bytes", "training_flops_per_sample",
]
