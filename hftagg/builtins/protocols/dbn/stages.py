"""Built-in plugin: the ``dbn`` codec family (Databento Binary Encoding, versions 1-3).

Registers the family (``StageContext.codecs["dbn"]``) and the record schemas DBN needs beyond
the catalog: ``instrument_definition``, ``statistics`` and ``imbalance``
(:mod:`hftagg.builtins.protocols.dbn.records`). MBO records use the ``mbo`` schema of
:mod:`hftagg.builtins.core.book.mbo`, registered by the ``book`` plugin. The ``dbn_replay`` source stage
is registered by :mod:`hftagg.builtins.protocols.dbn.replay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hftagg.builtins.protocols import dbn
from hftagg.hookspecs import hookimpl

__all__ = ["DBN_FAMILY", "DbnCodecFamily"]


@dataclass(frozen=True)
class DbnCodecFamily:
    """The DBN codec family: decoders of DBN streams into hftagg batches.

    ``decoder(source_id=, name=)`` is an incremental :class:`hftagg.builtins.protocols.dbn.DbnDecoder`
    (``feed`` bytes, ``take(n)`` batches per port); ``decode_file(path)`` iterates a whole file;
    ``read_metadata(path)`` reads a file's metadata. DBN needs no protocol definition files: its
    layouts are fixed per version and built in.
    """

    name: str = "dbn"
    description: str = "Databento Binary Encoding v1-v3 (plain or zstd): decode to hftagg records"
    versions: tuple[int, ...] = (1, 2, 3)
    ports: dict[str, str] = field(default_factory=lambda: dict(dbn.PORTS))

    def decoder(self, *, source_id: int = 0, name: str = "") -> dbn.DbnDecoder:
        return dbn.DbnDecoder(source_id=source_id, name=name)

    def decode_file(self, path, batch_records: int = 1 << 16):
        return dbn.decode_file(path, batch_records)

    def read_metadata(self, path) -> dbn.DbnMetadata:
        return dbn.read_metadata(path)


DBN_FAMILY = DbnCodecFamily()


@hookimpl
def hftagg_register_codecs(register):
    register(DBN_FAMILY)


@hookimpl
def hftagg_register_schemas(register):
    for schema in dbn.DBN_SCHEMAS:
        register(schema)
