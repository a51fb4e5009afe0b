"""`edge-llm info`: what a GGUF is, from its header; `--system`: what llama.cpp runs on here."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_llm.cli import options as o


@o.grouped
def info(
    model: o.Model = None,
    as_json: o.Json = False,
    system: Annotated[
        bool,
        typer.Option(
            "--system",
            help="llama.cpp's build here, the CPU kernels it chose for this CPU, its devices;"
            " with a MODEL, also where its layers run (loaded with --device and --gpu-layers).",
        ),
    ] = False,
    where: o.Where = o.AUTO,
) -> None:
    """Architecture, parameters, size, bits per weight, tensor types, context, chat template.

    The file is checked as `edge-llm run` would load it (its header, then llama.cpp in a child
    process): a file that cannot load is an error here too, never shown as fine.
    """
    if system:
        return _system(as_json, model, where)
    from edge_llm import validate
    from edge_llm.registry import model_name, resolve

    path = resolve(model)
    info = validate.check(path)
    s = {**info.summary(), "name": model_name(path, info.metadata)}
    validate.probe(path)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = [
        ("name", s["name"]),
        ("path", s["path"]),
        ("architecture", s["architecture"]),
        ("parameters", f"{s['n_params']:,} ({s['n_params'] / 1e6:.1f} M)"),
        ("file size", f"{s['file_size']:,} bytes ({s['file_size'] / 2**20:.1f} MiB)"),
        ("bits per weight", f"{s['bits_per_weight']:.2f}"),
        ("file type", s["file_type"] or "unknown"),
        ("context length", s["context_length"]),
        ("layers / embedding", f"{s['block_count']} / {s['embedding_length']}"),
        ("heads / kv heads", f"{s['head_count']} / {s['head_count_kv']}"),
        ("vocabulary", s["vocab_size"]),
        ("chat template", "yes" if s["chat_template"] else "no"),
    ]
    for k, v in rows:
        console.print(f"[bold]{k:>18}[/bold]  {v}")
    table = Table(title="tensor types", title_justify="left")
    for col in ("type", "tensors", "parameters", "bytes", "share of bytes"):
        table.add_column(col, justify="right" if col != "type" else "left")
    total = sum(r["bytes"] for r in s["types"].values()) or 1
    for t, r in s["types"].items():
        table.add_row(
            t,
            str(r["tensors"]),
            f"{r['params']:,}",
            f"{r['bytes']:,}",
            f"{100 * r['bytes'] / total:.1f}%",
        )
    console.print(table)


def _placement(model: str, where: o.Where) -> dict:
    """Load MODEL as a run would and report which backend holds which layers."""
    from edge_llm.model import load

    m = load(model, **where.load_kwargs())
    try:
        out = {"model": m.name, **m.placement.to_dict()}
        if m.backend_verdict is not None:
            out["backend_check"] = m.backend_verdict.to_dict()
        return out
    finally:
        m.close()


def _system(as_json: bool, model: str | None = None, where: o.Where = o.AUTO) -> None:
    from edge_llm.llama.binding import system_report

    r = system_report()
    if model is not None:
        r["placement"] = _placement(model, where)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    left_out = ", ".join(r["left_out_variants"])
    rows = [
        ("llama-cpp-python", r["llama_cpp_python"]),
        ("CPU kernels", r["cpu_variant"] or "none"),
        ("compiled for", " ".join(r["cpu_features"]) or "-"),
        ("loaded from", r["cpu_library"] or f"linked into {r['library_dir']}"),
        *((("missing", ", ".join(r["missing_variants"])),) if r["missing_variants"] else ()),
        *((("not loaded", f"{left_out} (AMX: crashes in this llama.cpp)"),) if left_out else ()),
        *((f"device {d['name']}", _device_line(d)) for d in r["devices"]),
        ("llama.cpp", r["system_info"]),
    ]
    if "placement" in r:
        p = r["placement"]
        rows.append((p["model"], p["summary"]))
        for buf, kinds in p["buffers"].items():
            sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in kinds.items())
            rows.append((f"buffer {buf}", sizes))
    for k, v in rows:
        print(f"{k:>18}  {v}")


def _device_line(d: dict) -> str:
    memory = f"{d['memory_total'] / 1e9:.1f} GB, {d['memory_free'] / 1e9:.1f} GB free"
    return f"{d['description']} ({d['type']}; {memory})"
