#!/usr/bin/env python3
"""Save a trained lucidrains `transfusion-pytorch` model as an any2any checkpoint directory.

Transfusion has no official weights; any2any loads models trained with the open
implementation (pip `transfusion-pytorch`, pinned in scripts/fixtures/requirements-transfusion.txt).
A checkpoint directory holds:

  config.json        the keyword arguments given to `Transfusion(...)`, as JSON (tuples become
                     lists), plus `"_class_name": "Transfusion"` so any2any recognises it
  model.safetensors  `model.state_dict()` (float32), the module's own key names

From Python, right after training (the arguments are the ones you built the model with):

    from export_transfusion import save_transfusion
    kwargs = dict(num_text_tokens=256, dim_latent=3, channel_first_latent=True,
                  modality_default_shape=(16, 16), transformer=dict(dim=512, depth=8))
    model = Transfusion(**kwargs)
    ...  # train
    save_transfusion(model, kwargs, "my-transfusion")

or from the shell, with the arguments in a JSON file and a `torch.save(model.state_dict(), ...)`:

    python scripts/export_transfusion.py --kwargs kwargs.json --state-dict model.pt --out my-transfusion

`transformer` must be given as a dict (its `Transformer(...)` arguments), not as a module.
Arguments that are modules or functions (`modality_encoder`, `modality_decoder`,
`pre_post_transformer_enc_dec`, `to_modality_shape_fn`) cannot be saved as JSON: the encoder /
decoder are left out of config.json together with their weights (`modality_encoder.*`,
`modality_decoder.*`), and a model using `pre_post_transformer_enc_dec` is refused (any2any only
runs the default linear latent projections). Before writing, the saved arguments are checked by
rebuilding the model from them and loading the state dict strictly.

A latent-space model trains with a diffusers `AutoencoderKL` wrapped in this file's `VaeEncoder`
/ `VaeDecoder` (images in [0, 1]; latents `(mean(vae.encode(2x - 1)) - shift) * scaling_factor`,
decoded by `(vae.decode(z / scaling_factor + shift) + 1) / 2`):

    vae = AutoencoderKL.from_pretrained(...)
    kwargs = dict(..., dim_latent=vae.config.latent_channels, channel_first_latent=True,
                  modality_encoder=VaeEncoder(vae), modality_decoder=VaeDecoder(vae))

Then `save_transfusion` also writes the VAE as the checkpoint's `vae` component
(`vae/config.json` + `vae/diffusion_pytorch_model.safetensors`, `vae.save_pretrained`), which
any2any decodes and encodes images with. Other encoder / decoder modules are not saved: give
any2any a `vae` component yourself (`--component vae=DIR`) only if they compute the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# Constructor arguments that hold modules: left out (weights too) or refused.
DROPPED_MODULES = ("modality_encoder", "modality_decoder")
REFUSED = ("pre_post_transformer_enc_dec",)
NOT_JSON = ("to_modality_shape_fn",)


def _to_json(v, name):
    if isinstance(v, (tuple, list)):
        return [_to_json(x, name) for x in v]
    if isinstance(v, dict):
        return {str(k): _to_json(x, f"{name}.{k}") for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"constructor argument `{name}` ({type(v).__name__}) cannot be saved as JSON")


def checkpoint_config(kwargs: dict) -> dict:
    """The JSON config.json of constructor arguments `kwargs` (see the module docstring)."""
    cfg = {}
    for k, v in kwargs.items():
        if k in REFUSED and v is not None:
            raise ValueError(f"`{k}` (custom pre/post-transformer modules) is not supported by any2any")
        if k in DROPPED_MODULES or k in NOT_JSON:
            continue
        if k == "transformer" and not isinstance(v, dict):
            raise TypeError("give `transformer` as a dict of Transformer(...) arguments, not a module")
        cfg[k] = _to_json(v, k)
    return {"_class_name": "Transfusion", **cfg}


def checkpoint_state(model) -> dict:
    """The state dict to save: float32, contiguous, without the modality encoder / decoder."""
    return {
        k: v.detach().to(torch.float32).contiguous().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(tuple(f"{m}." for m in DROPPED_MODULES))
    }


class VaeEncoder(torch.nn.Module):
    """`modality_encoder`: images [B, 3, H, W] in [0, 1] -> latents [B, C, H/f, W/f]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        c = self.vae.config
        z = self.vae.encode(x * 2 - 1).latent_dist.mean
        return (z - (c.shift_factor or 0.0)) * c.scaling_factor


class VaeDecoder(torch.nn.Module):
    """`modality_decoder`: latents [B, C, h, w] -> images [B, 3, h*f, w*f] in [0, 1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        c = self.vae.config
        x = self.vae.decode(z / c.scaling_factor + (c.shift_factor or 0.0)).sample
        return ((x + 1) / 2).clamp(0, 1)


def save_transfusion(model, kwargs: dict, out) -> Path:
    """Writes config.json and model.safetensors of `model` (built with `kwargs`) into `out`."""
    from transfusion_pytorch import Transfusion

    out = Path(out)
    cfg = checkpoint_config(kwargs)
    state = checkpoint_state(model)
    # the saved arguments must rebuild a module that takes exactly these weights
    rebuilt_kwargs = {k: v for k, v in kwargs.items() if k not in DROPPED_MODULES}
    Transfusion(**rebuilt_kwargs).load_state_dict(state, strict=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_file(state, str(out / "model.safetensors"))
    dec = kwargs.get("modality_decoder")
    if isinstance(dec, VaeDecoder):
        enc = kwargs.get("modality_encoder")
        if enc is not None and not (isinstance(enc, VaeEncoder) and enc.vae is dec.vae):
            raise ValueError("a VaeDecoder needs no encoder or a VaeEncoder of the same VAE")
        dec.vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    return out


def _tuples(v):
    """JSON lists back to the tuples the constructor expects (it type-checks with beartype)."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kwargs", type=Path, required=True, help="JSON file of Transfusion(...) arguments")
    ap.add_argument("--state-dict", type=Path, required=True, help="torch.save(model.state_dict()) file")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    a = ap.parse_args()
    from transfusion_pytorch import Transfusion

    kwargs = {k: _tuples(v) for k, v in json.loads(a.kwargs.read_text()).items() if k != "_class_name"}
    if isinstance(kwargs.get("transformer"), tuple):
        raise SystemExit("`transformer` must be a JSON object")
    model = Transfusion(**kwargs)
    model.load_state_dict(torch.load(a.state_dict, map_location="cpu", weights_only=True), strict=False)
    print(save_transfusion(model, kwargs, a.out))


if __name__ == "__main__":
    main()
