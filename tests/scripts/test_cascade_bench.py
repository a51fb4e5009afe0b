"""scripts/cascade_bench's measures (RouteLLM's APGR and CPT, the curves) on a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scripts import cascade_bench as cb

# Four items. The device is right on 0 and 3, the cloud on 0, 1 and 3. Confidences put item 1
# lowest, then 2, 3, 0. Escalating the k least confident: k=0 0.5, k=1 (item 1: wrong -> right)
# 0.75, then items 2 (wrong both), 3 and 0 (right both) change nothing.
DEV = np.array([1, 0, 0, 1], bool)
CLOUD = np.array([1, 1, 0, 1], bool)
SCORES = np.array([0.9, 0.1, 0.2, 0.8])


def test_curve_apgr_and_cpt_by_hand():
    acc = cb.curve(SCORES, DEV, CLOUD)
    assert acc.tolist() == [0.5, 0.75, 0.75, 0.75, 0.75]
    # PGR at k/n = 0, .25, .5, .75, 1: 0, 1, 1, 1, 1; area = .25 * (0 + 1) / 2 + .75 = 0.875
    assert cb.apgr(acc) == pytest.approx(0.875)
    assert cb.cpt(acc, 0.5) == 0.25 and cb.cpt(acc, 0.8) == 0.25
    assert cb.at_share(acc, 0.1) == pytest.approx(0.6)  # 0.4 of the way from k=0 to k=1
    # the reverse order escalates the useless items first: item 1 comes last
    worst = cb.curve(-SCORES, DEV, CLOUD)
    assert worst.tolist() == [0.5, 0.5, 0.5, 0.5, 0.75]
    assert cb.apgr(worst) == pytest.approx(0.125) and cb.cpt(worst, 0.5) == 1.0


def test_oracle_and_random():
    assert cb.oracle_curve(DEV, CLOUD).tolist() == [0.5, 0.75, 0.75, 0.75, 0.75]
    # random: the straight line from device-only to cloud-only, APGR exactly one half
    line = np.linspace(0.5, 0.75, 101)
    assert cb.apgr(line) == pytest.approx(0.5)
    assert math.isnan(cb.apgr(np.array([0.5, 0.5])))  # no gap to recover


def test_fraction_of_cloud_and_share_for_a_target_by_hand():
    # at 50% the two least confident (items 1 and 2) go up: outcomes 1, 1, 0, 1 = 0.75, which is
    # all of the cloud's 0.75
    r = cb._of_cloud(SCORES, DEV, CLOUD, 0.5)
    assert r["fraction"] == pytest.approx(1.0)
    assert r["ci95"][0] <= 1.0 <= r["ci95"][1]
    # at 25% (item 1 only) the cascade is already at 0.75; 95% of it (0.7125) needs k = 1
    acc = cb.curve(SCORES, DEV, CLOUD)
    assert cb._share_for(acc, 0.95 * 0.75) == 0.25
    assert cb._share_for(cb.curve(-SCORES, DEV, CLOUD), 0.95 * 0.75) == 1.0
    assert math.isnan(cb._share_for(acc, 0.9))  # no share reaches more than the best curve


def test_cloud_answers_are_reused_only_for_the_same_prompt_and_cloud(tmp_path):
    it = {"prompt": "Q: 2+2\nA:", "max_tokens": 8, "stop": ["\n"]}
    old = {
        "cloud": "big",
        "items": [{"key": cb.item_key(it), "cloud_text": " 4", "cloud_s": 1.5, "cloud_tokens": 9}],
    }
    path = tmp_path / "old.json"
    path.write_text(__import__("json").dumps(old))
    reuse = cb.reusable_cloud(path, "big")

    class NoCloud:  # any call to the cloud fails the test
        def __getattr__(self, name):
            raise AssertionError("the cloud was asked")

    assert cb.ask_cloud(NoCloud(), it, reuse) == (" 4", 1.5, 9)
    other = dict(it, max_tokens=16)  # another generation of the same prompt: not interchangeable
    with pytest.raises(AssertionError):
        cb.ask_cloud(NoCloud(), other, reuse)
    with pytest.raises(SystemExit, match="big's answers, not small's"):
        cb.reusable_cloud(path, "small")
