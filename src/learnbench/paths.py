"""Where the Hydra configs live, for a clone, an editable install and a wheel alike."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The `conf/` folder: packaged inside a wheel, else the repository's top-level one."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"learnbench cannot find its configs: looked for conf/train.yaml in {_PACKAGE_DIR} "
        f"and {_PACKAGE_DIR.parents[1]}. Reinstall with `make install` from a clone."
    )


CONFIG_DIR = config_dir()
