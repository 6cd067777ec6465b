"""``hftagg init``: a starter project -- config.toml and a plugin template to edit.

Writes ``config.toml`` (simulator -> EMA and the template stage -> pynng publisher, every key
commented) and ``plugins/my_stage.py`` (a complete stage: typed parameters, ports, a vectorised
``process``, live reconfiguration). Existing files are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["PLUGIN_TEMPLATE", "STARTER_CONFIG", "add_parser", "cmd_init", "write_starter"]

STARTER_CONFIG = """\
# hftagg starter pipeline (written by `hftagg init`):
#   simulator -> EMA of trade prices, and my_stage (plugins/my_stage.py) -> pynng publisher
#
#   hftagg run                    # run it (Ctrl-C drains and prints a summary)
#   hftagg config validate        # every problem at once, naming key, value and fix
#   hftagg graph                  # draw the pipeline (mermaid; --format dot or svg)
#   hftagg config params          # every stage type: ports, parameters, live or restart
#   hftagg tail ind.my_stage      # watch the output from another terminal
#
# While it runs, edit this file or plugins/my_stage.py and save: the change is validated and
# applied live (or refused with a message, the pipeline keeping its current config).

[runtime]
status_interval_secs = 1.0        # one status line per interval
plugin_paths = ["plugins"]        # drop-in plugin folders, relative to this file

[data_sources.sim]
type = "simulator"                # the built-in market simulator; a real feed replaces it later
fields = ["trades", "book", "quotes"]   # topics md.trades, md.book, md.quotes
instruments = 4
rate = 10000                      # live: events per second
seed = 1                          # same seed, same events

[processing]
ema_window = 20                   # live: hftagg config set processing.ema_window 30

[stages.my_stage]
type = "my_stage"                 # plugins/my_stage.py: md.trades -> ind.my_stage
multiplier = 1.0                  # live

[delivery]
target = "tcp://127.0.0.1:5555"   # loopback only unless allow_remote = true
pattern = "pub"                   # pub: fan-out; push: lossless with backpressure
topics = ["ind.ema", "ind.my_stage"]

[telemetry]
prometheus = true                 # /metrics and /metrics.json (read by `hftagg top`)
prometheus_address = "127.0.0.1:9464"
"""

PLUGIN_TEMPLATE = '''\
"""my_stage: a template stage -- trade price times a multiplier, one indicator per trade.

Rename ``type_name`` (and the ``[stages.my_stage]`` table that uses it), change ``Params`` and
``process``, save: a running pipeline reloads this file and replaces the stage. Check it with
``hftagg plugins`` and ``hftagg config params my_stage``.

Python runs once per batch: work on whole numpy columns (or a numba kernel), never one record
at a time. Test it like a dataflow::

    from hftagg.testing import TestingSink, TestingSource, run_pipeline
    out = []
    run_pipeline([TestingSource(trade_batches), MyStage(multiplier=2.0), TestingSink(out)])
"""

from hftagg import Params, Port, Stage, hookimpl, live
from hftagg.records import INDICATOR, PRICE_SCALE, copy_header


class MyStageParams(Params):
    # live(...): applied to the running stage from its next batch; restart(...): the stage is
    # rebuilt. Unknown keys and out-of-bounds values are refused when the config is validated.
    multiplier: float = live(1.0, gt=0, le=1e6, description="factor applied to the price")


class MyStage(Stage):
    """Trade price (in price units) times ``multiplier``."""

    kind = "analytics"
    type_name = "my_stage"
    Params = MyStageParams
    # ports: the record schema and the default topic; rewire with topics = { PORT = "topic" }
    inputs = {"trades": Port("trade", "md.trades", "trades to transform")}
    outputs = {"output": Port("indicator", "ind.my_stage", "one value per trade")}

    def process(self, batch):
        out = INDICATOR.empty(len(batch))
        copy_header(batch, out)  # ts_event, ts_recv, seq, instrument_id: seq stays contiguous
        out["value"] = batch["price"] * PRICE_SCALE * self.params.multiplier
        return out

    # Optional:
    # def reconfigure(self, params): ...   # apply live parameters in place (default: adopt them)
    # def snapshot(self): ...              # state to carry across a reload or restart
    # def restore(self, state): ...


@hookimpl
def hftagg_register_stage_types(register):
    register(MyStage)
'''


def write_starter(folder: Path, force: bool = False) -> list[Path]:
    """Write config.toml and plugins/my_stage.py into ``folder``; returns the paths written.

    Refuses (FileExistsError naming the files) when either exists, unless ``force``."""
    files = {
        folder / "config.toml": STARTER_CONFIG,
        folder / "plugins" / "my_stage.py": PLUGIN_TEMPLATE,
    }
    existing = [path for path in files if path.exists()]
    if existing and not force:
        raise FileExistsError(", ".join(str(p) for p in existing))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def cmd_init(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    try:
        written = write_starter(folder, force=args.force)
    except FileExistsError as exc:
        print(
            f"hftagg init: not overwriting {exc}; pass --force to replace, or init another folder",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(f"wrote {path}")
    where = "" if folder.resolve() == Path.cwd() else f"cd {folder} && "
    print(f"next: {where}hftagg config validate && hftagg run")
    return 0


def add_parser(sub) -> None:
    init = sub.add_parser(
        "init",
        help="write a starter config.toml and a plugin template (plugins/my_stage.py)",
        description="Write FOLDER/config.toml (simulator -> EMA and the template stage -> "
        "publisher, every key commented) and FOLDER/plugins/my_stage.py (a complete stage to "
        "copy and edit). Existing files are kept unless --force.",
    )
    init.add_argument("folder", nargs="?", default=".", help="where to write (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(func=cmd_init)
