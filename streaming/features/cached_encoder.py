"""The wav2vec2 transformer encoder run block by block, attending to cached keys/values of earlier blocks.

Re-encoding [left context | block | look-ahead] for every block costs (context + block +
look-ahead) / block times the whole-clip encoder. Here each token is encoded once, as part of its
block (with the block's look-ahead); afterwards its per-layer keys and values are kept, and later
blocks attend to them (the last `context_frames` tokens) instead of re-encoding them. The
positional conv embedding gets the projected features of the tokens before the block, so it is
exact on the left; on the right, like the recomputing encoder, it sees zeros past the look-ahead.
With a single block covering the whole clip this is exactly the whole-clip encoder.

Supports both layer layouts: post-norm (wav2vec2-base, `do_stable_layer_norm=False`) and
pre-norm (`do_stable_layer_norm=True`), whose last output is taken after the encoder's final
LayerNorm, like `model.audio.encode_features`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Model


class CachedContextEncoder:
    """Feature projection + encoder for consecutive blocks of one stream.

    context_frames: how many earlier tokens' keys/values each block attends to.
    """

    def __init__(self, model: Wav2Vec2Model, context_frames: int) -> None:
        self.model = model
        self.stable = bool(model.config.do_stable_layer_norm)
        self.context = context_frames
        self.pos_reach = model.config.num_conv_pos_embeddings // 2  # tokens left of a token its pos conv reads
        pos = model.encoder.pos_conv_embed
        # The pos conv's weight is weight-normed (g * v / |v|); evaluate that once, not per block.
        # (Build the extractor after loading/merging weights.)
        with torch.no_grad():
            self._pos_weight = pos.conv.weight.detach().clone()
        self._pos_bias = None if pos.conv.bias is None else pos.conv.bias.detach()
        self._pos_pad, self._pos_groups = pos.conv.padding, pos.conv.groups
        self._pos_trim = pos.padding.num_pad_remove
        self._pos_act = pos.activation
        self.reset()

    def reset(self) -> None:
        self._proj: torch.Tensor | None = None  # [<= pos_reach, hidden] projected features of earlier tokens
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer K, V [heads, n, head_dim]

    @torch.no_grad()
    def encode_block(self, block: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        """Encode one block and remember it as context for the next.

        block: [n, C] conv-feature tokens; lookahead: [m, C] tokens after it (may be empty).
        Returns [n, layers, hidden].
        """
        model = self.model
        p = next(model.parameters())
        n = block.shape[0]
        x = torch.cat([block, lookahead]).to(device=p.device, dtype=p.dtype)
        proj, _ = model.feature_projection(x[None])  # [1, n + m, hidden]
        proj = proj[0]
        past = proj.new_zeros(0, proj.shape[-1]) if self._proj is None else self._proj
        seq = torch.cat([past, proj])
        pos = self._pos_conv(seq)[past.shape[0]:]  # exact on the left, zeros past the look-ahead
        h = proj + pos
        if not self.stable:
            h = model.encoder.layer_norm(h)
        outputs, new_kv = [], []
        for i, layer in enumerate(model.encoder.layers):
            cached = None if self._kv is None else self._kv[i]
            h, kv = self._layer(layer, h, cached)
            new_kv.append(kv)
            outputs.append(h[:n])
        if self.stable:
            outputs[-1] = model.encoder.layer_norm(outputs[-1])
        self._remember(proj[:n], new_kv, n)
        return torch.stack(outputs, dim=1)

    def _pos_conv(self, seq: torch.Tensor) -> torch.Tensor:
        # seq: [T, hidden] -> [T, hidden], as Wav2Vec2PositionalConvEmbedding
        y = F.conv1d(seq.t()[None], self._pos_weight, self._pos_bias, padding=self._pos_pad, groups=self._pos_groups)
        if self._pos_trim:
            y = y[..., : -self._pos_trim]
        return self._pos_act(y)[0].t()

    def _layer(self, layer, h: torch.Tensor, cached: tuple[torch.Tensor, torch.Tensor] | None):
        # h: [T, hidden] -> ([T, hidden], (K, V) [heads, T, head_dim] of these tokens)
        attn = layer.attention
        x = layer.layer_norm(h) if self.stable else h
        heads, dim = attn.num_heads, attn.head_dim
        q = attn.q_proj(x).view(-1, heads, dim).transpose(0, 1)
        k = attn.k_proj(x).view(-1, heads, dim).transpose(0, 1)
        v = attn.v_proj(x).view(-1, heads, dim).transpose(0, 1)
        keys = k if cached is None else torch.cat([cached[0], k], dim=1)
        values = v if cached is None else torch.cat([cached[1], v], dim=1)
        a = F.scaled_dot_product_attention(q[None], keys[None], values[None], scale=attn.scaling)[0]
        a = attn.out_proj(a.transpose(0, 1).reshape(-1, heads * dim))
        if self.stable:
            h = h + a
            h = h + layer.feed_forward(layer.final_layer_norm(h))
            if getattr(layer, "adapter_layer", None) is not None:
                h = h + layer.adapter_layer(h)
        else:
            h = layer.layer_norm(h + a)
            h = layer.final_layer_norm(h + layer.feed_forward(h))
        return h, (k, v)

    def _remember(self, proj: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> None:
        """Keep the block's projected features (pos conv) and keys/values (attention) as context."""
        seq = proj if self._proj is None else torch.cat([self._proj, proj])
        self._proj = seq[max(0, seq.shape[0] - self.pos_reach):]
        merged = []
        for i, (k, v) in enumerate(kv):
            k, v = k[:, :n], v[:, :n]
            if self._kv is not None:
                k, v = torch.cat([self._kv[i][0], k], dim=1), torch.cat([self._kv[i][1], v], dim=1)
            start = max(0, k.shape[1] - self.context)
            merged.append((k[:, start:], v[:, start:]))
        self._kv = merged
