"""Third-party architectures for the test suite: ``transformers`` classes, small configs, random init.

Each entry is one line: a name, the model class, its config and the example input's kind. Adding an
architecture is one more ``Arch(...)`` line; ``tests/test_third_party.py`` runs every step on each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

IMAGE = (3, 32, 32)
TOKENS = 12
VOCAB = 100
AUDIO = 1600


@dataclass(frozen=True)
class Arch:
    name: str
    model: str  # class name in transformers
    config: str  # config class name in transformers
    settings: dict = field(default_factory=dict)
    inputs: str = "pixels"  # "pixels", "tokens" (input_ids + attention_mask) or "audio"
    family: str = "conv"  # "conv" (static int8) or "transformer" (dynamic int8)

    def build(self) -> nn.Module:
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, self.config)(**self.settings)
        model = getattr(transformers, self.model)(config).eval()
        for module in model.modules():  # a zero-initialised head would make every output 0
            if isinstance(module, nn.Linear) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.2)
        return model

    def example(self, batch: int = 2) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        if self.inputs == "pixels":
            return {"pixel_values": torch.randn(batch, *IMAGE, generator=generator)}
        if self.inputs == "audio":
            return {"input_values": torch.randn(batch, AUDIO, generator=generator)}
        ids = torch.randint(1, VOCAB, (batch, TOKENS), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, TOKENS - 3:] = 0
        return {"input_ids": ids, "attention_mask": mask}


VISION = {"num_labels": 5, "image_size": 32, "num_channels": 3}
TEXT = {"num_labels": 3, "vocab_size": VOCAB}
ARCHITECTURES: list[Arch] = [
    Arch("resnet-basic", "ResNetForImageClassification", "ResNetConfig", {"num_labels": 5, "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"}),
    Arch("resnet-bottleneck", "ResNetForImageClassification", "ResNetConfig", {"num_labels": 5, "embedding_size": 16, "hidden_sizes": [32, 64], "depths": [1, 1], "layer_type": "bottleneck"}),
    Arch("mobilenet-v2", "MobileNetV2ForImageClassification", "MobileNetV2Config", {**VISION, "depth_multiplier": 0.35}),
    Arch("efficientnet", "EfficientNetForImageClassification", "EfficientNetConfig", {**VISION, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320}),
    Arch("convnext", "ConvNextForImageClassification", "ConvNextConfig", {"num_labels": 5, "hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2}),
    Arch("regnet", "RegNetForImageClassification", "RegNetConfig", {"num_labels": 5, "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "groups_width": 8}),
    Arch("mobilevit", "MobileViTForImageClassification", "MobileViTConfig", {**VISION, "hidden_sizes": [16, 16, 16], "neck_hidden_sizes": [8, 8, 8, 8, 8, 16, 32], "num_attention_heads": 2, "mlp_ratio": 1.0}),
    Arch("vit", "ViTForImageClassification", "ViTConfig", {**VISION, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}, family="transformer"),
    Arch("deit", "DeiTForImageClassification", "DeiTConfig", {**VISION, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}, family="transformer"),
    Arch("swin", "SwinForImageClassification", "SwinConfig", {**VISION, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4}, family="transformer"),
    Arch("distilbert", "DistilBertForSequenceClassification", "DistilBertConfig", {**TEXT, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 32}, "tokens", "transformer"),
    Arch("bert", "BertForSequenceClassification", "BertConfig", {**TEXT, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32}, "tokens", "transformer"),
    Arch("albert", "AlbertForSequenceClassification", "AlbertConfig", {**TEXT, "hidden_size": 32, "embedding_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32}, "tokens", "transformer"),
    Arch("gpt2", "GPT2ForSequenceClassification", "GPT2Config", {**TEXT, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}, "tokens", "transformer"),
    Arch("llama", "LlamaForSequenceClassification", "LlamaConfig", {**TEXT, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32, "pad_token_id": 0}, "tokens", "transformer"),
    Arch("wav2vec2", "Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", {"num_labels": 3, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4, "classifier_proj_size": 16}, "audio", "transformer"),
]
BY_NAME: dict[str, Arch] = {a.name: a for a in ARCHITECTURES}
