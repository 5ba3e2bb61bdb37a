"""What pyproject.toml cannot say: the top-level ``conf/`` (the primary config and the experiment
groups) ships inside the wheel as ``opd_core/conf/``, and every built-in plugin under
``plugins/`` is a top-level package. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

CORE = find_namespace_packages(where=".", include=["opd_core", "opd_core.*"])
PLUGINS = find_namespace_packages(where="plugins", include=["opd_*"])
CONF = ["opd_core.conf", *(f"opd_core.conf.{p}" for p in find_namespace_packages(where="conf"))]

setup(
    packages=[*CORE, *PLUGINS, *CONF],
    package_dir={
        "opd_core.conf": "conf",
        **{p: f"plugins/{p}" for p in PLUGINS if "." not in p},
    },
)
