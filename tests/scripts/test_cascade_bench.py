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
