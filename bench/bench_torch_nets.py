"""The PyTorch twins of bench cases e (attn2d) and f (column), written in PyTorch's fastest
eager forms. Same math as the engine (extensions-math.md 2e, 3e); used only for timing."""
import math

import torch
import torch.nn.functional as F
from torch import nn


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


class Attn2dNet(nn.Module):
    def __init__(self, H, W, d, heads, r, depth, mlp, form):
        super().__init__()
        self.H, self.W, self.d, self.h, self.r, self.form = H, W, d, heads, r, form
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(
                n1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d, bias=False), o=nn.Linear(d, d, bias=False),
                n2=nn.LayerNorm(d), f1=nn.Linear(d, mlp * d), f2=nn.Linear(mlp * d, d))))
        self.head = nn.Linear(H * W * d, 10)
        self.tables = rope_tables(H, W, d // heads)
        S, span = H * W, 2 * r + 1
        i, j = torch.arange(S) // W, torch.arange(S) % W
        near = ((i[:, None] - i[None]).abs() <= r) & ((j[:, None] - j[None]).abs() <= r)
        self.mask = torch.zeros(S, S).masked_fill(~near, float("-inf"))
        valid = F.unfold(torch.ones(1, 1, H, W), span, padding=r)  # (1, span², S)
        self.pad_mask = torch.zeros_like(valid).masked_fill(valid == 0, float("-inf"))

    def attend(self, q, k, v):  # (B, h, S, dh)
        B, h, S, dh = q.shape
        if self.form == "masked":
            s = q @ k.transpose(-1, -2) / math.sqrt(dh) + self.mask
            return s.softmax(-1) @ v
        span = 2 * self.r + 1
        grid = lambda t: t.transpose(-1, -2).reshape(B * h, dh, self.H, self.W)
        kw = F.unfold(grid(k), span, padding=self.r).view(B, h, dh, span * span, S)
        vw = F.unfold(grid(v), span, padding=self.r).view(B, h, dh, span * span, S)
        s = torch.einsum("bhsc,bhcws->bhsw", q, kw) / math.sqrt(dh)
        s = s + self.pad_mask.view(1, 1, span * span, S).transpose(-1, -2)
        return torch.einsum("bhsw,bhcws->bhsc", s.softmax(-1), vw)

    def forward(self, x):
        B, S, d, h = x.shape[0], self.H * self.W, self.d, self.h
        x = x.view(B, S, d)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["n1"](x)).view(B, S, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k = apply_rope(q, self.tables), apply_rope(k, self.tables)
            a = self.attend(q, k, v).transpose(1, 2).reshape(B, S, d)
            x = x + blk["o"](a)
            x = x + blk["f2"](F.gelu(blk["f1"](blk["n2"](x))))
        return self.head(x.reshape(B, -1))


class ColumnNet(nn.Module):
    def __init__(self, side, d, qk, mlp, depth, sigma=2.0):
        super().__init__()
        N = side * side
        self.N, self.d, self.qk, self.depth = N, d, qk, depth
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
        B, N, d = x.shape[0], self.N, self.d
        x = x.view(B, N, d)
        for _ in range(self.depth):
            u = F.layer_norm(x, (d,)) * self.g1 + self.b1
            q = torch.einsum("bni,noi->bno", u, self.wq) + self.bq
            k = torch.einsum("bni,noi->bno", u, self.wk)
            a = (q @ k.transpose(1, 2) / math.sqrt(self.qk) + self.bias).softmax(-1)
            x = a @ u
            u2 = F.layer_norm(x, (d,)) * self.g2 + self.b2
            hdn = F.gelu(torch.einsum("bni,noi->bno", u2, self.w1) + self.c1)
            x = x + torch.einsum("bni,noi->bno", hdn, self.w2)
        return self.head(x.reshape(B, -1))
