"""``--about --format markdown`` for tap-sage and target-sage.

singer-sdk 0.54 builds the markdown header with ``textwrap.dedent`` around the plugin's
description, so a description of more than one line (target-sage lists its Execute procedures
there) leaves the whole header indented, which Markdown renders as a code block. This formatter,
registered under the same name, renders the header around a one-line placeholder and puts the
real description in afterwards. Importing this module is what registers it.

``SageVersions``: the versions that ``--about``, ``--version`` and every run's first log line
report, for both executables (``tap_sage.startup.package_version``).
"""

from __future__ import annotations

import dataclasses
import inspect

from singer_sdk.about import AboutInfo, MarkdownFormatter
from singer_sdk.plugin_base import PluginBase
from typing_extensions import override

from tap_sage.startup import package_version

_PLACEHOLDER = "\x00description\x00"


class SageMarkdownFormatter(MarkdownFormatter, format_name="markdown"):
    """The SDK's markdown about, with multi-line descriptions kept intact."""

    @override
    def format_about(self, about_info: AboutInfo) -> str:
        description = inspect.cleandoc(about_info.description or "")
        text = super().format_about(dataclasses.replace(about_info, description=_PLACEHOLDER))
        return text.replace(_PLACEHOLDER, description, 1)


class SageVersions(PluginBase):
    """The plugin's and singer-sdk's versions, read without the ``email`` package
    (``package_version``): a base of ``TapSage`` and ``TargetSage``, before the SDK's class."""

    @classmethod
    @override
    def get_plugin_version(cls) -> str:
        """The distribution's version (``package_name``)."""
        return package_version(cls.package_name or cls.name)

    @classmethod
    @override
    def get_sdk_version(cls) -> str:
        """singer-sdk's version."""
        return package_version("singer-sdk")
