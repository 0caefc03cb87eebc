"""The PyTorch twins of bench cases e (attn2d), f (column), g (energy block) and h (grid LM),
written in PyTorch's fastest eager forms. Same math and the same parameters as the engine
(extensions-math.md 1a, 2e, 3e; MDL.md section 7); used only for timing. Every mask and table
is a buffer, so `.to(device)` moves the whole twin."""
import math

import torch
import torch.nn.functional as F
from torch import nn


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def rope_tables(H, W, dh):
    m = dh // 4
    omega = 10000.0 ** (-torch.arange(m) / m)
    rows = torch.arange(H).repeat_interleave(W)[:, None] * omega  # (S, m)
    cols = torch.arange(W).repeat(H)[:, None] * omega
    return rows.cos(), rows.sin(), cols.cos(), cols.sin()


def apply_rope(x, tables):  # x (B, heads, S, dh)
    cr, sr, cc, sc = tables
    m = x.shape[-1] // 4
    a, b, c, d = x.split(m, dim=-1)
    return torch.cat([a * cr - b * sr, a * sr + b * cr, c * cc - d * sc, c * sc + d * cc], -1)


class Attn2dBlocks(nn.Module):
    """`depth` pre-norm blocks of local 2D window attention (radius r, 2D axial RoPE, optional
    raster-causal mask) and a per-cell MLP on (B, S, d). Forms of the attention:
    `masked` dense S x S scores with a -inf band mask, `sdpa` the same mask through
    F.scaled_dot_product_attention, `unfold` gathered (2r+1)^2 windows."""

    def __init__(self, H, W, d, heads, r, depth, mlp, form, raster=False):
        super().__init__()
        self.H, self.W, self.d, self.h, self.r, self.form = H, W, d, heads, r, form
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(
                n1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d, bias=False), o=nn.Linear(d, d, bias=False),
                n2=nn.LayerNorm(d), f1=nn.Linear(d, mlp * d), f2=nn.Linear(mlp * d, d))))
        for name, t in zip(("rcos", "rsin", "ccos", "csin"), rope_tables(H, W, d // heads)):
            self.register_buffer(name, t, persistent=False)
        S, span = H * W, 2 * r + 1
        i, j = torch.arange(S) // W, torch.arange(S) % W
        near = ((i[:, None] - i[None]).abs() <= r) & ((j[:, None] - j[None]).abs() <= r)
        if raster:  # a query sees keys at or before it in raster order (the engine's `mask raster`)
            near &= torch.arange(S)[None] <= torch.arange(S)[:, None]
        self.register_buffer("mask", torch.zeros(S, S).masked_fill(~near, float("-inf")), persistent=False)
        # window slot w of cell s holds cell idx-1 (idx 0: outside the grid)
        idx = F.unfold(torch.arange(1, S + 1, dtype=torch.float32).view(1, 1, H, W), span, padding=r)[0]
        ok = idx > 0
        if raster:
            ok &= idx - 1 <= torch.arange(S, dtype=torch.float32)[None]
        pad = torch.zeros(span * span, S).masked_fill(~ok, float("-inf"))  # (span², S)
        self.register_buffer("pad_mask", pad.t().contiguous(), persistent=False)  # (S, span²)

    def attend(self, q, k, v):  # (B, h, S, dh)
        B, h, S, dh = q.shape
        if self.form == "masked":
            s = q @ k.transpose(-1, -2) / math.sqrt(dh) + self.mask
            return s.softmax(-1) @ v
        if self.form == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        span = 2 * self.r + 1
        grid = lambda t: t.transpose(-1, -2).reshape(B * h, dh, self.H, self.W)
        kw = F.unfold(grid(k), span, padding=self.r).view(B, h, dh, span * span, S)
        vw = F.unfold(grid(v), span, padding=self.r).view(B, h, dh, span * span, S)
        s = torch.einsum("bhsc,bhcws->bhsw", q, kw) / math.sqrt(dh) + self.pad_mask
        return torch.einsum("bhsw,bhcws->bhsc", s.softmax(-1), vw)

    def forward(self, x):  # (B, S, d)
        B, S, d, h = x.shape[0], self.H * self.W, self.d, self.h
        tables = (self.rcos, self.rsin, self.ccos, self.csin)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["n1"](x)).view(B, S, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k = apply_rope(q, tables), apply_rope(k, tables)
            a = self.attend(q, k, v).transpose(1, 2).reshape(B, S, d)
            x = x + blk["o"](a)
            x = x + blk["f2"](F.gelu(blk["f1"](blk["n2"](x))))
        return x


class Attn2dNet(nn.Module):
    """Case e: (input, H·W·d) (attn2d ...) (output, 10, <softmax>, <cross_entropy>)."""

    def __init__(self, H, W, d, heads, r, depth, mlp, form, raster=False):
        super().__init__()
        self.d = d
        self.grid = Attn2dBlocks(H, W, d, heads, r, depth, mlp, form, raster)
        self.head = nn.Linear(H * W * d, 10)

    def forward(self, x):
        B = x.shape[0]
        return self.head(self.grid(x.view(B, -1, self.d)).reshape(B, -1))


class GridLM(nn.Module):
    """Case h: (chars, C) (embed, embed, HxW, vocab V, dim d) (grid, attn2d, HxW, dim d, heads,
    window r, depth, mask raster) (next, V, cells HxW, <softmax>, <cross_entropy>).
    Input (B, C) token ids; output (B·C, V) logits, one row per cell."""

    def __init__(self, H, W, vocab, d, heads, r, depth, mlp, form):
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, d)                       # N(0, 1), as the engine
        self.pos = nn.Parameter(torch.randn(H * W, d) * 0.02)     # `pos learned`
        self.grid = Attn2dBlocks(H, W, d, heads, r, depth, mlp, form, raster=True)
        self.head = nn.Linear(d, vocab)                           # one weight shared by all cells

    def forward(self, ids):
        return self.head(self.grid(self.embed(ids) + self.pos)).reshape(-1, self.vocab)


class ColumnNet(nn.Module):
    """Case f: (input, N·d) (column, side x side, dim d, heads, qk, mlp, depth, sigma)
    (output, 10, ...). Untied weights as (N, out, in) tensors applied by einsum; heads split q/k
    (qk/heads each) and the value channels (d/heads each); one N x N bias shared by the heads.
    Forms: `bmm` explicit scores and softmax; `sdpa` F.scaled_dot_product_attention with the
    bias as its float mask."""

    def __init__(self, side, d, qk, mlp, depth, sigma=2.0, heads=1, form="bmm"):
        super().__init__()
        N = side * side
        self.N, self.d, self.qk, self.depth, self.h, self.form = N, d, qk, depth, heads, form
        p = lambda *s: nn.Parameter(torch.empty(*s).uniform_(-1 / math.sqrt(s[-1]), 1 / math.sqrt(s[-1])))
        self.g1, self.b1 = nn.Parameter(torch.ones(N, d)), nn.Parameter(torch.zeros(N, d))
        self.g2, self.b2 = nn.Parameter(torch.ones(N, d)), nn.Parameter(torch.zeros(N, d))
        self.wq, self.bq, self.wk = p(N, qk, d), nn.Parameter(torch.zeros(N, qk)), p(N, qk, d)
        self.w1, self.c1, self.w2 = p(N, mlp, d), nn.Parameter(torch.zeros(N, mlp)), p(N, d, mlp)
        pts = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)
        D = torch.cdist(pts.reshape(N, 2).float(), pts.reshape(N, 2).float())
        self.bias = nn.Parameter((-D ** 2 / (2 * sigma ** 2)).clamp(min=-8))
        self.head = nn.Linear(N * d, 10)

    def forward(self, x):
        B, N, d, h = x.shape[0], self.N, self.d, self.h
        x = x.view(B, N, d)
        for _ in range(self.depth):
            u = F.layer_norm(x, (d,)) * self.g1 + self.b1
            q = (torch.einsum("bni,noi->bno", u, self.wq) + self.bq).view(B, N, h, -1).transpose(1, 2)
            k = torch.einsum("bni,noi->bno", u, self.wk).view(B, N, h, -1).transpose(1, 2)
            v = u.view(B, N, h, d // h).transpose(1, 2)              # value = the normalised input
            if self.form == "sdpa":
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
            else:
                s = q @ k.transpose(-1, -2) / math.sqrt(self.qk // h) + self.bias
                a = s.softmax(-1) @ v
            x = a.transpose(1, 2).reshape(B, N, d)                   # skip 0: replaced
            u2 = F.layer_norm(x, (d,)) * self.g2 + self.b2
            hdn = F.gelu(torch.einsum("bni,noi->bno", u2, self.w1) + self.c1)
            x = x + torch.einsum("bni,noi->bno", hdn, self.w2)
        return self.head(x.reshape(B, -1))


class EnergyNet(nn.Module):
    """Case g: (input, nv) [am, energy, steps T, dt, (am_v, nv, <tanh>) (am_y, ny, <softmax>)
    (am_s, synapse hidden, am_v am_y, units M, <relu>)] (output, ny, <softmax>, <cross_entropy>).

    The visible layer is clamped at the input (x_v = input, g_v = tanh x_v), the label layer
    starts at 0; each of the T synchronous Euler steps computes the hidden synapse
    h = g_v W_v + g_y W_y, s = relu(h), the currents I_j = s W_jᵀ and x_y += dt (I_y - x_y);
    the block's output g_y = softmax(x_y^T) feeds a dense 10-way softmax head. Autograd through
    the unroll. Forms (the same function, different FLOPs):
      `all`     every step computes every layer's current, the clamped one's discarded (HAMUX's
                generic dE/dg);
      `moving`  only the moving layer's current (the clamped visible current is skipped);
      `hoisted` also g_v W_v once outside the loop (g_v never changes while clamped): the
                engine's schedule.
    """

    def __init__(self, nv, ny, units, steps, dt, form="moving"):
        super().__init__()
        self.steps, self.dt, self.form, self.ny = steps, dt, form, ny
        self.wv = nn.Parameter(torch.randn(nv, units) * 0.02)
        self.wy = nn.Parameter(torch.randn(ny, units) * 0.02)
        self.head = nn.Linear(ny, ny)

    def forward(self, x):
        gv = torch.tanh(x)
        xy = x.new_zeros(x.shape[0], self.ny)
        hv = gv @ self.wv if self.form == "hoisted" else None
        for _ in range(self.steps):
            gy = xy.softmax(-1)
            h = (hv if hv is not None else gv @ self.wv) + gy @ self.wy
            s = F.relu(h)
            if self.form == "all":
                _ = s @ self.wv.t()  # the clamped layer's current: computed, then held (mask 0)
            xy = xy + self.dt * (s @ self.wy.t() - xy)
        return self.head(xy.softmax(-1))
