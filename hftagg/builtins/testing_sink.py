"""Built-in plugin: the ``testing_sink`` stage type from :mod:`hftagg.testing`, so a config file
(run by ``hftagg run`` or a live-reload test) can collect records that a test reads back with
``hftagg.testing.collected(key, topic)``."""

from __future__ import annotations

from collections.abc import Callable

from hftagg.hookspecs import hookimpl
from hftagg.stages.base import Stage
from hftagg.testing import TestingSink


@hookimpl
def hftagg_register_stage_types(register: Callable[[type[Stage]], None]) -> None:
    register(TestingSink)
