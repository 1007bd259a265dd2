"""Loading pretrained weights: local folder, cache, then network, with one clear failure."""

from __future__ import annotations

import os


class ModelWeightsUnavailable(RuntimeError):
    """Pretrained weights named in a config cannot be found locally or downloaded."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def from_pretrained(model_cls, name: str, what: str, offline_hint: str):
    """``model_cls.from_pretrained(name)``: the local cache first, the hub only if reachable."""
    try:
        return model_cls.from_pretrained(name, local_files_only=True)
    except OSError:
        if hub_offline():
            raise ModelWeightsUnavailable(
                f"{what} {name!r} is not a local folder nor in the Hugging Face cache, and the hub "
                f"is off (HF_HUB_OFFLINE). {offline_hint}"
            ) from None
    try:
        return model_cls.from_pretrained(name)
    except OSError as err:
        raise ModelWeightsUnavailable(
            f"cannot load {what} {name!r}: {str(err).splitlines()[0]} {offline_hint}"
        ) from None
