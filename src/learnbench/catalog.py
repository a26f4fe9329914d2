"""The one list of rules a comparison runs: every conf/method/<name>.yaml whose rule trains that kind of model.

Comparison sweeps ask for `method: ${rules:feedforward}`; adding a rule (one rule file, one yaml
under conf/method/) adds it to every comparison, and the W&B specs are generated from the sweeps
(`python -m learnbench.tools.wandb_specs`), so no sweep file is edited by hand.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from learnbench.paths import CONFIG_DIR


def method_config(name: str):
    """conf/method/<name>.yaml with its defaults list applied: a variant (l_bp.yaml) extends its base
    rule's file (`defaults: [bp, _self_]`) and adds one option."""
    raw = OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml")
    defaults = raw.pop("defaults", None) or []
    parts = [method_config(entry) if entry != "_self_" else raw for entry in defaults]
    if not any(entry == "_self_" for entry in defaults):
        parts.append(raw)
    return OmegaConf.merge(*parts)


def comparable_rules(kind: str = "feedforward") -> list[str]:
    """The method configs whose rule class lists `kind` in its `trains` attribute, sorted by name.

    Local-loss variants (a `local` option other than none: l_bp, lg_fg_a, ...) are their own kind,
    `local`: they are Ren et al.'s table (sweep=ren_table), not members of every comparison."""
    from hydra.utils import get_class

    names = []
    for path in sorted((CONFIG_DIR / "method").glob("*.yaml")):
        cfg = method_config(path.stem)
        is_local = cfg.get("local", "none") != "none"
        if (kind == "local" and is_local) or (not is_local and kind in get_class(cfg._target_).trains):
            names.append(path.stem)
    if not names:
        raise ValueError(f"no rule in {CONFIG_DIR / 'method'} trains {kind!r} models")
    return names


def register_resolver() -> None:
    """`${rules:<kind>}` in a config: the comma-separated names (what a Hydra sweep value takes)."""
    if not OmegaConf.has_resolver("rules"):
        OmegaConf.register_new_resolver("rules", lambda kind: ",".join(comparable_rules(kind)))


def rule_from_config(method: str, **overrides):
    """The rule `method=<method>` builds (conf/method/<method>.yaml), with overrides of its options;
    a noise-table size is dropped for rules that have no table (so one call serves every rule)."""
    from hydra.utils import instantiate

    cfg = method_config(method)
    if "table_size" not in cfg:
        overrides.pop("table_size", None)
    return instantiate(cfg, **overrides)
