"""`edge-llm bench` end to end, results records, and `bench report`'s table and plot."""

import json
import os
import subprocess
import sys

import pytest

from bench import report, store
from bench.errors import BenchError
from tests.conftest import cli

TEXT = "The tablet answers quickly.\n学习机回答得很快。\nprint(3 * 4)\n" * 4


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    (d / "quiz.jsonl").write_text(
        json.dumps({"suite": {"name": "quiz"}})
        + "\n"
        + json.dumps(
            {
                "question": "What is the capital of France?",
                "choices": ["Paris", "a potato"],
                "answer": 0,
            }
        )
        + "\n"
        + json.dumps({"question": "What is 2 + 2?", "answer": "4"})
        + "\n",
        encoding="utf-8",
    )
    (d / "tiny.toml").write_text(
        'name = "tiny"\ncontext = 256\n'
        "[speed]\nprompt_tokens = 16\ngen_tokens = 4\nreps = 1\n"
        "[k12-math]\nn = 2\nmax_tokens = 12\n"
        "[mmlu]\nn = 2\n"
        '[bpb]\nfile = "text.txt"\nn_ctx = 64\n'
        '[[user]]\npath = "quiz.jsonl"\n'
    )
    return d


@pytest.fixture(scope="module")
def bench_run(tiny_suite):
    out = tiny_suite / "results.jsonl"
    r = cli(
        "bench",
        "smollm2-135m-instruct",
        "--suite",
        str(tiny_suite / "tiny.toml"),
        "-o",
        str(out),
        "--device",
        "learning-machine-entry",
        "--recipe",
        "shipped",
        "--threads",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), out, r.stderr


def test_bench_runs_a_model_and_appends_a_record(bench_run, smollm2_path):
    import hashlib
    from importlib.metadata import version

    import gguf

    rec, out, stderr = bench_run
    # the model file's own facts, read by gguf-py and hashlib
    ref = gguf.GGUFReader(smollm2_path)
    n_params = sum(int(t.n_elements) for t in ref.tensors)
    ftype = gguf.LlamaFileType(ref.fields["general.file_type"].contents()).name
    assert "k12-math 2/2" in stderr and "bpb 1/1" in stderr  # progress on stderr
    assert rec["suite"]["name"] == "tiny" and rec["suite"]["version"].startswith("tiny-")
    t = rec["tasks"]
    assert len(t["k12-math"]["items"]) == 2 and t["k12-math"]["chance"] == 0
    assert t["bpb"]["bytes"] == len(TEXT.encode()) and 0 < t["bpb"]["bpb"] < 5
    assert t["user:quiz"]["n"] == 2 and t["user:quiz"]["items"][0]["type"] == "choice"
    if "skipped" not in t["mmlu"]:
        assert t["mmlu"]["n"] == 2
    assert "fidelity" not in t  # not in this suite
    c = rec["compute"]
    assert c["context"] == 256 and c["params_total"] == n_params
    assert c["decode_tokens_per_s"] > 0 and c["peak_rss_bytes"] > 1e8
    assert rec["device"]["threads"] == 1
    if not os.path.isdir("/sys/class/powercap"):
        assert c["energy"]["available"] is False and rec["density"]["per_joule"] is None
    assert rec["density"]["per_gb_read"] == pytest.approx(
        rec["capability"] / (c["bytes_read_per_token"] / 1e9)
    )
    p = rec["projected"]
    assert (
        p["label"] == "projected"
        and p["device"] == "learning-machine-entry"
        and p["decode_tokens_per_s"] > 0
    )
    m = rec["model"]
    assert m["sha256"] == hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    assert ftype == "MOSTLY_" + m["recipe"]["file_type"] and m["recipe"]["label"] == "shipped"
    assert rec["versions"]["llama_cpp_python"] == version("llama_cpp_python")  # the installed one
    # The stored record is the printed one without per-item outputs.
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    stored = json.loads(lines[0])
    assert "items" not in stored["tasks"]["k12-math"]
    assert (
        stored["tasks"]["k12-math"]["answers_digest"] == rec["tasks"]["k12-math"]["answers_digest"]
    )
    assert stored["compute"] == rec["compute"] and stored["model"] == rec["model"]


def test_report_renders_a_table_and_plots(bench_run, tmp_path):
    rec, out, _ = bench_run
    png = tmp_path / "plot.png"
    r = cli("bench", "report", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| model | suite | runs | capability |") and len(lines) == 3
    row = dict(
        zip(
            [c.strip() for c in lines[0].split("|")[1:-1]],
            [c.strip() for c in lines[2].split("|")[1:-1]],
        )
    )
    assert row["capability"] == f"{rec['capability']:.3f}"
    assert row["decode tok/s"] == f"{rec['compute']['decode_tokens_per_s']:.1f}"
    assert row["J/tok"] == "unavailable" or float(row["J/tok"]) > 0
    assert row["device (projected)"] == "learning-machine-entry"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    j = cli("bench", "report", str(out), "--json")
    assert json.loads(j.stdout)[0]["suite"] == rec["suite"]["version"]


def record(name, date, cap, sha="a" * 64, decode=50.0):
    return {
        "schema": 1,
        "date": date,
        "model": {
            "name": name,
            "file": f"{name}.gguf",
            "sha256": sha,
            "recipe": {"file_type": "Q4_1", "label": ""},
        },
        "suite": {"name": "quick", "version": "quick-0123456789ab"},
        "device": {"threads": 2, "profile": None},
        "versions": {"edge_llm": "0.1.0"},
        "tasks": {"k12-math": {"score": cap, "chance": 0.0, "n": 48}, "bpb": {"bpb": 1.25}},
        "capability": cap,
        "compute": {
            "params_total": 134_515_008,
            "params_non_embedding": 106_203_456,
            "flops_per_token": 3.0e8,
            "bytes_read_per_token": 1.0e8,
            "kv_bytes_per_token": 23040.0,
            "prefill_tokens_per_s": 300.0,
            "decode_tokens_per_s": decode,
            "ttft_s": 0.8,
            "peak_rss_bytes": 2.0e8,
            "energy": {"available": False, "reason": "no RAPL"},
        },
        "density": {"per_gflop": cap / 0.3, "per_gb_read": cap / 0.1, "per_joule": None},
        "note": "学习机 ✓",
    }


def test_records_round_trip_through_the_results_file(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    recs = [
        record("m1", "2026-11-23T07:00:00+00:00", 0.25),
        record("m2", "2026-11-23T07:05:00+00:00", 0.5, "b" * 64),
    ]
    for r in recs:
        store.append(path, r)
    assert store.load(path) == recs
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_a_bad_line_is_skipped_with_a_warning_and_missing_files_are_errors(tmp_path):
    path = tmp_path / "results.jsonl"
    store.append(path, record("m1", "2026-11-23T07:00:00+00:00", 0.25))
    with path.open("a") as f:
        f.write('{"truncated": \n{"other": 1}\n')
    warnings = []
    assert len(store.load(path, warn=warnings.append)) == 1
    assert warnings == [
        f"{path}:2 is not a JSON record; skipped",
        f"{path}:3 is not an edge-llm bench record; skipped",
    ]
    with pytest.raises(BenchError, match="no results file at"):
        store.load(tmp_path / "none.jsonl")
    with pytest.raises(ValueError, match="record lacks"):
        store.append(path, {"schema": 1})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "results.jsonl"
    code = (
        "import json, sys; from bench import store\n"
        "rec = json.loads(sys.argv[3])\n"
        "for i in range(40):\n"
        "    rec['model']['name'] = f'p{sys.argv[2]}-{i}'; rec['pad'] = 'x' * 5000 * (i % 3)\n"
        "    store.append(sys.argv[1], rec)\n"
    )
    base = json.dumps(record("m", "2026-11-23T07:00:00+00:00", 0.1))
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(k), base]) for k in range(3)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    recs = store.load(path)
    assert len(recs) == 120 and len({r["model"]["name"] for r in recs}) == 120


def test_report_keeps_the_latest_run_per_model_and_counts_runs(tmp_path):
    recs = [
        record("m1", "2026-11-23T07:00:00+00:00", 0.25),
        record("m1", "2026-11-23T08:00:00+00:00", 0.3),
        record("m2", "2026-11-23T07:30:00+00:00", 0.5, "b" * 64),
    ]
    rows = report.rows(recs)
    assert [(r["model"], r["runs"], r["capability"]) for r in rows] == [
        ("m1 Q4_1", 2, 0.3),
        ("m2 Q4_1", 1, 0.5),
    ]
    assert len(report.rows(recs, every=True)) == 3
    md = report.markdown(rows).splitlines()
    assert len(md) == 4 and "| m1 Q4_1 | quick-0123456789ab | 2 | 0.300 |" in md[2]
    assert md[2].split(" | ")[-4] == "unavailable"  # J/tok
    png = tmp_path / "p.png"
    report.plot(recs, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(BenchError, match="name the file .png"):
        report.plot(recs, tmp_path / "p.svg")


def test_bench_cli_errors_are_one_line(tmp_path):
    for args, message in [
        (("bench", "report", str(tmp_path / "none.jsonl")), "no results file at"),
        (("bench", "nonexistent.gguf", "--no-save"), "model file not found: nonexistent.gguf"),
        (("bench", "--suite", "medium", "--no-save"), "unknown suite 'medium'"),
        (("bench", "--suite", str(tmp_path / "x.toml"), "--no-save"), "suite definition"),
        (("bench", "--device", "toaster", "--no-save"), "unknown device 'toaster'"),
    ]:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert (
            r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.stderr
        )
    fam = tmp_path / "fam.toml"
    fam.write_text(
        "[[model]]\nparams = 1e8\nloss = 1.2\nscore = 0.1\n[[model]]\nparams = 2e8\nloss = 1.1\nscore = 0.2\n"
    )
    r = cli("bench", "--family", str(fam), "--no-save")
    assert r.returncode == 2 and "needs at least 4 models of at least 3 sizes" in r.stderr


def test_bench_help_lists_run_and_report():
    r = cli("bench", "--help")
    assert r.returncode == 0 and "run" in r.stdout and "report" in r.stdout
    r = cli("bench", "run", "--help")
    assert "--suite" in r.stdout and "--device" in r.stdout
