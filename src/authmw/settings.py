"""authmw configuration: one frozen :class:`Settings`, read from YAML at the edge and checked at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from authmw.errors import ConfigurationError

__all__ = ["Settings", "load_settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """What a configuration file may set; unknown keys are refused, so a typo fails loudly.

    ``store``: the store URL (``--store`` and ``AUTHMW_STORE`` win); ``master_key_file``: where the master
    key lives (``AUTHMW_MASTER_KEY`` / ``AUTHMW_MASTER_KEY_FILE`` win); ``whitelist_limit``: the most entries
    one IP whitelist may hold.
    """

    store: str | None = None
    master_key_file: str | None = None
    whitelist_limit: int = 5

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "configuration") -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"{origin}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for key in ("store", "master_key_file"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigurationError(f"{origin}: {key} must be a string")
        limit = data.get("whitelist_limit", 5)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ConfigurationError(f"{origin}: whitelist_limit must be an integer 1-1000")
        return cls(store=data.get("store"), master_key_file=data.get("master_key_file"), whitelist_limit=limit)


def load_settings(path: str | None) -> Settings:
    """Settings from a YAML file (defaults when ``path`` is None)."""
    if path is None:
        return Settings()
    try:
        import yaml
    except ImportError:
        raise ConfigurationError("--config needs PyYAML: pip install 'authmw[yaml]'") from None
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return Settings()
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping of settings")
    return Settings.from_mapping(data, origin=path)
