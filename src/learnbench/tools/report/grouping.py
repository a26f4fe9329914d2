"""Which runs belong together: runs that differ only in their seed (and in where and how they were
logged) form one group; the columns are the config choices and keys that tell the groups apart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from learnbench.budget import describe_schedule
from learnbench.results import DIVERGED, FAILED, OK
from learnbench.tools.report.common import CHOICE_KEYS, DASH, warn

ALWAYS_SHOWN = ("method", "data", "model")
# Config keys (dotted, flattened) that never split groups: where things were written and how they
# were logged. The seed itself (also as data.seed, which interpolates it) is left out in _ignored.
IGNORED_PREFIXES = ("paths.", "hydra.", "logger.", "callbacks.", "trainer.default_root_dir", "choices.", "slurm.")
IGNORED_KEYS = {"ckpt_path", "tags", "output_dir", "optimized_metric",
                # what the app logs beside the config to W&B (the group choices are choices.*)
                "tuned", "parameters",
                # what the console and the logger show, not what is trained (`+trainer.enable_progress_bar=false`
                # on some seeds must not split a row in two)
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps"}
# Config groups chosen on the command line that never split groups (how a run was logged or stored).
IGNORED_GROUPS = {"logger", "callbacks", "paths", "hydra", "local"}


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts as {'a.b.c': value}; lists become tuples so values can be compared and hashed."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out  # an empty section (scheduler: {}) adds no key
    if isinstance(tree, list):
        tree = tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in tree)
    return {prefix[:-1]: tree}


def _ignored(key: str) -> bool:
    return (
        key in IGNORED_KEYS
        or key.split(".", 1)[0] in IGNORED_GROUPS
        or key.startswith(IGNORED_PREFIXES)
        or key.rsplit(".", 1)[-1] in ("seed", "output_dir")
        or key.split(".", 1)[0].startswith("_")
    )


def _points_into_run_dir(value, record: dict) -> bool:
    out = record.get("output_dir")
    return bool(out) and isinstance(value, str) and str(out) in value


def record_choices(record: dict) -> dict:
    """The chosen option of each config group: the record's own fields, plus groups picked by an
    override such as `scheduler=cosine` or `debug=fast` (a name without dots whose config is a dict
    or is not in the config at all, unlike `seed=1`)."""
    choices = {}
    config = record.get("config") or {}
    for override in record.get("overrides") or []:
        name, sep, value = override.lstrip("+~").partition("=")
        if sep and "." not in name and "/" not in name and name not in IGNORED_GROUPS and (
            isinstance(config.get(name), dict) or name not in config
        ):
            choices[name] = value
    choices.update({k: record.get(k) for k in CHOICE_KEYS})
    return choices


def _varying_keys(records: list[dict]) -> list[str]:
    """Config keys (dotted) whose values differ between the runs, besides what never splits groups: where a run
    was written and logged, and its seed under any name."""
    flat = [flatten(r.get("config") or {}) for r in records]
    candidates = sorted({k for f in flat for k in f if not _ignored(k)})
    varying = []
    for key in candidates:
        values = [f.get(key, DASH) for f in flat]
        if len(set(values)) < 2:
            continue
        if any(_points_into_run_dir(v, r) for v, r in zip(values, records)):
            continue
        if all(v == r.get("seed") for v, r in zip(values, records) if v != DASH):
            continue  # an interpolated seed under another name
        varying.append(key)
    return varying


def grouping_keys(records: list[dict]) -> list[str]:
    """Chosen config-group options shown as columns (method, data, model always; the others when
    they vary), then the varying config keys the choices do not explain."""
    chosen = [record_choices(r) for r in records]
    names = list(CHOICE_KEYS) + sorted({k for c in chosen for k in c} - set(CHOICE_KEYS))
    shown = [k for k in names if k in ALWAYS_SHOWN or len({c.get(k) for c in chosen}) > 1]
    flat = [flatten(r.get("config") or {}) for r in records]
    extra = []
    for key in _varying_keys(records):
        by_choice: dict[tuple, set] = {}
        for f, choice in zip(flat, chosen):
            by_choice.setdefault(tuple(choice.get(k) for k in names), set()).add(f.get(key, DASH))
        if any(len(v) > 1 for v in by_choice.values()):
            extra.append(key)
    return shown + extra


# ----------------------------------------------------------------------------- the settings column
SCHEDULE = "schedule"  # the scheduler's keys, shown as one setting: constant, or warmup_cosine(warmup_epochs=0, ...)


def settings_keys(records: list[dict], columns: list[str]) -> list[str]:
    """The config keys that differ between the table's rows and are not columns: mostly those a choice explains
    (a rule's tuned lr, momentum, epochs), which grouping does not need but a reader does, to see at a glance what
    else differs between two rows. Left out: `_target_`s (the choices name them); a method.* key where the rules
    that have it agree (each rule's own options, such as fa's `init`, differ from the others' by their presence
    alone); runs without a logged config. The scheduler's keys are one setting, SCHEDULE."""
    with_config = [r for r in records if r.get("config")]
    flat = [flatten(r["config"]) for r in with_config]
    keys = []
    for key in _varying_keys(with_config):
        implied_by_a_choice = key.endswith(("._target_", "._partial_")) and not key.startswith("scheduler.")
        if key in columns or implied_by_a_choice:
            continue
        present = {f[key] for f in flat if key in f}
        if key.startswith("method.") and len(present) < 2:
            continue
        keys.append(SCHEDULE if key.startswith("scheduler.") else key)
    return sorted(dict.fromkeys(keys), key=lambda k: (_reading_order(k), k))


# The order a reader looks for differences in: the optimiser, the budget, then the model and the rule's options.
_ORDER = ("optimizer.", "trainer.", "data.", SCHEDULE, "grad_clip_norm", "model.", "method.")


def _reading_order(key: str) -> int:
    return next((i for i, prefix in enumerate(_ORDER) if key.startswith(prefix)), len(_ORDER))


def settings_of(record: dict, keys: list[str]) -> dict[str, object]:
    """A run's values of the settings keys (those it has; SCHEDULE always)."""
    flat = flatten(record.get("config") or {})
    values = {}
    for key in keys:
        if key == SCHEDULE:
            values[key] = describe_schedule((record.get("config") or {}).get("scheduler"))
        elif key in flat:
            values[key] = flat[key]
    return values


def group_value(record: dict, key: str):
    """A choice (method, scheduler, ...) or a dotted config key (a dotless one is a top-level scalar)."""
    choices = record_choices(record)
    if key in choices:
        return choices[key]
    return flatten(record.get("config") or {}).get(key)


def _sort_key(value):
    """None last, numbers numerically, text alphabetically; 'bp' (the reference) first."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (0 if value == "bp" else 2, 0, str(value))


@dataclass
class Group:
    key: tuple
    runs: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == OK]

    def count(self, status: str) -> int:
        if status == FAILED:  # anything not ok or diverged (an interrupted run has status null)
            return sum(r.get("status") not in (OK, DIVERGED) for r in self.runs)
        return sum(r.get("status") == status for r in self.runs)


def group_records(records: list[dict], keys: list[str]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for record in records:
        key = tuple(group_value(record, k) for k in keys)
        groups.setdefault(key, Group(key)).runs.append(record)
    for group in groups.values():
        group.runs = _one_run_per_seed(group)
    order = [keys.index(k) for k in ("data", "model", "method") if k in keys]
    order += [i for i in range(len(keys)) if i not in order]
    return sorted(groups.values(), key=lambda g: [_sort_key(g.key[i]) for i in order])


def _one_run_per_seed(group: Group) -> list[dict]:
    """A seed run twice with the same settings (a rerun) counts once: the latest run is kept."""
    by_seed: dict = {}
    for record in sorted(group.runs, key=lambda r: str(r.get("started") or "")):
        seed = record.get("seed")
        if seed is not None and seed in by_seed:
            warn(f"seed {seed} appears twice in group {group.key}: keeping {record.get('_source')}, "
                 f"dropping {by_seed[seed].get('_source')}")
        by_seed[seed if seed is not None else id(record)] = record
    return list(by_seed.values())
