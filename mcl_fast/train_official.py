"""method=official, the authors' release (docs/release.md), in the pretraining config: its
section's defaults and schema, the checks tying it to the other sections, the reading of an
earlier version's loss keys, and its model (moco_official) and objective (losses_official).
train.py reaches it only through its method switch."""
from __future__ import annotations

import copy
import json
import warnings

from .config import BOOL, ConfigError, number

# The config's "official" section: its keys, defaults and types.
SECTION = {
    "order": True,      # the order loss, weight (epoch + 1) / epochs; false: the release's Kinetics runs
    "intra_tau": 0.1,   # the intra-video logits' temperature
}
SCHEMA = {"official.order": BOOL, "official.intra_tau": number(0, open_low=True)}

# Keys of earlier versions that `method` replaced (read by upgrade_loss_keys): key -> its replacement.
REPLACED_KEYS = {"loss.st_weighting": "method", "loss.positives": "method", "loss.intra": "method",
                 "loss.intra_tau": "official.intra_tau", "loss.order": "official.order"}
# What those keys (and the MAL's distance and weighting) were in each method.
_OLD_PAPER = {"st_weighting": "uniform", "positives": 1, "intra": False, "order": False}
_OLD_OFFICIAL = {"st_weighting": "softmax", "positives": 3, "intra": True, "distance": "cosine",
                 "weighting": "per_time"}


def upgrade_loss_keys(config: dict, source: str) -> dict:
    """A config whose loss keys st_weighting, positives, intra, intra_tau and order chose the
    release's terms, with `method` in their place (a warning says so once); ConfigError naming
    the key where they mix the two methods. Others as they are."""
    loss = config.get("loss")
    old_keys = [k for k in REPLACED_KEYS if k.startswith("loss.") and isinstance(loss, dict) and k[5:] in loss]
    if not old_keys:
        return config
    config = copy.deepcopy(config)
    loss = config["loss"]
    old = {k[5:]: loss.pop(k[5:]) for k in old_keys}
    intra_tau = old.pop("intra_tau", SECTION["intra_tau"])
    if all(old.get(k, v) == v for k, v in _OLD_PAPER.items()):
        method, new = "paper", {}
    else:
        seen = {**old, "distance": loss.get("distance", "l2"), "weighting": loss.get("weighting", "global")}
        wrong = next((k for k, v in _OLD_OFFICIAL.items() if seen.get(k, _OLD_PAPER.get(k)) != v), None)
        if wrong is not None:
            raise ConfigError(
                f"{source}: loss.{wrong}={json.dumps(seen.get(wrong, _OLD_PAPER.get(wrong)))} with others of the "
                f"release's terms ({', '.join(f'loss.{k}={json.dumps(v)}' for k, v in old.items())}): this mix "
                "is gone; the release is one switch now, method=official (with official.order, official.intra_tau), "
                "and loss.st_weighting, loss.positives, loss.intra are removed (docs/release.md)")
        for k in ("distance", "weighting"):  # the release's alignment loss fixes them
            loss.pop(k, None)
        method, new = "official", {"order": bool(old.get("order", False)), "intra_tau": intra_tau}
    if config.get("method", method) != method:
        raise ConfigError(f"{source}: method={config['method']!r} with the earlier keys {', '.join(old_keys)} "
                          f"of method={method!r}: remove those keys")
    config["method"] = method
    if new:
        config["official"] = {**new, **config.get("official", {})}
    warnings.warn(f"{source}: {', '.join(old_keys)} (an earlier version's keys) read as method={method}"
                  + "".join(f", official.{k}={json.dumps(v)}" for k, v in new.items()) + "; write the config "
                  "that way (docs/release.md)", stacklevel=2)
    return config


def relations(config: dict, loss_defaults: dict) -> list[tuple[bool, str]]:
    """(holds, message) for each rule tying method=official to the other sections; loss_defaults:
    the loss section's defaults (a changed distance or weighting is the paper's only)."""
    m, loss, d = config["model"], config["loss"], config["data"]
    official = config["method"] == "official"
    changed = [k for k in ("distance", "weighting") if loss[k] != loss_defaults[k]]
    return [
        (not official or d["preset"] == "official",
         "method=official needs data.preset=official (its batch has key2, key3, query_first)"),
        (not official or m["queue_size"] > 0,
         "method=official (InfoNCE over 3B rows against the queue) needs model.queue_size > 0"),
        (not official or not changed, f"loss.{changed[0] if changed else ''} applies to the paper's MAL; "
         "method=official computes the release's alignment terms (cosines, per-time weights) and takes no "
         "loss.distance or loss.weighting"),
        (official or config["official"] == SECTION,
         "official.order and official.intra_tau apply to method=official only"),
    ]


def build_model(backbone, common: dict, config: dict):
    """The release's OfficialMoCo around `backbone`; common: the MoCo arguments of config["model"]."""
    from .moco_official import OfficialMoCo

    return OfficialMoCo(backbone, **common, order=bool(config["official"]["order"]),
                        tau_intra=float(config["official"]["intra_tau"]))


def build_criterion(mal: dict, grad_scale: float, config: dict):
    """The release's OfficialLoss; mal: the MAL's variant and terms (config["loss"])."""
    from .losses_official import OfficialLoss

    return OfficialLoss(mal, grad_scale, epochs=config["optim"]["epochs"], order=bool(config["official"]["order"]))
