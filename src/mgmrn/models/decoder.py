"""Visual-semantic decoder (VSD): attribute queries attend over a level's tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgmrn.choices import PrototypeInit, check_choice


class AttributeDecoder(nn.Module):
    """Attribute word vectors query region tokens; each attended feature scores its attribute.

    ``Q = W_q w`` (A, M), ``K = W_k v``, ``V = W_v v`` (B, T, M); ``attn = softmax_T(Q K^T)``;
    ``f = W_o (attn V)`` (B, A, D); score ``s_a = <f_a, p_a>`` with a learnable prototype p_a.

    Unless the attention weights are asked for, ``attn V`` goes through
    ``scaled_dot_product_attention`` with the decoder's own scale (1 as published): on a GPU a
    fused kernel then computes it without writing the (B, A, T) weights to memory.

    Args:
        num_attributes: A.
        word_dim: E, width of the attribute word vectors.
        dim: D, width of the tokens.
        attn_dim: M.
        scaled: divide ``Q K^T`` by ``sqrt(M)``; the published model does not.
        prototype_init: ``normal`` (std 1, as published) or ``scaled`` (std ``D^-1/2``: the
            score ``<f_a, p_a>`` starts with the scale of one feature; it helped on no proxy set,
            see the ablation in docs/fidelity.md).
    """

    def __init__(self, num_attributes: int, word_dim: int, dim: int, attn_dim: int,
                 scaled: bool = False, prototype_init: PrototypeInit = "normal"):
        super().__init__()
        check_choice("prototype_init", prototype_init, PrototypeInit)
        self.query = nn.Linear(word_dim, attn_dim)
        self.key = nn.Linear(dim, attn_dim)
        self.value = nn.Linear(dim, attn_dim)
        self.out = nn.Linear(attn_dim, dim)
        std = dim ** -0.5 if prototype_init == "scaled" else 1.0
        self.prototypes = nn.Parameter(torch.randn(num_attributes, dim) * std)
        self.scale = 1.0 / math.sqrt(attn_dim) if scaled else 1.0

    def forward(self, tokens: torch.Tensor, word_vectors: torch.Tensor,
                return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens: (B, T, D); word_vectors: (A, E) -> scores (B, A) and attention (B, A, T)."""
        q = self.query(word_vectors)  # (A, M)
        k = self.key(tokens)  # (B, T, M)
        v = self.value(tokens)
        if return_attention:
            attn = torch.einsum("am,btm->bat", q, k).mul(self.scale).softmax(dim=-1)
            attended = attn @ v
        else:
            # one head: (B, 1, A, M); the fused kernels take only four-dimensional inputs
            q = q.expand(tokens.shape[0], 1, *q.shape)
            attended = F.scaled_dot_product_attention(q, k[:, None], v[:, None],
                                                      scale=self.scale)[:, 0]
            attn = None
        features = self.out(attended)  # (B, A, D)
        scores = (features * self.prototypes).sum(-1)
        return scores, attn
