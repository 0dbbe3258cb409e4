"""cpc_torch: the torch.nn.Module of a cpc checkpoint (vision, audio or text).

    import cpc_torch
    model = cpc_torch.load("runs/tiny/checkpoint.safetensors")
    out = model.loss(crops)            # out.loss, out.loss_k, out.accuracy_k as cpc computes them
    out.loss.backward()                # the gradients of cpc debug-step
    encoder = cpc_torch.load_encoder("runs/tiny/checkpoint.safetensors")   # frozen: batch -> z
    cpc_torch.save(model, "tuned.safetensors")   # readable by cpc (debug-step, probe, embed, --resume)

Depends on torch, numpy and safetensors only (TOML through the standard library's tomllib).
"""

from __future__ import annotations

import json
import tomllib

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model import CpcLoss, CpcModel, AudioEncoder, TextEncoder, VisionEncoder

__all__ = ["load", "load_encoder", "save", "CpcModel", "CpcLoss", "CHECKPOINT_FORMAT",
           "VisionEncoder", "AudioEncoder", "TextEncoder"]

#: The ``format`` metadata of the checkpoints this package reads and writes (cpc's
#: src/train/model_checkpoint.rs).
CHECKPOINT_FORMAT = "cpc-checkpoint-1"
EXP_AVG = "optimizer.exp_avg."
EXP_AVG_SQ = "optimizer.exp_avg_sq."
#: Metadata that a cpc checkpoint carries and save() writes back as it was read: the
#: configuration (TOML) and its fingerprint, the seed, the step, the data loader's position
#: and a text model's vocabulary.
CARRIED = ("config", "fingerprint", "seed", "step", "loader_epoch", "loader_position", "vocabulary")


def load(path, map_location="cpu") -> CpcModel:
    """The model of the cpc checkpoint at ``path`` with its weights.

    The configuration comes from the checkpoint's ``config`` metadata; every tensor must
    match the model (torch's ``load_state_dict(strict=True)``). The checkpoint's metadata
    and Adam moments are kept on the module (``model.cpc_metadata``, ``model.cpc_moments``)
    for :func:`save`; ``model.vocabulary`` is a text model's word list (id -> word).
    """
    path = str(path)
    with safe_open(path, framework="pt", device=str(map_location)) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    fmt = meta.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: format {fmt!r}, not a cpc checkpoint ({CHECKPOINT_FORMAT!r}, written by "
            "`cpc pretrain` or cpc_torch.save)"
        )
    if "config" not in meta:
        raise ValueError(f"{path}: no `config` metadata")
    config = tomllib.loads(meta["config"])
    model = CpcModel(config["model"])
    params = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    missing, unexpected = _check_names(model, params)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, tensors the model does not use {unexpected}")
    model.load_state_dict(params, strict=True)
    model.cpc_config = config
    model.cpc_metadata = {k: meta[k] for k in CARRIED if k in meta}
    moments = {}
    for name in params:
        if EXP_AVG + name in tensors and EXP_AVG_SQ + name in tensors:
            moments[name] = (tensors[EXP_AVG + name], tensors[EXP_AVG_SQ + name])
    model.cpc_moments = moments if len(moments) == len(params) else None
    model.vocabulary = None
    if "vocabulary" in meta:
        model.vocabulary = json.loads(meta["vocabulary"])["words"]
    return model


def _check_names(model, params):
    want = set(model.state_dict())
    return sorted(want - set(params)), sorted(set(params) - want)


def load_encoder(path, frozen=True, map_location="cpu"):
    """The encoder of the checkpoint at ``path`` alone (batch -> z), frozen by default
    (``requires_grad`` off, eval mode); ``frozen=False`` to fine-tune it. A plain
    nn.Module: wrap it in DistributedDataParallel, or in a classifier, as any other."""
    encoder = load(path, map_location).encoder
    if frozen:
        encoder.requires_grad_(False)
        encoder.eval()
    return encoder


def save(model: CpcModel, path, moments=True):
    """Write ``model`` as a cpc checkpoint: every parameter under its name (float32), the
    configuration, fingerprint, seed, step, loader position and vocabulary it was loaded
    with, and (``moments=True``, when the loaded checkpoint had them) the Adam moments read
    with it, so that ``cpc pretrain --resume`` continues from the file. cpc's debug-step,
    probe and embed read it as they read cpc's own checkpoints.

    The moments and step are the ones cpc wrote: training in torch does not update them.
    """
    meta = getattr(model, "cpc_metadata", None)
    if not meta or "config" not in meta or "fingerprint" not in meta:
        raise ValueError("the model was not loaded by cpc_torch.load: no cpc configuration to write")
    out = {}
    for name, p in model.state_dict().items():
        t = p.detach().to("cpu", torch.float32).contiguous()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} holds values that are NaN or infinite: cpc refuses such a checkpoint")
        out[name] = t
    if moments and getattr(model, "cpc_moments", None):
        for name, (m, v) in model.cpc_moments.items():
            out[EXP_AVG + name] = m.detach().to("cpu", torch.float32).contiguous()
            out[EXP_AVG_SQ + name] = v.detach().to("cpu", torch.float32).contiguous()
    metadata = dict(meta)
    if not moments:
        # Without moments the file cannot resume; keep its loader position out too.
        metadata.pop("loader_epoch", None)
        metadata.pop("loader_position", None)
    metadata["format"] = CHECKPOINT_FORMAT
    metadata.setdefault("step", "0")
    save_file(out, str(path), metadata=metadata)
