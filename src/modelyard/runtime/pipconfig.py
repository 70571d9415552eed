"""Read pip's configuration the way pip does, and translate it into ``uv pip`` arguments.

uv ignores pip's configuration, but on a machine set up for pip (local wheel folders, mirrors,
constraints) model environments must resolve exactly as ``pip install`` would. This module reads the
files pip reads, in pip's order (later ones win, key by key), then the ``PIP_*`` environment
variables, taking the ``[global]`` section overridden by ``[install]``:

1. global: ``$XDG_CONFIG_DIRS/pip/pip.conf`` (default ``/etc/xdg/pip/pip.conf``), ``/etc/pip.conf``
2. user: ``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf`` (skipped when
   ``PIP_CONFIG_FILE`` names an existing file)
3. site: ``<sys.prefix>/pip.conf``
4. ``$PIP_CONFIG_FILE`` (``os.devnull`` disables it)
5. ``PIP_<OPTION>`` environment variables

Only the options that change what gets installed are translated: ``index-url``,
``extra-index-url``, ``find-links``, ``no-index``, ``constraint`` (existing files only),
``trusted-host``, ``pre``, plus ``cert`` and ``timeout``/``default-timeout`` as uv environment
variables.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_LIST_KEYS = ("extra-index-url", "find-links", "constraint", "trusted-host")
_TRUE = {"1", "yes", "true", "on"}


@dataclass(frozen=True)
class PipSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[Path, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()
    pre: bool = False
    cert: str | None = None
    timeout: str | None = None
    sources: tuple[str, ...] = field(default=(), compare=False)  # files read, for diagnostics

    def uv_args(self) -> list[str]:
        """Arguments for ``uv pip install``/``compile`` (index strategy chosen by the caller)."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--default-index", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for path in self.constraints:
            args += ["--constraints", str(path)]
        for host in self.trusted_hosts:
            args += ["--allow-insecure-host", host]
        if self.pre:
            args += ["--prerelease", "allow"]
        return args

    def uv_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment variables to add for uv (never overriding ones already set)."""
        environ = os.environ if environ is None else environ
        env: dict[str, str] = {}
        if self.cert and Path(self.cert).is_file() and "SSL_CERT_FILE" not in environ:
            env["SSL_CERT_FILE"] = self.cert
        if self.timeout and "UV_HTTP_TIMEOUT" not in environ:
            try:
                env["UV_HTTP_TIMEOUT"] = str(int(float(self.timeout)))
            except ValueError:
                pass
        return env

    def local_find_links_dirs(self) -> list[Path]:
        """The ``find-links`` entries that are local directories."""
        out = []
        for link in self.find_links:
            path = Path(link[len("file://") :]) if link.startswith("file://") else Path(link)
            if ("://" not in link or link.startswith("file://")) and path.is_dir():
                out.append(path)
        return out


def config_files(environ: Mapping[str, str] | None = None, prefix: str | None = None) -> list[Path]:
    """pip's configuration files in load order (later wins); existing or not."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home())
    xdg_dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if d]
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs]
    files.append(Path("/etc/pip.conf"))

    env_file = environ.get("PIP_CONFIG_FILE")
    if not (env_file and Path(env_file).exists()):
        files.append(home / ".pip" / "pip.conf")
        files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    files.append(Path(prefix if prefix is not None else sys.prefix) / "pip.conf")
    if env_file and env_file != os.devnull:
        files.append(Path(env_file))
    return files


def _norm(key: str) -> str:
    return key.strip().lower().replace("_", "-").lstrip("-")


def read_pip_config(
    environ: Mapping[str, str] | None = None, prefix: str | None = None
) -> PipSettings:
    """pip's effective install options on this machine (see the module docstring)."""
    environ = os.environ if environ is None else environ
    # (section, key) -> raw value; later files override earlier ones key by key, as in pip.
    merged: dict[tuple[str, str], str] = {}
    sources: list[str] = []
    for path in config_files(environ, prefix):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        sources.append(str(path))
        for section in parser.sections():
            for key, value in parser.items(section):
                merged[(section.lower(), _norm(key))] = value

    values: dict[str, str] = {}
    for section in ("global", "install"):
        for (sec, key), value in merged.items():
            if sec == section:
                values[key] = value
    for name, value in environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            values[_norm(name[4:])] = value

    def lst(key: str) -> tuple[str, ...]:
        return tuple(values.get(key, "").split())

    def flag(key: str) -> bool:
        return values.get(key, "").strip().lower() in _TRUE

    constraints = tuple(Path(c) for c in lst("constraint") if Path(c).is_file())
    index_url = (values.get("index-url") or "").strip() or None
    return PipSettings(
        index_url=index_url,
        extra_index_urls=lst("extra-index-url"),
        find_links=lst("find-links"),
        constraints=constraints,
        no_index=flag("no-index"),
        trusted_hosts=lst("trusted-host"),
        pre=flag("pre"),
        cert=(values.get("cert") or "").strip() or None,
        timeout=(values.get("timeout") or values.get("default-timeout") or "").strip() or None,
        sources=tuple(sources),
    )
