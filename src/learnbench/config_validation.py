"""Every option's type and range, checked before any data is loaded or any step is taken.

`validate_config(cfg)` checks the composed config (interpolations resolved) and raises one
`ConfigError` that lists every bad key: its full dotted name, the value given, what it accepts,
and where it was set, e.g.

    optimizer.lr='abc': expected a number > 0 (set on the command line)
    data.batch_size=0: expected an integer >= 1 (conf/experiment/ren_s11_mnist.yaml)
    method.sigam=0.1: learnbench.rules.NodePerturbation has no option 'sigam' (did you mean 'sigma'?); ...

Where the accepted values come from, for each `_target_` node of the config (method, model,
data, optimizer, scheduler, trainer, and any group added later):

1. The target's own signature. A class or function of this suite annotates its parameters with
   the types of `learnbench.options` (`sigma: Positive`, `directions: PositiveInt`,
   `noise: Literal["gaussian", "rademacher"]`); a new rule or family is covered by writing its
   annotations, nothing here. `**kwargs` passed on to a base class are followed along the MRO,
   so the accepted keys are the whole chain's. A key that is not a parameter is refused, with
   the list of accepted keys (third-party targets that take `**kwargs` accept any key).
2. The schemas below, for targets whose signature says too little (torch optimisers, Lightning's
   Trainer, the schedules, the data modules' batching options): small annotated classes
   registered with `@schema_for("<dotted target>")`. A schema registered on a base class
   (torch.optim.Optimizer) applies, by parameter name, to every subclass. A schema's annotation
   replaces the signature's for that key.
3. `TOP_LEVEL`: keys outside any group (seed, grad_clip_norm, diagnostics.every_n_steps, ...).

pydantic validates each value (lax, so [0.9, 0.999] is a tuple), but a value the code would not
get in the right type is refused: a string where a number is asked for ('abc', also '1e-3'), a
float where an integer is (2.0), a number where true/false is.
"""

from __future__ import annotations

import collections.abc
import difflib
import functools
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from annotated_types import Ge, Gt, Interval, Le, Lt, MaxLen, MinLen
from omegaconf import DictConfig, ListConfig, OmegaConf

from learnbench.models.blocks import ACTIVATIONS
from learnbench.options import (
    Fraction,
    HalfOpenFraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Seed,
)

__all__ = ["ConfigError", "REPLACED_OPTIONS", "TOP_LEVEL", "describe", "missing_key_message", "schema_for", "validate_config"]


class ConfigError(ValueError):
    """A config that cannot run; the message says what to change. The one class for every such refusal:
    a bad option here (each bad key, its value and what it accepts) and a combination train.check_config
    refuses (a GPU trainer without CUDA, sequence data without a recurrent model, ...)."""


# ============================================================================= schemas
_SCHEMAS: dict[str, type] = {}


def schema_for(*targets: str):
    """Register an annotated class as the schema of one or more dotted targets (see module doc)."""

    def register(schema: type) -> type:
        for target in targets:
            _SCHEMAS[target] = schema
        return schema

    return register


@schema_for("torch.optim.Optimizer")
class OptimizerOptions:
    """Every torch optimiser (SGD, Adam, AdamW, RMSprop, ...), by parameter name."""

    lr: Positive
    momentum: HalfOpenFraction
    dampening: Fraction
    weight_decay: NonNegative
    eps: Positive
    betas: tuple[HalfOpenFraction, HalfOpenFraction]
    alpha: HalfOpenFraction  # RMSprop's smoothing constant
    nesterov: bool
    amsgrad: bool
    maximize: bool


@schema_for("learnbench.schedules.warmup_cosine", "learnbench.schedules.warmup_linear", "learnbench.schedules.exponential")
class ScheduleOptions:
    warmup_epochs: NonNegative
    min_lr_ratio: Fraction
    decay_per_step: NonNegative


@schema_for("lightning.pytorch.Trainer")
class TrainerOptions:
    """Lightning's Trainer: its own annotations say `int` where only some ints make sense."""

    max_epochs: Union[Literal[-1], PositiveInt, None]  # -1: no limit
    min_epochs: Optional[NonNegativeInt]
    max_steps: Union[Literal[-1], PositiveInt]
    min_steps: Optional[NonNegativeInt]
    devices: Union[PositiveInt, Literal[-1], list[NonNegativeInt], str]
    num_nodes: PositiveInt
    limit_train_batches: Union[NonNegativeInt, Fraction, None]
    limit_val_batches: Union[NonNegativeInt, Fraction, None]
    limit_test_batches: Union[NonNegativeInt, Fraction, None]
    limit_predict_batches: Union[NonNegativeInt, Fraction, None]
    overfit_batches: Union[NonNegativeInt, Fraction]
    val_check_interval: Union[PositiveInt, Annotated[float, Interval(gt=0, le=1)], str, dict[str, int], None]
    check_val_every_n_epoch: Optional[PositiveInt]
    num_sanity_val_steps: Optional[Annotated[int, Ge(-1)]]
    log_every_n_steps: Optional[PositiveInt]
    accumulate_grad_batches: PositiveInt
    gradient_clip_val: Optional[NonNegative]
    reload_dataloaders_every_n_epochs: NonNegativeInt
    fast_dev_run: Union[bool, NonNegativeInt]


# The data modules' shared batching options and the spiral's sizes (their signatures say `int`).
@schema_for("learnbench.data.in_memory.InMemoryDataModule")
class BatchingOptions:
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    seed: Seed
    drop_last: bool


@schema_for("learnbench.data.spiral.SpiralDataModule")
class SpiralOptions:
    arms: Annotated[int, Ge(2)]
    train_per_arm: PositiveInt
    val_per_arm: PositiveInt
    test_per_arm: PositiveInt
    noise: NonNegative
    turns: Positive
    data_seed: NonNegativeInt


Activation = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]  # the names a Block knows


# The models' sizes (their signatures say `int` or `Sequence[int]`): a zero or negative size would build
# a model without units (status ok, 2 parameters) or fail deep inside torch.
@schema_for("learnbench.models.MLP", "learnbench.models.Autoencoder", "learnbench.models.CNN")
class ModelOptions:
    hidden_sizes: collections.abc.Sequence[PositiveInt]
    encoder_sizes: collections.abc.Sequence[PositiveInt]
    bottleneck: PositiveInt
    channels: collections.abc.Sequence[PositiveInt]
    kernel_sizes: collections.abc.Sequence[PositiveInt]
    pool: PositiveInt
    first_padding: Optional[NonNegativeInt]
    activation: Activation


# Keys outside any group: dotted key -> what it accepts.
TOP_LEVEL: dict[str, Any] = {
    "seed": Seed,
    "seeds": Optional[collections.abc.Sequence[Seed]],
    "grad_clip_norm": Optional[Positive],
    "bias_lr_scale": Positive,
    "allreduce_grads": bool,
    "diagnostics.every_n_steps": NonNegativeInt,
    "ckpt_path": Optional[str],
    "optimized_metric": Optional[str],
}

# Options of a target that this suite's training cannot honour: the values that leave them off, and what to
# use instead (train.check_config refuses any other value; given without `+`, the same text says so).
REPLACED_OPTIONS: dict[str, tuple[tuple, str]] = {
    "trainer.gradient_clip_val": ((None, 0), "does not work with manual optimisation: use grad_clip_norm=<value>"),
    "trainer.accumulate_grad_batches": ((None, 1), "does not work with manual optimisation: raise data.batch_size"),
}

# Parameters the code passes in when it builds the object: never set in the config.
SUPPLIED = {
    "model": {"input_shape": "the data module", "input_dim": "the data module", "output_dim": "the data module"},
    "optimizer": {"params": "the training module"},
    "scheduler": {"optimizer": "the training module", "total_steps": "the trainer", "steps_per_epoch": "the data module"},
    "trainer": {"logger": "the logger group (e.g. logger=csv)", "callbacks": "the callbacks group (e.g. callbacks=none)"},
}


# ============================================================================= describing a type
def _number(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else repr(x)


def _bounds(metadata) -> tuple[str, list[str]]:
    """(range text, extra notes) from annotated_types constraints (also inside a pydantic FieldInfo)."""
    lower = upper = None
    notes = []
    for item in metadata:
        for c in getattr(item, "metadata", None) or [item]:  # pydantic's Field(gt=0) holds Gt(0)
            if isinstance(c, Interval):
                for name in ("gt", "ge", "lt", "le"):
                    if getattr(c, name) is not None:
                        lower, upper = _merge(name, getattr(c, name), lower, upper)
            elif isinstance(c, (Gt, Ge, Lt, Le)):
                name = type(c).__name__.lower()
                lower, upper = _merge(name, getattr(c, name), lower, upper)
            elif isinstance(c, MinLen):
                notes.append(f"with at least {c.min_length} items")
            elif isinstance(c, MaxLen):
                notes.append(f"with at most {c.max_length} items")
    if lower and upper:
        left = "[" if lower[0] == ">=" else "("
        right = "]" if upper[0] == "<=" else ")"
        return f"in {left}{_number(lower[1])}, {_number(upper[1])}{right}", notes
    if lower:
        return f"{lower[0]} {_number(lower[1])}", notes
    if upper:
        return f"{upper[0]} {_number(upper[1])}", notes
    return "", notes


def _merge(name, value, lower, upper):
    op = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[name]
    return ((op, value), upper) if name in ("gt", "ge") else (lower, (op, value))


_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)


def describe(tp) -> str:
    """What an annotation accepts, in words: `Annotated[float, Gt(0)]` -> 'a number > 0'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        base = describe(args[0])
        bounds, notes = _bounds(tp.__metadata__)
        return " ".join(part for part in (base, bounds, *notes) if part)
    if tp is Any or tp is inspect.Parameter.empty:
        return "any value"
    if tp is None or tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if len(literals) > 1:  # Literal[-1] | Literal['auto'] reads as one choice
            merged = Literal[tuple(v for lit in literals for v in typing.get_args(lit))]  # type: ignore[misc]
            parts = [describe(merged)] + [describe(a) for a in args if a is not type(None) and a not in literals]
        if type(None) in args:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        values = [_show(v) for v in args]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp in (Path, os.PathLike):
        return "a path"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} values [{', '.join(describe(a) for a in args)}]"
    if origin in _SEQUENCES or tp in _SEQUENCES:
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list (each item {describe(item)})"
    if origin in (dict, collections.abc.Mapping) or tp in (dict, collections.abc.Mapping):
        return "a mapping"
    if isinstance(tp, type):
        return f"a {tp.__name__}"
    return str(tp)


def _show(value) -> str:
    """A value as the user wrote it: 'abc', 0, -1.0, null, true, [64, 0]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ============================================================================= unknown keys
def did_you_mean(key: str, options) -> str:
    """' (did you mean 'a' or 'b'?)' for the options close to `key` (difflib), else ''."""
    close = [repr(name) for name in difflib.get_close_matches(key, list(options), n=3, cutoff=0.6)]
    if not close:
        return ""
    return f" (did you mean {close[0] if len(close) == 1 else ', '.join(close[:-1]) + ' or ' + close[-1]}?)"


def _unknown_option(dotted: str, shown: str, owner: str, options) -> str:
    """'<key>=<value>: <owner> has no option <name> (did you mean ...?); it accepts: ...'."""
    key = dotted.rsplit(".", 1)[-1]
    options = sorted(options)
    return f"{dotted}={shown}: {owner} has no option {key!r}{did_you_mean(key, options)}; it accepts: {', '.join(options)}"


# ============================================================================= checking one value
@functools.lru_cache(maxsize=None)
def _adapter(annotation):
    """A pydantic TypeAdapter for an annotation, or None if pydantic cannot build one (then any value passes)."""
    from pydantic import ConfigDict, TypeAdapter

    for config in (ConfigDict(arbitrary_types_allowed=True), None):
        try:
            return TypeAdapter(annotation, config=config) if config is not None else TypeAdapter(annotation)
        except Exception:
            continue
    return None


def _coerced(raw, result) -> bool:
    """True when pydantic's lax mode converted a value into a type the code would not get from the config."""
    if isinstance(raw, str):
        return isinstance(result, (bool, int, float))
    if isinstance(raw, bool):
        return not isinstance(result, bool)
    if isinstance(raw, float):
        return isinstance(result, (bool, int)) and not isinstance(result, float)
    if isinstance(raw, int):
        return isinstance(result, bool)
    if isinstance(raw, (list, tuple)) and isinstance(result, (list, tuple)) and len(raw) == len(result):
        return any(_coerced(a, b) for a, b in zip(raw, result))
    if isinstance(raw, dict) and isinstance(result, dict):
        return any(k in result and _coerced(v, result[k]) for k, v in raw.items())
    return False


def check_value(key: str, value, annotation) -> str | None:
    """None if `value` fits `annotation`, else '<key>=<value>: expected <what it accepts>'."""
    try:
        hash(annotation)
        adapter = _adapter(annotation)
    except TypeError:  # an unhashable annotation: build it uncached
        adapter = _adapter.__wrapped__(annotation)
    if adapter is None:
        return None
    from pydantic import ValidationError

    detail = ""
    try:
        ok = not _coerced(value, adapter.validate_python(value))
    except ValidationError as error:
        ok = False
        nested = [e for e in error.errors() if e.get("loc") and all(isinstance(p, int) for p in e["loc"])]
        if nested and isinstance(value, (list, tuple)):
            e = nested[0]
            detail = f" (item {e['loc'][0]}: {e['msg'].lower()})"
    except Exception as error:  # a validator of the annotation raised something else
        ok, detail = False, f" ({error})"
    return None if ok else f"{key}={_show(value)}: expected {describe(annotation)}{detail}"


# ============================================================================= signatures
def _hints(func) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # one annotation that does not resolve: resolve the others one by one
        hints = {}
        namespace = getattr(inspect.unwrap(func), "__globals__", {})
        for name, annotation in getattr(func, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            except Exception:
                hints[name] = Any
        return hints


@functools.lru_cache(maxsize=None)
def _schema_objects() -> dict[int, type]:
    """id(resolved target) -> schema, for the registered targets that import."""
    from hydra.utils import get_object

    resolved = {}
    for target, schema in _SCHEMAS.items():
        try:
            resolved[id(get_object(target))] = schema
        except Exception:
            continue
    return resolved


def _schema_hints(obj) -> dict[str, Any]:
    """The schema annotations for a target: its own schema first, then its base classes'."""
    schemas = _schema_objects()
    chain = obj.__mro__ if inspect.isclass(obj) else (obj,)
    hints: dict[str, Any] = {}
    for klass in chain:
        schema = schemas.get(id(klass))
        if schema is not None:
            for name, annotation in _hints(schema).items():
                hints.setdefault(name, annotation)
    return hints


def parameters(target) -> tuple[dict[str, Any], bool]:
    """({parameter: annotation}, open) for a class or function; `open`: it takes any other keyword too.

    A class's `**kwargs` are followed to the base class `__init__` when the class is this suite's
    own (its convention: `super().__init__(**kwargs)`); a third-party one's are taken as open.
    """
    params: dict[str, Any] = {}
    if inspect.isclass(target):
        inits = [k.__dict__["__init__"] for k in target.__mro__ if "__init__" in k.__dict__ and k is not object]
        owners = [k for k in target.__mro__ if "__init__" in k.__dict__ and k is not object]
    else:
        inits, owners = [target], [target]
    is_open = False
    for init, owner in zip(inits, owners):
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            return params, True
        hints = _hints(init)
        is_open = False
        for i, (name, p) in enumerate(signature.parameters.items()):
            if inspect.isclass(target) and i == 0:
                continue  # self
            if p.kind is p.VAR_KEYWORD:
                is_open = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.setdefault(name, hints.get(name, Any))
        if not is_open or not str(getattr(owner, "__module__", "")).startswith("learnbench"):
            break
    params.update({k: v for k, v in _schema_hints(target).items() if k in params})
    return params, is_open


# ============================================================================= where a key was set
def _override_keys() -> set[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return set()
        overrides = HydraConfig.get().overrides.task
    except Exception:
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


def _choices() -> dict[str, str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}
    except Exception:
        pass
    return {}


def _yaml(path: Path) -> tuple[dict, bool]:
    """(content, is it `# @package _global_`) of a config file."""
    text = path.read_text()
    is_global = any(line.replace(" ", "") == "#@package_global_" for line in text.splitlines()[:5])
    return (yaml.safe_load(text) or {}), is_global


def _files(group: str, name: str, config_dir: Path, seen=None) -> list[tuple[Path, str]]:
    """(file, package) for `<group>/<name>.yaml` and the files it pulls in, in composition order
    (its defaults, then itself unless `_self_` says otherwise). Package '' is global."""
    seen = set() if seen is None else seen
    path = config_dir / group / f"{name}.yaml"
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    content, is_global = _yaml(path)
    package = "" if is_global else group.replace("/", ".")
    before: list[tuple[Path, str]] = []
    after: list[tuple[Path, str]] = []
    out = before
    for entry in content.get("defaults", []) if isinstance(content, dict) else []:
        if entry == "_self_":
            out = after
            continue
        if not isinstance(entry, str):  # `override /data: mnist` and other group choices: seen in the choices
            continue
        ref, _, pkg = entry.partition("@")
        ref = ref.removeprefix("optional ").strip()
        sub_group, _, sub_name = (ref[1:] if ref.startswith("/") else f"{group}/{ref}").rpartition("/")
        for file, sub_package in _files(sub_group, sub_name, config_dir, seen):
            out.append((file, {"_here_": package, "_global_": ""}.get(pkg, sub_package)))
    return [*before, (path, package), *after]


def _source(key: str, overrides: set[str], choices: dict[str, str]) -> str:
    """Where a dotted key got its value: the command line, or the last config file that sets it."""
    if key in overrides:
        return "set on the command line"
    try:
        from learnbench.paths import CONFIG_DIR
    except Exception:
        return ""
    group = key.split(".", 1)[0]
    candidates: list[tuple[Path, str]] = []
    try:
        candidates.append((CONFIG_DIR / "train.yaml", ""))
        if group in choices:
            candidates += _files(group, choices[group], CONFIG_DIR)
        for choice in ("budget", "tuned", "experiment", "tuned@_global_", "debug", "local"):
            if choices.get(choice):
                sub_group = choice.split("@", 1)[0]
                files = _files(sub_group, choices[choice], CONFIG_DIR)
                candidates += [(f, "" if choice.endswith("@_global_") else p) for f, p in files]
        found = ""
        for path, package in candidates:
            content, _ = _yaml(path)
            node = content
            for part in [*package.split(".")] if package else []:
                node = {part: node}
            for part in key.split("."):
                node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
            if node is not _ABSENT:
                found = f"{CONFIG_DIR.name}/{path.relative_to(CONFIG_DIR)}"
        return found
    except Exception:
        return ""


_ABSENT = object()


# ============================================================================= the config
def _resolved(node: DictConfig, key: str):
    """(value with interpolations resolved, as plain Python), or _ABSENT when it cannot be resolved here."""
    try:
        value = node[key]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    except Exception:  # `???`, or an interpolation only the running app can resolve: checked where it is used
        return _ABSENT


def _is_special(key: str) -> bool:
    return key.startswith("_") and key.endswith("_")


class _Problem(typing.NamedTuple):
    key: str  # the full dotted key
    text: str  # '<key>=<value>: expected ...'
    via: str = ""  # the interpolation the value came through, e.g. '${seed}'


def _check_target(path: str, node: DictConfig, problems: list[_Problem]) -> None:
    """Check every key of one `_target_` node against its target's parameters."""
    from hydra.utils import get_object

    target_name = _resolved(node, "_target_")
    try:
        target = get_object(target_name)
    except Exception as error:
        problems.append(_Problem(f"{path}._target_", f"{path}._target_={_show(target_name)}: cannot be imported ({error})"))
        return
    accepted, is_open = parameters(target)
    supplied = SUPPLIED.get(path, {})
    for key in map(str, node.keys()):
        if _is_special(key):
            continue
        dotted, raw = f"{path}.{key}", node._get_node(key)
        if isinstance(raw, DictConfig) and "_target_" in raw:  # a nested object
            _check_target(dotted, raw, problems)
            continue
        value = _resolved(node, key)
        if value is _ABSENT:
            continue
        via = str(raw._value()) if raw is not None and raw._is_interpolation() else ""
        if key in supplied:
            problems.append(_Problem(dotted, f"{dotted}={_show(value)}: set by {supplied[key]}, not in the config; remove it", via))
        elif key in accepted:
            problem = check_value(dotted, value, accepted[key])
            if problem:
                problems.append(_Problem(dotted, problem, via))
        elif not is_open:
            options = [k for k in accepted if k not in supplied]
            problems.append(_Problem(dotted, _unknown_option(dotted, _show(value), target_name, options), via))


def known_plain_keys() -> dict[str, set[str]]:
    """The keys a config may hold outside the `_target_` groups: '' -> the top-level keys (train.yaml's own,
    its groups, and what conf/local.example.yaml documents, e.g. `slurm`), 'diagnostics' and 'paths' -> theirs.
    Read from the files, so a key added there is known at once."""
    from learnbench.paths import CONFIG_DIR

    root, _ = _yaml(CONFIG_DIR / "train.yaml")
    # The groups chosen outright (`- data: spiral`) are top-level keys; the optional and null ones
    # (tuned, experiment, sweep, debug, local) merge into the others (`# @package _global_`).
    groups = {
        group for entry in root.get("defaults", []) if isinstance(entry, dict)
        for group, choice in entry.items() if choice is not None and " " not in group and "@" not in group
    }
    top = ({k for k in root if k != "defaults"} | groups) - {"hydra"}  # hydra.* is Hydra's own, never the app's
    for extra in (CONFIG_DIR / "local.example.yaml", CONFIG_DIR / "local" / "default.yaml"):
        if extra.is_file():  # a site's own top-level keys (slurm.*) are read by the launchers
            top |= set(_yaml(extra)[0])
    paths, _ = _yaml(CONFIG_DIR / "paths" / "default.yaml")
    return {"": top, "diagnostics": set(root.get("diagnostics") or {}), "paths": set(paths)}


def _unknown_plain_keys(cfg: DictConfig) -> list[_Problem]:
    """Keys added (with `+`) outside the `_target_` groups that nothing reads: `+grad_clip=1.0` would
    otherwise be accepted and ignored."""
    known = known_plain_keys()
    problems = []
    for path, options in known.items():
        node = cfg if not path else cfg._get_node(path)
        if not isinstance(node, DictConfig) or node._is_none():
            continue
        for key in map(str, node.keys()):
            if key not in options and key != "hydra":
                dotted = f"{path}.{key}" if path else key
                owner = f"{path}" if path else "the config's top level"
                value = _resolved(node, key)
                shown = "..." if value is _ABSENT else _show(value)
                problems.append(_Problem(dotted, _unknown_option(dotted, shown, owner, options)))
    return problems


def missing_key_message(dotted: str, shown: str, node: DictConfig) -> str:
    """What to say when `<dotted>=<value>` (no `+`) names a key that `node`, its parent in the composed config,
    does not have (Hydra's own message suggests adding the typo with `+`)."""
    key = dotted.rsplit(".", 1)[-1]
    if dotted in REPLACED_OPTIONS:
        return f"{dotted} {REPLACED_OPTIONS[dotted][1]}"
    target_name = _resolved(node, "_target_") if "_target_" in node else _ABSENT
    if target_name is _ABSENT:
        path = dotted.rsplit(".", 1)[0] if "." in dotted else ""
        options = known_plain_keys().get(path) or {k for k in map(str, node.keys()) if k != "hydra"}
        return _unknown_option(dotted, shown, path or "the config's top level", options)
    try:
        from hydra.utils import get_object

        accepted, is_open = parameters(get_object(target_name))
    except Exception:
        accepted, is_open = {}, True
    group = dotted.rsplit(".", 1)[0]
    options = [k for k in accepted if k not in SUPPLIED.get(group, {})]
    if key in options or is_open:  # a real option that the config file does not list: Hydra's `+` is right
        return f"{dotted}={shown}: {group}'s config file does not list {key!r}; add it with +{dotted}={shown}"
    return _unknown_option(dotted, shown, target_name, options)


def validate_config(cfg: DictConfig) -> None:
    """Check every option of the composed config; raise one ConfigError listing all bad keys.

    Nothing is loaded or built: the targets are imported and their signatures read, that is all.
    """
    problems: list[_Problem] = _unknown_plain_keys(cfg)
    for group in map(str, cfg.keys()):
        node = cfg._get_node(group)
        if isinstance(node, DictConfig) and not node._is_none() and "_target_" in node:
            _check_target(group, node, problems)
    for key, annotation in TOP_LEVEL.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
        except Exception:
            continue
        if value is not _ABSENT:
            problem = check_value(key, value, annotation)
            if problem:
                problems.append(_Problem(key, problem))
    if not problems:
        return
    overrides, choices = _override_keys(), _choices()
    lines = []
    for problem in problems:
        where = [f"= {problem.via}" if problem.via else "", _source(problem.key, overrides, choices)]
        where = ", ".join(w for w in where if w)
        lines.append(f"{problem.text} ({where})" if where else problem.text)
    if len(lines) == 1:
        raise ConfigError(lines[0])
    raise ConfigError(f"{len(lines)} options are invalid:\n" + "\n".join(f"  {line}" for line in lines))


def check_arguments(init, arguments: dict[str, Any], prefix: str = "method") -> None:
    """Raise ValueError if an argument given to `init` does not fit its annotation (direct construction in
    Python gets the same checks and messages as a config)."""
    hints = _hints(init)
    problems = [check_value(f"{prefix}.{name}", value, hints[name]) for name, value in arguments.items() if name in hints]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("; ".join(problems))
