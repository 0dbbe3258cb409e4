"""The CPC model of a cpc configuration as torch modules, under cpc's parameter names.

docs/model.md describes what cpc computes; this is the same computation written with
torch's modules, so that a checkpoint's tensors load into it with ``load_state_dict`` as they
are (names and layouts are PyTorch's on both sides):

- vision: crops [B, 3, S, S] cut into a G x G grid of P x P patches at stride P / 2, a
  ResNet-v2-style conv stack on each patch, the mean over its positions: z [B, G, G, D];
- audio: clips [B, L] through strided 1-D convs (Conv2d with 1 x k kernels, as cpc stores
  them), each with a ReLU, then optionally the frame norm: z [B, T, D];
- text: token ids [B, L, W] (PAD = 0 past each sentence's end) embedded, a 1 x K word conv
  with a ReLU, the mean over each sentence's words: z [B, L, D];
- then one GRU per sequence (down each column of the grid, along the frames, along the
  sentences), and InfoNCE per offset against every z of the batch.

The per-patch jitter of the vision presets that have one is random in cpc (a hash of the
step's seed) and is not applied here: cpc debug-step turns it off too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

NORM_EPS = 1e-5
PAD = 0
MODALITIES = ("vision", "audio", "text")


def _norm(channels: int, on: bool):
    """cpc's norm: a group norm with one group (per-sample statistics only), or none."""
    return nn.GroupNorm(1, channels, eps=NORM_EPS) if on else None


def _apply(norm, x):
    return x if norm is None else norm(x)


class Block(nn.Module):
    """A pre-activation residual block: h + f(relu(h)), f = (conv, [norm], relu)* ending in
    conv, [norm]."""

    def __init__(self, channels: int, convs: int, layer_norm: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in range(convs)
        )
        self.norms = nn.ModuleList(
            nn.GroupNorm(1, channels, eps=NORM_EPS) for _ in range(convs if layer_norm else 0)
        )

    def forward(self, h):
        t = F.relu(h)
        for i, conv in enumerate(self.convs):
            t = conv(t)
            if len(self.norms):
                t = self.norms[i](t)
            if i + 1 < len(self.convs):
                t = F.relu(t)
        return h + t


class Stage(nn.Module):
    def __init__(self, cin: int, spec: dict, layer_norm: bool):
        super().__init__()
        c = spec["channels"]
        self.down = nn.Conv2d(cin, c, 3, stride=spec["stride"], padding=1)
        self.down_norm = _norm(c, layer_norm)
        self.blocks = nn.ModuleList(
            Block(c, spec["convs_per_block"], layer_norm) for _ in range(spec["blocks"])
        )

    def forward(self, h):
        h = F.relu(_apply(self.down_norm, self.down(h)))
        for b in self.blocks:
            h = b(h)
        return h


class VisionEncoder(nn.Module):
    """crops [B, 3, S, S] -> patch vectors z [B, G, G, D] (row r, column c of the grid)."""

    def __init__(self, model: dict):
        super().__init__()
        self.crop, self.grid = model["crop"], model["grid"]
        self.patch = 2 * self.crop // (self.grid + 1)
        enc = model["encoder"]
        stem, ln = enc["stem"], enc["layer_norm"]
        k = stem["kernel"]
        self.stem = nn.Conv2d(3, stem["channels"], k, stride=stem["stride"], padding=k // 2)
        self.stem_norm = _norm(stem["channels"], ln)
        stages, cin = [], stem["channels"]
        for s in enc["stages"]:
            stages.append(Stage(cin, s, ln))
            cin = s["channels"]
        self.stages = nn.ModuleList(stages)
        self.dim = cin

    def patches(self, crops):
        """[B, 3, S, S] -> [B G G, 3, P, P], patch (b, r, c) at row (b G + r) G + c."""
        b, s, p, g = crops.shape[0], self.crop, self.patch, self.grid
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, s, s):
            raise ValueError(f"crops of shape {tuple(crops.shape)}; the model takes [B, 3, {s}, {s}]")
        x = crops.unfold(2, p, p // 2).unfold(3, p, p // 2)  # [B, 3, G, G, P, P]
        return x.permute(0, 2, 3, 1, 4, 5).reshape(b * g * g, 3, p, p)

    def forward(self, crops):
        b, g = crops.shape[0], self.grid
        h = F.relu(_apply(self.stem_norm, self.stem(self.patches(crops))))
        for st in self.stages:
            h = st(h)
        z = F.relu(h).mean(dim=(2, 3))
        return z.reshape(b, g, g, self.dim)


class AudioEncoder(nn.Module):
    """clips [B, L] -> frames z [B, T, D]."""

    def __init__(self, model: dict):
        super().__init__()
        self.window = model["window"]
        enc, convs, cin = model["encoder"], [], 1
        for c in enc["convs"]:
            convs.append(
                nn.Conv2d(cin, c["channels"], (1, c["kernel"]), stride=(1, c["stride"]),
                          padding=(0, c["padding"]))
            )
            cin = c["channels"]
        self.convs = nn.ModuleList(convs)
        self.dim = cin
        self.frame_norm = nn.LayerNorm(cin, eps=NORM_EPS) if enc["frame_norm"] else None

    def forward(self, clips):
        if clips.dim() != 2 or clips.shape[1] != self.window:
            raise ValueError(f"clips of shape {tuple(clips.shape)}; the model takes [B, {self.window}]")
        h = clips[:, None, None, :]
        for conv in self.convs:
            h = F.relu(conv(h))
        z = h.squeeze(2).transpose(1, 2)  # [B, T, D]
        return _apply(self.frame_norm, z)


class TextEncoder(nn.Module):
    """token ids [B, L, W] (PAD = 0 past each sentence's end) -> sentence vectors [B, L, D]."""

    def __init__(self, model: dict):
        super().__init__()
        self.vocab, self.width, self.sentences = model["vocab_size"], model["max_words"], model["sentences"]
        enc = model["encoder"]
        k = enc["kernel"]
        self.embedding = nn.Embedding(self.vocab, model["embedding"], padding_idx=PAD)
        self.conv = nn.Conv2d(model["embedding"], enc["channels"], (1, k), padding=(0, k // 2))
        self.dim = enc["channels"]

    def lengths(self, ids):
        """Each sentence's words: its positions before the first PAD; PAD must fill the rest."""
        want = (self.sentences, self.width)
        if ids.dim() != 3 or tuple(ids.shape[1:]) != want or ids.is_floating_point():
            raise ValueError(
                f"ids of shape {tuple(ids.shape)} ({ids.dtype}); the model takes integer ids "
                f"[B, {want[0]}, {want[1]}]"
            )
        if bool(((ids < 0) | (ids >= self.vocab)).any()):
            raise ValueError(f"ids outside the vocabulary's 0..{self.vocab}")
        words = ids != PAD
        if bool((words[..., 1:] & ~words[..., :-1]).any()):
            raise ValueError("a word after PAD: each sentence is its words, then PAD to the end")
        return words

    def forward(self, ids):
        words = self.lengths(ids)
        b, l, w = ids.shape
        e = self.embedding(ids) * words[..., None]  # PAD's positions exactly zero
        x = e.reshape(b * l, w, -1).permute(0, 2, 1).unsqueeze(2)  # [N, E, 1, W]
        h = F.relu(self.conv(x)).squeeze(2)  # [N, D, W]
        mask = words.reshape(b * l, 1, w).to(h.dtype)
        count = mask.sum(-1).clamp(min=1)  # an empty sentence gives 0
        z = (h * mask).sum(-1) / count
        return z.reshape(b, l, self.dim)


class CpcLoss(NamedTuple):
    """What cpc's stats hold (the loss, and per offset the loss and the accuracy: the share
    of queries whose true candidate scores strictly highest), with the activations."""

    loss: torch.Tensor
    loss_k: torch.Tensor
    accuracy_k: torch.Tensor
    z: torch.Tensor
    c: torch.Tensor
    scores: tuple


class CpcModel(nn.Module):
    """The whole CPC model of a cpc configuration (the `[model]` table of its TOML).

    ``model(batch)`` (or ``model.loss(batch)``) returns a :class:`CpcLoss`; the batch is
    crops [B, 3, S, S], clips [B, L] or token ids [B, L, W] (long), as the modality takes.
    ``model.encoder`` alone maps a batch to z.
    """

    def __init__(self, model: dict):
        super().__init__()
        self.modality = model.get("modality", "vision")
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown model.modality {self.modality!r}; the modalities are {MODALITIES}")
        self.encoder = {"vision": VisionEncoder, "audio": AudioEncoder, "text": TextEncoder}[
            self.modality
        ](model)
        d, h = self.encoder.dim, model["hidden"]
        self.hidden = h
        skip, steps = model["prediction_skip"], model["steps"]
        self.offsets = [skip + k for k in range(steps)]
        self.gru = nn.GRU(d, h, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(h, d, bias=False) for _ in self.offsets)

    def context(self, batch):
        """z [B, T, W, D] and the GRU's contexts c [B, T, W, H]: T steps along each of W
        sequences an example (vision: G rows down each of G columns; audio, text: W = 1)."""
        z = self.encoder(batch)
        b, d = z.shape[0], z.shape[-1]
        if z.dim() == 3:
            z = z.unsqueeze(2)
        t, w = z.shape[1], z.shape[2]
        seqs = z.permute(0, 2, 1, 3).reshape(b * w, t, d)
        c, _ = self.gru(seqs)
        return z, c.reshape(b, w, t, self.hidden).permute(0, 2, 1, 3)

    def forward(self, batch) -> CpcLoss:
        z, c = self.context(batch)
        b, t, w, d = z.shape
        candidates = z.reshape(b * t * w, d)
        rows = torch.arange(b * t * w, device=z.device).reshape(b, t, w)
        losses, accuracies, scores = [], [], []
        for head, o in zip(self.heads, self.offsets):
            # Queries (b, r, c) with r + o < T, numbered (b (T - o) + r) W + c; the true
            # candidate of each is z at (b, r + o, c).
            queries = c[:, : t - o].reshape(-1, self.hidden)
            target = rows[:, o:].reshape(-1)
            s = head(queries) @ candidates.T
            losses.append(F.cross_entropy(s, target))
            true = s.gather(1, target[:, None])[:, 0]
            others = s.detach().scatter(1, target[:, None], float("-inf")).amax(1)
            accuracies.append((true.detach() > others).float().mean())
            scores.append(s)
        loss_k = torch.stack(losses)
        shape = (b, t, w) if self.modality == "vision" else (b, t)
        return CpcLoss(
            loss=loss_k.mean(),
            loss_k=loss_k,
            accuracy_k=torch.stack(accuracies),
            z=z.reshape(*shape, d),
            c=c.reshape(*shape, self.hidden),
            scores=tuple(scores),
        )

    def loss(self, batch) -> CpcLoss:
        """The loss, the per-offset losses and accuracies, as cpc computes them."""
        return self(batch)
