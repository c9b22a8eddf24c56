"""Inspect a ``torch.export`` archive (``.pt2``) before torch reads it: nothing in it may run code.

``torch.export.load`` (torch 2.13) runs code from the file on several paths, besides the tensors
and the graph an honest ``torch.export.save`` writes:

- pickles read without restriction: a weight or tensor constant whose config entry says
  ``use_pickle`` (``torch.load(weights_only=False)``), an ``opaque_obj_*`` constant
  (``pickle.loads``), a ``custom_obj_*`` TorchBind constant, the legacy ``data/weights/<model>.pt`` /
  ``data/constants/<model>.pt`` files and the sample inputs (both read with ``weights_only=True``,
  then *again* with ``weights_only=False`` when that fails), and the pre-2.8 archive layout
  (``serialized_*.pt`` entries, read the same way);
- compiled AOTInductor libraries under ``data/aotinductor/`` (loaded as native code);
- strings of the graph that become Python: symbolic shape expressions (``expr_str``, parsed by
  ``sympy.sympify``, which is ``eval``), ``guards_code`` (``exec``), the forward's argument names and
  the attribute names of weights (pasted into the source FX generates and ``exec``\\ s), and node
  targets, which torch resolves by attribute lookup on ``torch``, ``operator`` or ``math`` and calls
  when the model runs (``torch.ops.load_library`` would load any shared library).

The rule here is an allowlist, the strictest one that every file ``torch.export.save`` writes for a
plain model passes: only the entries that writer makes; weights and constants as raw tensor bytes;
the one pickle left (the sample inputs) must load under ``torch.load(weights_only=True)``; every node
calls an ATen/registered operator overload, a higher-order operator or a symbolic-int operator;
names are plain identifiers; shape expressions use sympy's constructors and nothing else; no guards
code. Anything else is refused, naming the archive entry, before torch opens the file.
"""

from __future__ import annotations

import io
import json
import keyword
import re
import tokenize
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# the entries torch.export.save writes, relative to the archive's root folder
_FIXED_ENTRIES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_MODEL = r"([A-Za-z_][\w]*)"
_ENTRY_PATTERNS = (
    re.compile(rf"models/{_MODEL}\.json"),
    re.compile(rf"data/weights/{_MODEL}_weights_config\.json"),
    re.compile(r"data/weights/weight_\d+"),
    re.compile(rf"data/constants/{_MODEL}_constants_config\.json"),
    re.compile(r"data/constants/tensor_\d+"),
    re.compile(rf"data/sample_inputs/{_MODEL}\.pt"),
    re.compile(r"extra/[^/]+"),  # read as text by torch, never parsed
)
# why an entry torch would read is refused, by its place in the archive
_REFUSED_PLACES = (
    ("data/aotinductor/", "an AOTInductor compiled library (native code loaded as it is read)"),
    ("data/constants/opaque_obj_", "an opaque object constant (unpickled with pickle.loads)"),
    ("data/constants/custom_obj_", "a TorchBind object constant (unpickled)"),
    ("data/weights/", "a legacy pickled weights file (torch.load falls back to weights_only=False)"),
    ("data/constants/", "a legacy pickled constants file (torch.load falls back to weights_only=False)"),
    ("serialized_", "a pre-2.8 torch.export pickle (torch.load falls back to weights_only=False)"),
)
IDENTIFIER = re.compile(r"[A-Za-z_]\w*", re.ASCII)
# weight and module names: nn.Sequential numbers its children, so "0.weight" is a name too
DOTTED_NAME = re.compile(r"\w+(\.\w+)*", re.ASCII)
# JSON fields whose text torch keeps as text (or writes into generated code with repr, or parses as
# JSON): any characters are fine there
_FREE_TEXT_FIELDS = {
    "stack_trace",
    "nn_module_stack",
    "source_fn_stack",
    "torch_fn",
    "custom",
    "in_spec",
    "out_spec",
    "as_string",
    "as_strings",
    "torch_version",
    "doc_string",
    "from_node",
}


class ArchiveRefused(Exception):
    """An entry of a .pt2 archive that could run code (or is not one torch.export.save writes)."""

    def __init__(self, entry: str, reason: str):
        super().__init__(f"{entry}: {reason}")
        self.entry = entry
        self.reason = reason


def inspect_export_archive(path: Path, *, load_restricted: Callable[[bytes], Any]) -> None:
    """Raise :class:`ArchiveRefused` unless ``path`` holds only what an honest ``torch.export.save``
    writes (see the module docstring); ``zipfile.BadZipFile`` if it is not a readable zip at all.

    ``load_restricted(bytes)`` is ``torch.load(weights_only=True)``: the restricted unpickler torch
    tries first on the sample inputs, so a pickle it accepts never reaches the unrestricted retry.
    """
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                # Python's zipfile reads the last copy, torch's reader another: what is inspected
                # must be what torch loads
                raise ArchiveRefused(name, "appears twice in the archive")
            seen.add(name)
        root = _root_folder(names)
        rel = {n[len(root) + 1 :]: n for n in names}
        for short, full in rel.items():
            _check_entry_place(short, full)
        _check_format(zf, rel, root)
        models = [m.group(1) for s in rel if (m := _ENTRY_PATTERNS[0].fullmatch(s))]
        if not models:
            raise ArchiveRefused(f"{root}/models/", "no exported program in the archive")
        for model in models:
            _check_payload_config(zf, rel, root, f"data/weights/{model}_weights_config.json", "weight_")
            _check_payload_config(zf, rel, root, f"data/constants/{model}_constants_config.json", "tensor_")
            program_entry = rel[f"models/{model}.json"]
            _check_program(_read_json(zf, program_entry), program_entry)
            inputs = f"data/sample_inputs/{model}.pt"
            if inputs in rel:
                _check_restricted_pickle(zf.read(rel[inputs]), rel[inputs], load_restricted)


def _root_folder(names: list[str]) -> str:
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        stray = sorted(n for n in names if "/" not in n) or sorted(roots)
        raise ArchiveRefused(stray[0], "entries outside one root folder (torch.export.save writes <name>/...)")
    return roots.pop()


def _check_entry_place(short: str, full: str) -> None:
    if short in _FIXED_ENTRIES or any(p.fullmatch(short) for p in _ENTRY_PATTERNS):
        return
    for prefix, why in _REFUSED_PLACES:
        if short.startswith(prefix) or short.split("/")[-1].startswith(prefix):
            raise ArchiveRefused(full, why)
    raise ArchiveRefused(full, "not an entry torch.export.save writes, so it is not read")


def _check_format(zf: zipfile.ZipFile, rel: dict[str, str], root: str) -> None:
    from torch.export.pt2_archive.constants import ARCHIVE_FORMAT_VALUE, ARCHIVE_VERSION_VALUE

    for entry, want in (("archive_format", ARCHIVE_FORMAT_VALUE), ("archive_version", ARCHIVE_VERSION_VALUE)):
        if entry not in rel:
            raise ArchiveRefused(f"{root}/{entry}", "missing: not a torch.export archive")
        got = zf.read(rel[entry]).decode(errors="replace")
        if got != want:
            # another value sends torch.export.load to its pre-2.8 reader, which unpickles freely
            raise ArchiveRefused(rel[entry], f"says {got!r}, expected {want!r} (this torch's format)")


def _read_json(zf: zipfile.ZipFile, entry: str) -> Any:
    try:
        return json.loads(zf.read(entry))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveRefused(entry, f"not valid JSON ({exc})") from None


def _check_payload_config(zf: zipfile.ZipFile, rel: dict[str, str], root: str, short: str, prefix: str) -> None:
    """Every weight/constant must be raw tensor bytes (``use_pickle`` false) in a file of this archive."""
    if short not in rel:
        raise ArchiveRefused(f"{root}/{short}", "missing")
    entry = rel[short]
    config = _read_json(zf, entry)
    items = config.get("config") if isinstance(config, dict) else None
    if not isinstance(items, dict):
        raise ArchiveRefused(entry, "no 'config' mapping")
    folder = short.rsplit("/", 1)[0]
    for fqn, meta in items.items():
        where = f"{entry} [{fqn!r}]"
        if not isinstance(fqn, str) or not DOTTED_NAME.fullmatch(fqn):
            raise ArchiveRefused(where, "the name is not a dotted identifier")
        if not isinstance(meta, dict):
            raise ArchiveRefused(where, "not a mapping")
        if meta.get("use_pickle") is not False:
            raise ArchiveRefused(
                where,
                f"use_pickle is {meta.get('use_pickle')!r}: torch would unpickle "
                f"{meta.get('path_name')} with weights_only=False",
            )
        name = meta.get("path_name")
        if not isinstance(name, str) or not re.fullmatch(rf"{prefix}\d+", name) or f"{folder}/{name}" not in rel:
            raise ArchiveRefused(where, f"path_name {name!r} is not a {prefix}N tensor file of this archive")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise ArchiveRefused(where, "no tensor_meta")


def _check_restricted_pickle(data: bytes, entry: str, load_restricted: Callable[[bytes], Any]) -> None:
    try:
        obj = load_restricted(data)
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's message opens with advice to retry unrestricted; the line that says why is further down
        first = next(
            (line for line in lines if "Unsupported" in line or "WeightsUnpickler error" in line),
            lines[0] if lines else type(exc).__name__,
        )
        raise ArchiveRefused(
            entry,
            "a pickle that torch.load(weights_only=True) rejects, which torch.export.load "
            f"would then unpickle without restriction ({first[:200]})",
        ) from None
    if not isinstance(obj, (tuple, dict)):
        raise ArchiveRefused(entry, f"holds a {type(obj).__name__}, expected the sample inputs tuple")


# ---- the exported program (models/<name>.json) ---------------------------------------------------


def _check_program(program: Any, entry: str) -> None:
    if not isinstance(program, dict):
        raise ArchiveRefused(entry, "not an exported program")
    guards = program.get("guards_code") or []
    if guards:
        raise ArchiveRefused(f"{entry} guards_code", f"Python source that torch would exec ({str(guards[0])[:80]!r})")
    for constraint in program.get("range_constraints") or {}:
        if not IDENTIFIER.fullmatch(str(constraint)):
            raise ArchiveRefused(f"{entry} range_constraints", f"symbol {constraint!r} is not an identifier")
    for where, key, value, parent in _strings(program, "$"):
        if key == "target" and isinstance(parent, dict) and "inputs" in parent:
            _check_target(value, f"{entry} {where}")
        elif key == "expr_str":
            _check_python_expression(value, f"{entry} {where}", _sympy_names(), strings=IDENTIFIER)
        elif key in _FREE_TEXT_FIELDS:
            continue
        elif not DOTTED_NAME.fullmatch(value) and value != "":
            raise ArchiveRefused(f"{entry} {where}", f"{value[:80]!r} is not a (dotted) identifier")


def _strings(node: Any, where: str, key: str | None = None, parent: Any = None) -> Iterator[tuple[str, Any, str, Any]]:
    """Every string of a JSON tree with its path, its field name and the object holding it."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not DOTTED_NAME.fullmatch(str(k)) and key not in _FREE_TEXT_FIELDS:
                yield f"{where}", key, str(k), node  # a mapping's key is a name too
            yield from _strings(v, f"{where}.{k}", k, node)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]", key, parent)
    elif isinstance(node, str):
        yield where, key, node, parent


def _check_target(target: str, where: str) -> None:
    """A node may call an operator overload (``torch.ops.ns.op.overload``), a higher-order operator
    (``torch.ops.higher_order.name``) or one of the symbolic-int operators; torch would otherwise
    resolve any attribute of ``torch``/``operator``/``math`` and call it when the model runs."""
    import torch
    from torch._export.serde.serialize import _SYM_OPS

    if target in {f"{op.__module__}.{op.__name__}" for op in _SYM_OPS}:
        return
    parts = target.split(".")
    resolved = None
    if parts[:2] == ["torch", "ops"] and all(IDENTIFIER.fullmatch(p) for p in parts[2:]):
        try:
            if len(parts) == 5:
                resolved = getattr(getattr(getattr(torch.ops, parts[2]), parts[3]), parts[4])
            elif len(parts) == 4 and parts[2] == "higher_order":
                resolved = getattr(torch.ops.higher_order, parts[3])
        except Exception:
            resolved = None
    if not isinstance(resolved, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        raise ArchiveRefused(
            where,
            f"node target {target[:80]!r} is not an operator overload torch knows "
            "(a custom operator must be registered; any other callable is refused)",
        )


_SYMPY_NAMES: frozenset[str] | None = None


def _sympy_names() -> frozenset[str]:
    """Names a shape expression may use: sympy's number/symbol/arithmetic/relational constructors,
    torch's own sympy functions, and assumption keywords (``Symbol('s0', positive=True)``)."""
    global _SYMPY_NAMES
    if _SYMPY_NAMES is None:
        import sympy
        import torch.utils._sympy.functions as torch_functions
        from sympy.core.assumptions import _assume_defined

        core = {
            "Symbol",
            "Dummy",
            "Integer",
            "Rational",
            "Float",
            "Add",
            "Mul",
            "Pow",
            "Mod",
            "Max",
            "Min",
            "Abs",
            "floor",
            "ceiling",
            "sqrt",
            "Eq",
            "Ne",
            "Lt",
            "Le",
            "Gt",
            "Ge",
            "Equality",
            "Unequality",
            "StrictLessThan",
            "StrictGreaterThan",
            "LessThan",
            "GreaterThan",
            "And",
            "Or",
            "Not",
            "Xor",
            "Piecewise",
            "ExprCondPair",
            "Tuple",
            "oo",
            "zoo",
            "nan",
            "pi",
            "E",
            "I",
            "true",
            "false",
            "True",
            "False",
            "None",
            "NegativeOne",
            "One",
            "Zero",
            "Half",
            "Infinity",
            "NegativeInfinity",
            "BooleanTrue",
            "BooleanFalse",
        }
        functions = {
            name
            for name, obj in vars(torch_functions).items()
            if isinstance(obj, type) and issubclass(obj, sympy.Basic)
        }
        _SYMPY_NAMES = frozenset(core | functions | set(_assume_defined) | {"real", "precision"})
    return _SYMPY_NAMES


# tokens that cannot reach an attribute, a subscript, a lambda, an assignment or a statement
_EXPRESSION_OPS = {
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "<",
    ">",
    "<=",
    ">=",
    "==",
    "!=",
    "=",
    "~",
    "&",
    "|",
    "^",
}


def _check_python_expression(text: str, where: str, names: frozenset[str], *, strings: re.Pattern) -> None:
    """``text`` may call only ``names`` (plus symbol names matching ``[a-z]+[0-9]+`` such as ``s77``,
    ``u0``), with numbers, strings that are identifiers, and arithmetic: no attribute access,
    subscripts, lambdas or statements, so eval of it cannot reach anything else."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise ArchiveRefused(where, f"not an expression ({exc})") from None
    for tok in tokens:
        kind, value = tok.type, tok.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER) or (
            kind == tokenize.INDENT and not value.strip()
        ):
            continue
        if kind == tokenize.NUMBER:
            continue
        if (
            kind == tokenize.NAME
            and not keyword.iskeyword(value)
            and (value in names or re.fullmatch(r"[a-z]+\d+", value))
        ):
            continue
        if kind == tokenize.NAME and value in ("True", "False", "None"):
            continue
        if (
            kind == tokenize.STRING
            and re.fullmatch(r"'[^'\\]*'|\"[^\"\\]*\"", value)
            and strings.fullmatch(value[1:-1])
        ):
            continue
        if kind == tokenize.OP and value in _EXPRESSION_OPS:
            continue
        raise ArchiveRefused(
            where,
            f"shape expression {text[:80]!r} uses {value!r}, which is not sympy arithmetic "
            "(torch would eval it with sympy.sympify)",
        )
