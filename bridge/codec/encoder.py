"""Generated Avro binary writers: one Python function per schema, compiled once.

`compile_writer(schema)` returns `write(datum) -> bytes` producing exactly the bytes of
`fastavro.schemaless_writer` (tested byte for byte), but specialised: field access by tuple
unpacking, zig-zag varints from a precomputed table, `struct` for float/double, union branch
bytes as constants. Value conventions (docs/internals.md "Value forms"): a record is a tuple in
field order, an enum a symbol (str / `Op`), an array a list, a decimal a `Decimal` (non-finite
ones, or a `str`, go to the union's `string` branch as PostgreSQL's text), dates and timestamps
plain ints. Called per record on the produce path; built per schema by `TableCodec`.
"""

from __future__ import annotations

import decimal
import struct
from collections.abc import Callable
from itertools import count
from typing import Any

from bridge.errors import CodecError, ModifierError

_TABLE_SIZE = 1 << 14  # zig-zag values below this (two varint bytes) come from the table


def _varint_bytes(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


VARINT: tuple[bytes, ...] = tuple(_varint_bytes(z) for z in range(_TABLE_SIZE))
"""VARINT[z]: the varint bytes of an already zig-zagged value z < 2**14."""


_CHUNK: tuple[bytes, ...] = tuple(bytes(((c & 0x7F) | 0x80, (c >> 7) | 0x80)) for c in range(_TABLE_SIZE))
"""_CHUNK[c]: 14 bits as two varint bytes, both with the continuation bit set."""


def _varint_big(z: int) -> bytes:
    # 14 bits per table lookup instead of 7 per loop turn: a timestamp takes 3 turns, not 8.
    b = _CHUNK[z & 0x3FFF]
    z >>= 14
    while z >= _TABLE_SIZE:
        b += _CHUNK[z & 0x3FFF]
        z >>= 14
    return b + VARINT[z]


_UNROLL = 3  # generated code handles 3 chunks (42 bits) inline, `_tail` the rest


def _tail(z: int, bits: int) -> bytes:
    """The rest of a varint after the inline chunks; `bits` is how many bits may remain."""
    if bits <= 0 or z >> bits:
        raise CodecError("integer out of Avro int/long range")
    return _varint_big(z) if z >= _TABLE_SIZE else VARINT[z]


def _big_long(z: int) -> bytes:
    if z >> 64:
        raise CodecError("integer out of Avro long range", zigzag=z)
    return _varint_big(z)


def _big_int(z: int) -> bytes:
    if z >> 32:
        raise CodecError("integer out of Avro int range", zigzag=z)
    return _varint_big(z)


def zigzag_long(v: int) -> bytes:
    """The Avro encoding of one long (used outside generated code, e.g. by tests)."""
    z = (v << 1) ^ (v >> 63)
    return VARINT[z] if z < _TABLE_SIZE else _big_long(z)


# Decimal arithmetic wide enough for numeric(1000, s): scaleb must never round.
_DEC_CTX = decimal.Context(prec=2000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def decimal_unscaled(v: decimal.Decimal, scale: int, limit: int = 0) -> bytes:
    """Two's-complement big-endian bytes of the unscaled value, sized as fastavro sizes them.

    Raises `ModifierError` when the value has more fractional digits than the scale allows, or
    (with `limit` = 10**precision) more digits than the precision allows."""
    n, d = v.scaleb(scale, _DEC_CTX).as_integer_ratio()
    if d != 1:
        raise ModifierError("decimal has more fractional digits than the schema's scale", value=str(v), scale=scale)
    if limit and not -limit < n < limit:
        raise ModifierError("decimal has more digits than the schema's precision", value=str(v), scale=scale)
    return n.to_bytes((abs(n).bit_length() + 8) >> 3, "big", signed=True)


def _too_long(column: str, length: int, v: str) -> ModifierError:
    return ModifierError(f"value longer than the column's length {length}", column=column, length=len(v))


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Gen:
    """Emits the statements of one writer function."""

    def __init__(self, schema: Any) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "T": VARINT, "C": _CHUNK, "_tail": _tail, "_bigl": _big_long, "_bigi": _big_int,
            "_pf": struct.Struct("<f").pack, "_pd": struct.Struct("<d").pack,
            "_dec": decimal_unscaled, "_str": str, "CodecError": CodecError, "_long": _too_long,
        }
        self.named: dict[str, tuple[Any, str]] = {}
        self._ids = count()
        self._collect(schema, "")

    def var(self, stem: str) -> str:
        return f"{stem}{next(self._ids)}"

    def const(self, value: Any) -> str:
        name = self.var("K")
        self.consts[name] = value
        return name

    # -- named types ------------------------------------------------------------------------
    def _collect(self, t: Any, ns: str) -> None:
        if isinstance(t, list):
            for b in t:
                self._collect(b, ns)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in ("record", "enum", "fixed", "error"):
                name = t["name"]
                tns = t.get("namespace", ns) if "." not in name else name.rpartition(".")[0]
                full = name if "." in name else (f"{tns}.{name}" if tns else name)
                self.named[full] = (t, tns)
                self.named.setdefault(name.rpartition(".")[2], (t, tns))
                for f in t.get("fields", ()):
                    self._collect(f["type"], tns)
            elif kind == "array":
                self._collect(t["items"], ns)
            elif kind == "map":
                self._collect(t["values"], ns)
            elif isinstance(kind, (dict, list)):
                self._collect(kind, ns)

    def resolve(self, t: Any, ns: str) -> tuple[Any, str]:
        if isinstance(t, str) and t not in _PRIMITIVES:
            key = t if "." in t else (f"{ns}.{t}" if ns and f"{ns}.{t}" in self.named else t)
            if key not in self.named:
                raise CodecError("unknown named type in schema", type=t)
            return self.named[key]
        if isinstance(t, dict) and isinstance(t.get("type"), (dict, list)):
            return self.resolve(t["type"], ns)
        return t, ns

    # -- emitters -----------------------------------------------------------------------------
    def emit(self, t: Any, v: str, ind: str, ns: str) -> None:
        t, ns = self.resolve(t, ns)
        L = self.lines.append
        kind = t if isinstance(t, str) else (t.get("type") if isinstance(t, dict) else "union")
        if isinstance(t, list):
            self.emit_union(t, v, ind, ns)
        elif kind == "null":
            pass
        elif kind == "boolean":
            L(f"{ind}b += b'\\x01' if {v} else b'\\x00'")
        elif kind in ("int", "long"):
            self.emit_varint(64 if kind == "long" else 32, v, ind)
        elif kind == "float":
            L(f"{ind}b += _pf({v})")
        elif kind == "double":
            L(f"{ind}b += _pd({v})")
        elif kind == "string":
            s = self.var("s")
            L(f"{ind}{s} = {v}.encode()")
            self.emit_bytes(s, ind)
        elif kind == "bytes":
            if isinstance(t, dict) and t.get("logicalType") == "decimal":
                s = self.var("s")
                limit = 10 ** int(t["precision"]) if t.get("precision") else 0
                L(f"{ind}{s} = _dec({v}, {int(t.get('scale', 0))}, {limit})")
                self.emit_bytes(s, ind)
            else:
                self.emit_bytes(v, ind)
        elif kind == "enum":
            table = self.const({sym: VARINT[i << 1] for i, sym in enumerate(t["symbols"])})
            L(f"{ind}b += {table}[{v}]")
        elif kind == "fixed":
            L(f"{ind}b += {v}")
        elif kind in ("array", "map"):
            self.emit_container(t, kind, v, ind, ns)
        elif kind in ("record", "error"):
            self.emit_record(t, v, ind, ns)
        else:
            raise CodecError("unsupported Avro type", type=str(kind))

    def emit_varint(self, bits: int, v: str, ind: str) -> None:
        """Zig-zag varint of an int (32 bits) or long (64 bits)."""
        L = self.lines.append
        z = self.var("z")
        L(f"{ind}{z} = ({v} << 1) ^ ({v} >> {bits - 1})")
        # Unrolled: 14 bits per table lookup, no call for values below 2**42 (timestamps).
        for level in range(_UNROLL):
            # a value that still has more bits than the type allows falls through to `_tail`
            limit = min(_TABLE_SIZE, 1 << max(0, bits - 14 * level))
            L(f"{ind}if {z} < {limit}:")
            L(f"{ind}    b += T[{z}]")
            L(f"{ind}else:")
            ind += "    "
            L(f"{ind}b += C[{z} & 16383]")
            L(f"{ind}{z} >>= 14")
        L(f"{ind}b += _tail({z}, {bits - 14 * _UNROLL})")

    def emit_container(self, t: Any, kind: str, v: str, ind: str, ns: str) -> None:
        """An array or a map: one block of all items, then the end marker."""
        L = self.lines.append
        if kind == "array":
            n, x = self.var("n"), self.var("x")
            L(f"{ind}if {v}:")
            L(f"{ind}    {n} = len({v}) << 1")
            L(f"{ind}    b += T[{n}] if {n} < {_TABLE_SIZE} else _bigl({n})")
            L(f"{ind}    for {x} in {v}:")
            self.emit(t["items"], x, ind + "        ", ns)
            L(f"{ind}b += b'\\x00'")
        else:
            n, k, x = self.var("n"), self.var("k"), self.var("x")
            L(f"{ind}if {v}:")
            L(f"{ind}    {n} = len({v}) << 1")
            L(f"{ind}    b += T[{n}] if {n} < {_TABLE_SIZE} else _bigl({n})")
            L(f"{ind}    for {k}, {x} in {v}.items():")
            self.emit("string", k, ind + "        ", ns)
            self.emit(t["values"], x, ind + "        ", ns)
            L(f"{ind}b += b'\\x00'")

    def emit_record(self, t: Any, v: str, ind: str, ns: str) -> None:
        """A record's fields in order, with the varchar(n)/char(n) length checks."""
        L = self.lines.append
        fields = t["fields"]
        names = [self.var("f") for _ in fields]
        if len(names) == 1:
            L(f"{ind}{names[0]}, = {v}")
        elif names:
            L(f"{ind}{', '.join(names)} = {v}")
        for f, name in zip(fields, names, strict=True):
            length = f.get("pg.length")
            if length and f.get("pg.base") in ("varchar", "bpchar") and not f.get("pg.ndims"):
                # varchar(n) / char(n): a longer value means a widening the lines did not show
                L(f"{ind}if {name} is not None and len({name}) > {int(length)}:")
                L(f"{ind}    raise _long({f.get('pg.name', f['name'])!r}, {int(length)}, {name})")
            self.emit(f["type"], name, ind, ns)

    def emit_bytes(self, s: str, ind: str) -> None:
        n = self.var("n")
        self.lines.append(f"{ind}{n} = len({s}) << 1")
        self.lines.append(f"{ind}b += T[{n}] if {n} < {_TABLE_SIZE} else _bigl({n})")
        self.lines.append(f"{ind}b += {s}")

    def emit_union(self, branches: list[Any], v: str, ind: str, ns: str) -> None:
        L = self.lines.append
        idx = {i: repr(VARINT[i << 1]) for i in range(len(branches))}
        resolved = [self.resolve(b, ns)[0] for b in branches]
        kinds = [b if isinstance(b, str) else b.get("type") for b in resolved]
        rest = list(range(len(branches)))
        first = True
        if "null" in kinds:
            i = kinds.index("null")
            L(f"{ind}if {v} is None:")
            L(f"{ind}    b += {idx[i]}")
            rest.remove(i)
            first = False
        dec = [i for i in rest if isinstance(resolved[i], dict) and resolved[i].get("logicalType") == "decimal"]
        if dec and "string" in kinds and len(rest) == 2:
            d, s = dec[0], kinds.index("string")
            kw = "if" if first else "elif"
            L(f"{ind}{kw} {v}.__class__ is _str:")
            L(f"{ind}    b += {idx[s]}")
            self.emit("string", v, ind + "    ", ns)
            L(f"{ind}elif {v}.is_finite():")
            L(f"{ind}    b += {idx[d]}")
            self.emit(branches[d], v, ind + "    ", ns)
            L(f"{ind}else:")
            L(f"{ind}    b += {idx[s]}")
            t = self.var("t")
            L(f"{ind}    {t} = _str({v})")
            self.emit("string", t, ind + "    ", ns)
            return
        if len(rest) == 1:
            (i,) = rest
            if first:
                L(f"{ind}b += {idx[i]}")
                self.emit(branches[i], v, ind, ns)
            else:
                L(f"{ind}else:")
                L(f"{ind}    b += {idx[i]}")
                self.emit(branches[i], v, ind + "    ", ns)
            return
        raise CodecError("unsupported union (only null + one type, or decimal + string)", union=str(kinds))


def compile_writer(schema: Any, *, prefix: bytes = b"", name: str = "write") -> Callable[[Any], bytes]:
    """Compile `write(datum) -> bytes` for `schema` (a JSON-like dict/list/str), output prefixed
    with `prefix` (the framing). Raises `CodecError` for schema constructs it does not support.

    The function raises whatever the values provoke (`TypeError`, `AttributeError`, `ValueError`,
    `CodecError` for out-of-range ints or excess decimal digits); callers wrap those with context.
    """
    gen = _Gen(schema)
    gen.consts["PREFIX"] = bytes(prefix)
    gen.lines.append("    b = bytearray(PREFIX)")
    gen.emit(schema, "datum", "    ", "")
    # Constants become default arguments: locals are the fastest lookups in CPython.
    params = "".join(f", {k}={k}" for k in gen.consts)
    src = f"def {name}(datum{params}):\n" + "\n".join(gen.lines) + "\n    return bytes(b)\n"
    ns: dict[str, Any] = dict(gen.consts)
    exec(compile(src, f"<avro writer {name}>", "exec"), ns)
    fn: Callable[[Any], bytes] = ns[name]
    fn.__doc__ = src  # the generated source, for debugging
    return fn
