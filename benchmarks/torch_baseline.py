"""A minimal PyTorch LLaMA-style decoder with the same architecture, shapes and initialisation
as `jaxlm.models.decoder.Transformer` (RMSNorm, NeoX-layout RoPE, GQA, SwiGLU, untied or tied
head), trained with AdamW + global-norm clipping: the baseline a researcher would otherwise reach
for. `benchmarks/train_throughput.py` times it against jaxlm on the same batch shapes.

Only the LLaMA family is implemented (norm='rmsnorm', mlp='swiglu', positions='rope', no biases);
anything else raises, so a comparison can never silently run a different model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxlm.models.config import ModelConfig


def check_supported(cfg: ModelConfig) -> None:
    unsupported = {k: v for k, v in (('norm', cfg.norm), ('mlp', cfg.mlp),
                                     ('positions', cfg.positions)) if v not in
                   ('rmsnorm', 'swiglu', 'rope')}
    if unsupported or cfg.use_bias or cfg.qk_norm or cfg.dropout_rate:
        raise NotImplementedError(
            f'torch baseline is LLaMA-style only (rmsnorm/swiglu/rope, no bias, no qk_norm, no '
            f'dropout); got {unsupported}, use_bias={cfg.use_bias}, qk_norm={cfg.qk_norm}, '
            f'dropout_rate={cfg.dropout_rate}')


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the activation dtype, like jaxlm (and Meta's reference).
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).type_as(x)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq  # [L, Dh/2]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x_BxLxHxD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates channel pairs (i, i + D/2): the NeoX / HF-LLaMA half-split layout jaxlm uses."""
    x = x_BxLxHxD.float()
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).type_as(x_BxLxHxD)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, h, k, dh = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.h, self.k, self.dh = h, k, dh
        self.query = nn.Linear(d, h * dh, bias=False)
        self.key = nn.Linear(d, k * dh, bias=False)
        self.value = nn.Linear(d, k * dh, bias=False)
        self.out = nn.Linear(h * dh, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        q = apply_rope(self.query(x).view(b, length, self.h, self.dh), cos, sin)
        k = apply_rope(self.key(x).view(b, length, self.k, self.dh), cos, sin)
        v = self.value(x).view(b, length, self.k, self.dh)
        # SDPA wants [B, H, L, Dh]; enable_gqa broadcasts the K kv heads over H // K query heads
        # (query head i uses kv head i // (H // K), as jaxlm's [K, G] reshape does).
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True,
                                           enable_gqa=self.h != self.k)
        return self.out(o.transpose(1, 2).reshape(b, length, self.h * self.dh))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.mlp_dim, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.mlp_dim, bias=False)
        self.down = nn.Linear(cfg.mlp_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class TorchTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, seq_len: int) -> None:
        super().__init__()
        check_supported(cfg)
        self.cfg = cfg
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = (None if cfg.tie_embeddings
                        else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False))
        cos, sin = rope_tables(seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)
        # Same init as jaxlm: N(0, init_std) for every kernel and the embedding, ones for norms.
        for name, p in self.named_parameters():
            if not name.endswith('norm.weight'):
                nn.init.normal_(p, std=cfg.init_std)

    def forward(self, tokens_BxL: torch.Tensor) -> torch.Tensor:
        """Float32 logits [B, L, V] (jaxlm also returns f32 logits)."""
        x = self.token_embed(tokens_BxL)
        length = tokens_BxL.shape[1]
        cos, sin = self.cos[:length], self.sin[:length]
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.final_norm(x)
        head = self.token_embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head).float()


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_jax_params(model: TorchTransformer, params: Any) -> None:
    """Copies a jaxlm param tree (host numpy arrays; scanned layers stacked on axis 0) into the
    torch model, so both frameworks can be checked to compute the same loss."""
    cfg = model.cfg
    def t(a):  # copies: host arrays are read-only
        return torch.tensor(np.asarray(a, np.float32))

    layers = params['layers']
    with torch.no_grad():
        model.token_embed.weight.copy_(t(params['token_embed']['embedding']))
        model.final_norm.weight.copy_(t(params['final_norm']['scale']))
        if model.lm_head is not None:
            model.lm_head.weight.copy_(t(params['lm_head']).T)  # [D, V] -> [V, D]
        for i, blk in enumerate(model.layers):
            a, m = layers['attention'], layers['mlp']
            d = cfg.d_model
            blk.attention_norm.weight.copy_(t(layers['attention_norm']['scale'][i]))
            blk.mlp_norm.weight.copy_(t(layers['mlp_norm']['scale'][i]))
            for name in ('query', 'key', 'value'):  # [D, heads, Dh] -> [heads * Dh, D]
                getattr(blk.attention, name).weight.copy_(t(a[name]['kernel'][i]).reshape(d, -1).T)
            blk.attention.out.weight.copy_(t(a['out']['kernel'][i]).reshape(-1, d).T)
            for name in ('gate', 'up', 'down'):  # [in, out] -> [out, in]
                getattr(blk.mlp, name).weight.copy_(t(m[name]['kernel'][i]).T)


def make_optimizer(model: nn.Module, opt_cfg: Any) -> torch.optim.Optimizer:
    """AdamW with jaxlm's hyperparameters, decaying matrices only (jaxlm's `decay_mask`). The
    learning rate is held constant: a schedule costs nothing measurable per step."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{'params': decay, 'weight_decay': opt_cfg.weight_decay},
                              {'params': no_decay, 'weight_decay': 0.0}],
                             lr=opt_cfg.learning_rate, betas=(opt_cfg.b1, opt_cfg.b2),
                             eps=opt_cfg.eps)


def autocast(dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU (weights and optimizer stay fp32), or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast('cpu', dtype=dtype)


def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
            dtype: torch.dtype) -> torch.Tensor:
    with autocast(dtype):
        logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def make_train_step(model: nn.Module, opt: torch.optim.Optimizer, dtype: torch.dtype,
                    grad_clip_norm: float) -> Callable[[torch.Tensor, torch.Tensor], float]:
    def step(inputs: torch.Tensor, targets: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, inputs, targets, dtype)
        loss.backward()
        if grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        opt.step()
        return loss.item()  # .item() synchronises (a no-op on CPU, but keeps timing honest)
    return step

