"""Quantization recipes: ordered rules `tensor regex (+ layer range) -> type`, as TOML data.

A recipe (convert/quant/recipes/NAME.toml for the presets, or any file)::

    name = "my-mix"
    description = "..."
    default = "Q4_K"          # the type of a quantizable tensor no rule matches
    file_type = "Q4_K_M"      # optional: general.file_type to record

    [[rule]]
    tensor = 'ffn_down\\.weight$'   # Python regex, searched in the GGUF tensor name
    layers = "0:n/8, 7*n/8:n"       # optional: half-open start:end[:step] ranges; n = blocks
    tied = true                     # optional: only when token_embd is also the output matrix
    type = "Q6_K"
    optional = true                 # optional: do not report the rule when it matches nothing

Rules are tried in order; the first that matches a tensor sets its type. Only the tensors
llama.cpp quantizes (matrices named *.weight) take part; vectors (norms, biases) keep F32.
A type whose block does not divide a tensor's rows becomes llama.cpp's fallback for it
(convert/quant/recipes/types.toml), exactly as llama.cpp's quantizer would do, so the resolved types
are the types the file will hold. The resolved types and the recipe's text are stored in the
GGUF (`edge_llm.recipe.*`, `edge_llm.tensor_types`).
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from convert.errors import ConvertError

# the type table lives in convert.quant.ggml_types; these names are re-exported for recipe users
from convert.quant.ggml_types import TYPES, TypeInfo, fallback, fits, type_info, type_name  # noqa: F401
from convert.quant.quantize import TYPES as OUT

HERE = Path(__file__).parent / "recipes"
KEY_NAME = "edge_llm.recipe.name"
KEY_TEXT = "edge_llm.recipe.toml"
KEY_TYPES = "edge_llm.tensor_types"  # ["blk.0.attn_q.weight=Q4_K", ...]


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp's quantizer gives this tensor a new type: matrices named *.weight
    (llama.cpp's tensor_allows_quantization, for the architectures edge-llm converts)."""
    return len(shape) >= 2 and name.endswith(".weight")


def layer_of(name: str) -> int | None:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else None


# --- layer ranges --------------------------------------------------------------------------------

_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a // b,
    ast.FloorDiv: lambda a, b: a // b,
}


def _eval(expr: str, n: int) -> int:
    """An integer expression in n: + - * / (integer division, as C's for non-negatives)."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id == "n":
            return n
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(expr)

    return int(ev(ast.parse(expr.strip(), mode="eval")))


def layers(spec: str, n: int) -> set[int]:
    """The blocks a range spec names: "a:b[:s]" half-open ranges or single numbers, comma-separated."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split(":")
        if len(bits) == 1:
            out.add(_eval(bits[0], n))
            continue
        if len(bits) > 3:
            raise ValueError(part)
        start = _eval(bits[0], n) if bits[0].strip() else 0
        end = _eval(bits[1], n) if bits[1].strip() else n
        step = _eval(bits[2], n) if len(bits) == 3 and bits[2].strip() else 1
        if step <= 0:
            raise ValueError(part)
        out.update(range(max(start, 0), min(end, n), step))
    return out


# --- recipes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    tensor: str
    type: str
    layers: str | None = None
    tied: bool | None = None
    optional: bool = False

    def describe(self) -> str:
        s = f"tensor '{self.tensor}'"
        if self.layers:
            s += f" layers '{self.layers}'"
        if self.tied is not None:
            s += f" tied={str(self.tied).lower()}"
        return s + f" -> {self.type}"


@dataclass
class Recipe:
    name: str
    default: str
    rules: list[Rule] = field(default_factory=list)
    description: str = ""
    file_type: str | None = None
    text: str = ""  # the TOML it was read from (stored in the GGUF)
    source: str = ""

    @property
    def ftype(self) -> int:
        """llama.cpp's file type to record: ``file_type``, else the default type's plain one."""
        if self.file_type:
            return OUT[self.file_type].ftype
        return ftype_for(self.default) or OUT["Q8_0"].ftype


_FTYPE_OF_TYPE = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_K": "Q5_K_M",
    "Q5_1": "Q5_1",
    "Q5_0": "Q5_0",
    "Q4_K": "Q4_K_M",
    "Q4_1": "Q4_1",
    "Q4_0": "Q4_0",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
    "Q3_K": "Q3_K_M",
    "IQ3_S": "IQ3_S",
    "IQ3_XXS": "IQ3_XXS",
    "Q2_K": "Q2_K",
    "IQ2_S": "IQ2_S",
    "IQ2_XS": "IQ2_XS",
    "IQ2_XXS": "IQ2_XXS",
    "IQ1_M": "IQ1_M",
    "IQ1_S": "IQ1_S",
    "TQ2_0": "TQ2_0",
    "TQ1_0": "TQ1_0",
}


def ftype_for(type_name_: str) -> int | None:
    """The llama.cpp file type named after a tensor type (Q4_K -> Q4_K_M, ...); None for a type
    no plain file type is named after (MXFP4, Q2_0)."""
    name = _FTYPE_OF_TYPE.get(type_name_)
    return OUT[name].ftype if name else None


def presets() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml") if p.stem != "types")


def load(spec: str | Path) -> Recipe:
    """A recipe by preset name (convert/quant/recipes/NAME.toml, case-insensitive) or file path."""
    path = Path(spec)
    if not path.is_file():
        stem = str(spec).lower().replace("-", "_")
        path = HERE / f"{stem}.toml"
        if stem == "types" or not path.is_file():
            raise ConvertError(
                f"no recipe {spec}: not a file and not a preset; presets: {', '.join(presets())}"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"cannot read recipe {path}: {e}; save it as UTF-8 TOML") from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "<recipe>") -> Recipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConvertError(f"recipe {source} is not valid TOML: {e}") from None
    unknown = set(data) - {"name", "description", "default", "file_type", "rule"}
    if unknown:
        raise ConvertError(
            f"recipe {source} has unknown key {sorted(unknown)[0]}; keys: name, description, "
            "default, file_type, [[rule]]"
        )
    if "default" not in data:
        raise ConvertError(f'recipe {source} has no `default` type; add e.g. default = "Q4_K"')
    for key in ("name", "description", "default", "file_type"):
        if key in data and not isinstance(data[key], str):
            raise ConvertError(f"recipe {source}: {key} is {data[key]!r}, not a string")
    rows = data.get("rule", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConvertError(f"recipe {source}: `rule` must be [[rule]] tables")
    default = type_info(data["default"]).name
    file_type = data.get("file_type")
    if file_type is not None:
        if file_type not in OUT:
            raise ConvertError(
                f"recipe {source}: unknown file_type {file_type}; choose one of: {', '.join(OUT)}"
            )
    rules = []
    for i, row in enumerate(rows, 1):
        where = f"recipe {source}, rule {i}"
        bad = set(row) - {"tensor", "type", "layers", "tied", "optional"}
        if bad:
            raise ConvertError(
                f"{where}: unknown key {sorted(bad)[0]}; keys: tensor, type, layers, tied, optional"
            )
        if "tensor" not in row or "type" not in row:
            raise ConvertError(f"{where} needs both `tensor` (a regex) and `type`")
        if not isinstance(row["tensor"], str) or not isinstance(row["type"], str):
            raise ConvertError(f"{where}: `tensor` and `type` must be strings")
        if not isinstance(row.get("layers", ""), str | int) or isinstance(row.get("layers"), bool):
            raise ConvertError(f'{where}: layers must be a string such as "0:n/8, 7*n/8:n"')
        for key in ("tied", "optional"):
            if key in row and not isinstance(row[key], bool):
                raise ConvertError(f"{where}: {key} must be true or false")
        try:
            re.compile(row["tensor"])
        except re.error as e:
            raise ConvertError(
                f"{where}: tensor regex {row['tensor']!r} does not compile ({e})"
            ) from None
        if "layers" in row:
            try:
                layers(str(row["layers"]), 24)
            except (
                ValueError,
                SyntaxError,
                ZeroDivisionError,
                TypeError,
                OverflowError,
                RecursionError,
                MemoryError,
            ):
                raise ConvertError(
                    f"{where}: layers {row['layers']!r} is not a list of start:end[:step] ranges "
                    'over n (e.g. "0:n/8, 7*n/8:n")'
                ) from None
        try:
            rtype = type_info(row["type"]).name
        except ConvertError as e:
            raise ConvertError(f"{where}: {e}") from None
        rules.append(
            Rule(
                str(row["tensor"]),
                rtype,
                str(row["layers"]) if "layers" in row else None,
                row.get("tied"),
                bool(row.get("optional", False)),
            )
        )
    return Recipe(
        name=str(data.get("name") or Path(source).stem),
        default=default,
        rules=rules,
        description=str(data.get("description", "")),
        file_type=file_type,
        text=text,
        source=source,
    )


@dataclass
class Resolution:
    types: dict[str, str]  # quantizable tensor -> the type the file will hold
    wanted: dict[str, str]  # before llama.cpp's fallback for rows the block does not divide
    unmatched: list[Rule]  # non-optional rules that matched no tensor

    def warnings(self) -> list[str]:
        return [f"recipe rule {r.describe()} matched no tensor" for r in self.unmatched]


def resolve(recipe: Recipe, tensors: list[tuple[str, tuple[int, ...]]], n_layer: int) -> Resolution:
    """Per quantizable tensor (name, numpy shape), the type the recipe gives it."""
    names = {n for n, _ in tensors}
    tied = "output.weight" not in names
    compiled = [
        (r, re.compile(r.tensor), layers(r.layers, n_layer) if r.layers else None)
        for r in recipe.rules
    ]
    used = [False] * len(compiled)
    types, wanted = {}, {}
    for name, shape in tensors:
        if not quantizable(name, shape):
            continue
        chosen = recipe.default
        blk = layer_of(name)
        for i, (rule, rx, lay) in enumerate(compiled):
            if not rx.search(name):
                continue
            if rule.tied is not None and rule.tied != tied:
                continue
            if lay is not None and (blk is None or blk not in lay):
                continue
            chosen, used[i] = rule.type, True
            break
        wanted[name] = chosen
        types[name] = fallback(chosen, shape[-1])
    unmatched = [r for (r, _, _), u in zip(compiled, used) if not u and not r.optional]
    return Resolution(types, wanted, unmatched)


def check_imatrix(types: dict[str, str], has_imatrix: bool) -> None:
    if has_imatrix:
        return
    for name, t in types.items():
        if TYPES[t].needs_imatrix and name not in ("token_embd.weight", "output.weight"):
            raise ConvertError(
                f"{name} would be {t}, which llama.cpp quantizes only with an importance matrix; "
                "pass --imatrix FILE or --imatrix auto"
            )


def explicit(
    name: str, types: dict[str, str], description: str = "", default: str | None = None
) -> Recipe:
    """A recipe that names every tensor's type (how a size-budget file records its choice)."""
    default = default or max(set(types.values()), key=list(types.values()).count)
    lines = [f"name = {_q(name)}"]
    if description:
        lines.append(f"description = {_q(description)}")
    lines += [f"default = {_q(default)}", ""]
    for tname, t in types.items():
        if t == default:
            continue
        lines += ["[[rule]]", f"tensor = {_q('^' + re.escape(tname) + '$')}", f"type = {_q(t)}", ""]
    text = "\n".join(lines)
    return parse(text, source=name)


def _q(s: str) -> str:
    return (
        "'" + s + "'"
        if "'" not in s and "\n" not in s
        else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    )


def metadata(recipe: Recipe, types: dict[str, str]) -> dict:
    """The GGUF keys that record how a file was made."""
    return {
        KEY_NAME: recipe.name,
        KEY_TEXT: recipe.text,
        KEY_TYPES: [f"{n}={t}" for n, t in types.items()],
    }


def read_metadata(path: str | Path) -> dict:
    """The recipe keys of a GGUF: {"name", "toml", "types": {tensor: type}} (empty if none)."""
    from edge_llm import gguf_info

    meta = gguf_info.read(path).metadata
    if KEY_NAME not in meta:
        return {}
    pairs = [s.split("=", 1) for s in meta.get(KEY_TYPES, [])]
    return {"name": meta[KEY_NAME], "toml": meta.get(KEY_TEXT, ""), "types": dict(pairs)}
