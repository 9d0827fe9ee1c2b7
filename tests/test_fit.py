"""Tests of analysis.fit: methods A, A-exact, B, C1, C2, D1, D2 and the joint variants.

Check values: SPEC §8 (method B, 4 decimals) and the reference analysis' own tables (the
research code of Lindeberg et al., tonylindeberg/masterfiltmodel, model-fitting/filteranal.py,
which lists the grid-search results to 16 digits). Expensive fits are cached in
module-scoped fixtures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scalespace_mk.analysis import fit as fit_mod
from scalespace_mk.analysis.filters import load_filters
from scalespace_mk.analysis.fit import (
    JOINT_GROUPS,
    METHODS,
    FitResult,
    fit_filter,
    fit_filters,
    model_distance,
)
from scalespace_mk.analysis.normalize import normalize_filters
from scalespace_mk.analysis.spread import reference_weights, spread, weighted_spread
from scalespace_mk.scalespace.models import masterkey_model

# SPEC §8 check values for method B: (sigma_x, sigma_y); 7: (sigma, alpha)
SPEC_B = {
    1: (0.6445, 0.5829),
    2: (0.5858, 0.6440),
    3: (0.6898, 0.6740),
    4: (0.7560, 0.4596),
    5: (1.1067, 0.9448),
    6: (0.9004, 0.8889),
    7: (0.6754, 0.5256),
    8: (0.6095, 0.6012),
}
# the same values from the reference analysis' table (grid + parabolic refinement)
REF_B = {
    1: (0.644467181641027, 0.5828832090268337),
    2: (0.5857839906147607, 0.6439526929438278),
    3: (0.6898322629693772, 0.6740337546526619),
    4: (0.756029853407984, 0.4595702668204834),
    5: (1.1066640009337496, 0.944777139036421),
    6: (0.9003583091930647, 0.888872322603157),
    8: (0.6094604392295698, 0.6011991729854481),
}
# reference constants C of SPEC §7 as used by the reference analysis (interpolated)
REF_C = {7: -0.011775472973773075, 8: -0.0386329733224079}
# reference grid-search results of the other methods: (sigma_x, sigma_y) or sigma;
# 7: (sigma, alpha)
REF_C1 = {
    1: (0.36015075376884426, 0.5104522613065327),
    2: (0.5546733668341708, 0.4531658291457286),
    3: (0.7006532663316583, 0.6551256281407035),
    4: (0.562713567839196, 0.3843718592964824),
    5: (1.3092964824120603, 0.8752763819095477),
    6: (0.9728140703517588, 1.1711557788944722),
    8: (0.6366331658291458, 0.5866331658291457),
}
REF_C2 = {
    1: 0.4580194313955851,
    2: 0.4482463177756579,
    3: 0.6711849867963244,
    4: 0.4203522130670464,
    5: 1.3873955463956178,
    6: 1.0902606031644924,
    8: 0.6119728613663912,
}
REF_C7 = (0.6537688442211055, 0.521608040201005)
REF_CJ = {0: 0.6074435027601324, 1: 1.1329249680353086}
REF_D1 = {
    1: (0.4912060301507538, 0.7224120603015075),
    2: (0.581356783919598, 0.518643216080402),
    3: (0.48311557788944726, 0.5028643216080402),
    4: (0.5009547738693467, 0.0002),
    5: (1.299748743718593, 1.0042713567839197),
    6: (0.9842713567839196, 1.0737688442211055),
    8: (0.6156281407035176, 0.608140703517588),
}
REF_D2 = {
    1: 0.6440209979383456,
    2: 0.5580021518662255,
    3: 0.4951507717698759,
    4: 0.37962065829063185,
    5: 1.1934352970554198,
    6: 1.0382624689911877,
    8: 0.6118535135425845,
}
REF_D7 = (0.6753768844221105, 0.5256281407035176)
REF_DJ = {0: 0.5216205270928954, 1: 1.10817570616526}

L2_METHODS = ("A", "A-exact", "B", "D1", "D2", "A-joint", "B-joint", "D-joint")
L1_METHODS = ("C1", "C2", "C-joint")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny batched kernels are much faster single-threaded (the fits do this themselves)."""
    with fit_mod._one_thread():
        yield


@pytest.fixture(scope="module")
def filters() -> np.ndarray:
    return load_filters()


@pytest.fixture(scope="module")
def normalized(filters) -> np.ndarray:
    return normalize_filters(filters).filters


@pytest.fixture(scope="module")
def published(filters) -> dict[str, FitResult]:
    """Every method on the 8 published filters, computed once."""
    return {m: fit_filters(filters, method=m) for m in METHODS}


def _model(t, sx, sy=None, alpha=None):
    if t == 7:
        return np.asarray(masterkey_model(7, sx, alpha=alpha))
    return np.asarray(masterkey_model(t, sx, sy))


# generated filters: each type at known scales (7: sigma, alpha)
TRUE_SEP = {
    1: (0.55, 0.7),
    2: (0.65, 0.5),
    3: (0.45, 0.6),
    4: (0.6, 0.4),
    5: (0.9, 0.6),
    6: (0.7, 1.0),
    7: (0.65, 0.5),
    8: (0.6, 0.75),
}
TRUE_COMMON = {1: 0.55, 2: 0.65, 3: 0.45, 4: 0.6, 5: 0.9, 6: 0.7, 7: (0.65, 0.5), 8: 0.75}
TRUE_JOINT = {0: 0.62, 1: 0.95}  # group {1,2,3,4,8}, group {5,6}


def _generated(kind: str) -> np.ndarray:
    out = []
    for t in range(1, 9):
        if t == 7:
            out.append(_model(7, 0.65, alpha=0.5))
        elif kind == "sep":
            out.append(_model(t, *TRUE_SEP[t]))
        elif kind == "common":
            out.append(_model(t, TRUE_COMMON[t], TRUE_COMMON[t]))
        else:
            s = TRUE_JOINT[0] if t in JOINT_GROUPS[0] else TRUE_JOINT[1]
            out.append(_model(t, s, s))
    return np.stack(out)


@pytest.fixture(scope="module")
def recovered() -> dict[str, FitResult]:
    """Fits of filters generated from the models (used as their own h~, normalize=False)."""
    sets = {"sep": _generated("sep"), "common": _generated("common"), "joint": _generated("j")}
    plan = {
        "B": "sep",
        "C1": "sep",
        "D1": "sep",
        "C2": "common",
        "D2": "common",
        "B-joint": "joint",
        "C-joint": "joint",
        "D-joint": "joint",
    }
    return {m: fit_filters(sets[k], method=m, normalize=False) for m, k in plan.items()}


# --------------------------------------------------------------------------- method B


def test_method_b_spec_check_values(published):
    res = published["B"]
    for f in res:
        a, b = SPEC_B[f.index]
        second = f.alpha if f.index == 7 else f.sigma_y
        assert abs(f.sigma_x - a) <= 1e-4, (f.index, f.sigma_x, a)
        if f.index == 7:
            # alpha of filter 7 depends on the constant C7 of SPEC §7: the exact minimiser
            # (-0.011767, a kink) gives alpha = 0.52665, 1.05e-3 above the check value that the
            # reference obtained with its interpolated C7 = -0.0117755 (see the next test)
            assert abs(second - b) <= 1.2e-3, (f.index, second, b)
        else:
            assert abs(second - b) <= 1e-4, (f.index, second, b)


def test_method_b_matches_reference_table_for_derivative_filters(published):
    # filters 1-6 do not depend on the constant C: agreement to 1e-7 (the reference's
    # parabolic grid refinement is the limiting precision)
    for f in published["B"].fits[:6]:
        rx, ry = REF_B[f.index]
        assert abs(f.sigma_x - rx) < 1e-7 and abs(f.sigma_y - ry) < 1e-7, f


@pytest.mark.parametrize("k", [7, 8])
def test_reference_constant_c_reproduces_reference_values(filters, k):
    """With the reference analysis' own C (not the exact minimiser), its values come back."""
    h = filters[k - 1] - REF_C[k]
    h = h / h.sum()
    fit = fit_filter(h, k, method="B", normalize=False)
    if k == 8:
        assert abs(fit.sigma_x - REF_B[8][0]) < 1e-7 and abs(fit.sigma_y - REF_B[8][1]) < 1e-7
    else:  # reference: grid search, step ~0.002 in (sigma, alpha)
        assert abs(fit.sigma_x - REF_D7[0]) < 1e-4 and abs(fit.alpha - REF_D7[1]) < 1e-4


def test_method_b_matches_weighted_variances(published, normalized):
    """B's defining property: model and filter have equal weighted variances per axis."""
    w = reference_weights(None, 1.0)
    target = spread(normalized, weights=w).cov
    for f in published["B"]:
        if f.filter_type == 7:
            continue
        i = f.index - 1
        vx = spread(_model(f.filter_type, f.sigma_x, 1.0), weights=w[i]).cov[0, 0, 0]
        vy = spread(_model(f.filter_type, 1.0, f.sigma_y), weights=w[i]).cov[0, 1, 1]
        assert abs(vx - target[i, 0, 0]) < 1e-12 and abs(vy - target[i, 1, 1]) < 1e-12


def test_method_b_reports_missing_root():
    h = np.zeros((7, 7))
    h[0, 0] = h[0, 6] = h[6, 0] = h[6, 6] = 0.25  # all weight in the corners: V = 9
    with pytest.raises(ValueError, match="method 'B'.*no sigma_x"):
        fit_filter(h, 8, method="B", normalize=False)


# --------------------------------------------------------------------------- C7, C8


def test_normalisation_constants(filters):
    res = normalize_filters(filters)
    assert abs(res.offset[6] - (-0.01177)) <= 2e-5
    assert abs(res.offset[7] - (-0.03864)) <= 2e-5


# --------------------------------------------------------------------------- A, A-exact


def test_method_a_is_the_self_weighting_relation(published, filters):
    from scalespace_mk.scalespace.symbolic import (
        sigma_from_self_weighted_variance,
        sigma_from_weighted_variance,
    )

    cov = weighted_spread(normalize_filters(filters).filters).cov
    orders = {1: (0, 1), 2: (1, 0), 3: (0, 1), 4: (1, 0), 5: (1, 0), 6: (0, 1), 8: (0, 0)}
    for fa, fe in zip(published["A"], published["A-exact"], strict=True):
        t = fa.filter_type
        if t == 7:
            continue
        vx, vy = cov[t - 1, 0, 0], cov[t - 1, 1, 1]
        ox, oy = orders[t]
        assert fa.sigma_x == pytest.approx(sigma_from_self_weighted_variance(ox, vx), abs=1e-12)
        assert fa.sigma_y == pytest.approx(sigma_from_self_weighted_variance(oy, vy), abs=1e-12)
        assert fe.sigma_x == pytest.approx(sigma_from_weighted_variance(ox, vx, 1.0), abs=1e-12)
        assert fe.sigma_y == pytest.approx(sigma_from_weighted_variance(oy, vy, 1.0), abs=1e-12)
        # independent closed forms: sqrt(2V/(2n+1)) and sigma_r^2 V' / (sigma_r^2 - V')
        for v, o, sa, se in ((vx, ox, fa.sigma_x, fe.sigma_x), (vy, oy, fa.sigma_y, fe.sigma_y)):
            vn = v / (3.0 if o else 1.0)
            assert sa == pytest.approx(math.sqrt(2 * vn), abs=1e-12)
            assert se == pytest.approx(math.sqrt(vn / (1.0 - vn)), abs=1e-12)


def test_method_a_exact_reports_unreachable_variance():
    h = np.zeros((7, 7))
    h[0, 0] = h[0, 6] = h[6, 0] = h[6, 6] = 0.25
    with pytest.raises(ValueError, match="A-exact.*no finite scale"):
        fit_filter(h, 8, method="A-exact", normalize=False)


def test_method_a_approximates_generated_scales():
    """The continuous self-weighting relation is an approximation: within 0.12 pixels."""
    h = _generated("sep")
    res = fit_filters(h, method="A", normalize=False)
    for f in res:
        if f.filter_type != 7:
            sx, sy = TRUE_SEP[f.filter_type]
            assert abs(f.sigma_x - sx) < 0.12 and abs(f.sigma_y - sy) < 0.12, f


# --------------------------------------------------------------------------- type 7


def test_filter7_same_in_all_l2_methods_and_all_l1_methods(published):
    d = published["D2"][6]
    c = published["C2"][6]
    for m in L2_METHODS:
        f = published[m][6]
        assert (f.sigma_x, f.sigma_y, f.alpha) == (d.sigma_x, d.sigma_x, d.alpha), m
    for m in L1_METHODS:
        f = published[m][6]
        assert (f.sigma_x, f.sigma_y, f.alpha) == (c.sigma_x, c.sigma_x, c.alpha), m
    assert all(published[m][i].alpha is None for m in METHODS for i in range(8) if i != 6)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_filter7_beats_dense_grid(published, normalized, norm):
    fit = published["C2" if norm == "l1" else "D2"][6]
    s = np.arange(0.0, 1.5 + 1e-9, 0.005)
    a = np.arange(0.0, 1.5 + 1e-9, 0.005)
    ss, aa = (v.reshape(-1) for v in np.meshgrid(s, a, indexing="ij"))
    grid = model_distance(normalized[6], 7, ss, alpha=aa, norm=norm)
    best = getattr(fit, norm)
    assert best <= grid.min() + 1e-12
    # and better than the reference analysis' published (sigma, alpha)
    ref = REF_C7 if norm == "l1" else REF_D7
    assert best <= float(model_distance(normalized[6], 7, ref[0], alpha=ref[1], norm=norm))


# --------------------------------------------------------------------------- C and D vs grids


def _dense_sep(hn: np.ndarray, t: int, norm: str, step: float = 0.01) -> float:
    s = np.arange(0.0, 2.0 + 1e-9, step)
    sx, sy = (v.reshape(-1) for v in np.meshgrid(s, s, indexing="ij"))
    return float(model_distance(hn, t, sx, sy, norm=norm).min())


@pytest.mark.parametrize("method", ["C1", "D1"])
def test_separate_fits_beat_dense_grid_and_reference(published, normalized, method):
    norm = "l1" if method == "C1" else "l2"
    ref = REF_C1 if method == "C1" else REF_D1
    for f in published[method]:
        if f.filter_type == 7:
            continue
        hn = normalized[f.index - 1]
        value = getattr(f, norm)
        assert value <= _dense_sep(hn, f.filter_type, norm) + 1e-12, f
        at_ref = float(model_distance(hn, f.filter_type, *ref[f.index], norm=norm))
        assert value <= at_ref + 1e-12, (f, at_ref)
        # the same optimum as the reference grid search (grid step 1e-4 .. 2e-3)
        assert abs(f.sigma_x - ref[f.index][0]) < 5e-3 and abs(f.sigma_y - ref[f.index][1]) < 5e-3


@pytest.mark.parametrize("method", ["C2", "D2"])
def test_common_fits_beat_dense_grid_and_reference(published, normalized, method):
    norm = "l1" if method == "C2" else "l2"
    ref = REF_C2 if method == "C2" else REF_D2
    s = np.arange(0.0, 3.0 + 1e-9, 1e-4)
    for f in published[method]:
        if f.filter_type == 7:
            continue
        assert f.sigma_x == f.sigma_y
        hn = normalized[f.index - 1]
        value = getattr(f, norm)
        assert value <= model_distance(hn, f.filter_type, s, norm=norm).min() + 1e-12
        at_ref = float(model_distance(hn, f.filter_type, ref[f.index], norm=norm))
        assert value <= at_ref + 1e-12
        assert abs(f.sigma_x - ref[f.index]) < 1e-3


def test_d2_is_stationary(published, normalized):
    """First-order optimality of the smooth l2 fit (central differences)."""
    for f in published["D2"]:
        if f.filter_type in (7,) or f.sigma_x == 0:
            continue
        hn = normalized[f.index - 1]
        e = 1e-5
        lo, hi = (float(model_distance(hn, f.filter_type, f.sigma_x + d) ** 2) for d in (-e, e))
        assert abs(hi - lo) / (2 * e) < 1e-6, f


# --------------------------------------------------------------------------- joint variants


def _group_members(res: FitResult, g: int) -> list:
    return [f for f in res if f.filter_type in JOINT_GROUPS[g]]


@pytest.mark.parametrize("method", ["A-joint", "B-joint"])
def test_geometric_mean_joint(published, method):
    base = published[method[0]]
    joint = published[method]
    for g in range(2):
        members = _group_members(base, g)
        logs = [math.log(f.sigma_x) + math.log(f.sigma_y) for f in members]
        expected = math.exp(sum(logs) / (2 * len(members)))
        for f in _group_members(joint, g):
            assert f.sigma_x == f.sigma_y == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("method", ["C-joint", "D-joint"])
def test_summed_distance_joint(published, normalized, method):
    norm = "l1" if method == "C-joint" else "l2"
    ref = REF_CJ if method == "C-joint" else REF_DJ
    s = np.arange(0.0, 3.0 + 1e-9, 1e-4)
    for g in range(2):
        members = _group_members(published[method], g)
        sigma = members[0].sigma_x
        assert all(f.sigma_x == f.sigma_y == sigma for f in members)

        def total(x, members=members):
            vals = [
                model_distance(normalized[f.index - 1], f.filter_type, x, norm=norm)
                for f in members
            ]
            return sum(v if norm == "l1" else v**2 for v in vals)

        value = float(total(sigma))
        assert value <= total(s).min() + 1e-12
        assert value <= float(total(ref[g])) + 1e-12
        assert abs(sigma - ref[g]) < 1e-3


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("method", ["B", "C1", "D1"])
def test_recovers_separate_scales(recovered, method):
    for f in recovered[method]:
        if f.filter_type == 7:
            assert abs(f.sigma_x - 0.65) < 1e-6 and abs(f.alpha - 0.5) < 1e-6
        else:
            sx, sy = TRUE_SEP[f.filter_type]
            assert abs(f.sigma_x - sx) < 1e-6 and abs(f.sigma_y - sy) < 1e-6, (method, f)
        assert f.l2 < 1e-6


@pytest.mark.parametrize("method", ["C2", "D2"])
def test_recovers_common_scale(recovered, method):
    for f in recovered[method]:
        if f.filter_type == 7:
            assert abs(f.sigma_x - 0.65) < 1e-6 and abs(f.alpha - 0.5) < 1e-6
        else:
            assert abs(f.sigma_x - TRUE_COMMON[f.filter_type]) < 1e-6, (method, f)


@pytest.mark.parametrize("method", ["B-joint", "C-joint", "D-joint"])
def test_recovers_joint_scale(recovered, method):
    for f in recovered[method]:
        if f.filter_type == 7:
            continue
        g = 0 if f.filter_type in JOINT_GROUPS[0] else 1
        assert abs(f.sigma_x - TRUE_JOINT[g]) < 1e-6 and f.sigma_x == f.sigma_y, (method, f)


def test_recovery_after_normalisation_is_close():
    """Normalising a paper-mode model is not the identity (its 7x7 response to x is not
    exactly 1), so the fit of the normalised model is close to, not equal to, the truth."""
    h = _generated("sep")
    res = fit_filters(h, method="D1")
    for f in res:
        if f.filter_type != 7:
            sx, sy = TRUE_SEP[f.filter_type]
            assert abs(f.sigma_x - sx) < 0.05 and abs(f.sigma_y - sy) < 0.05, f


def test_sigma_zero_is_reachable():
    g = _model(4, 0.5, 0.0)  # a half-grid difference along x, no smoothing along y
    f = fit_filter(g, 4, method="D1", normalize=False)
    assert f.sigma_y == 0.0 and abs(f.sigma_x - 0.5) < 1e-6


# --------------------------------------------------------------------------- results


def test_result_norms_and_arrays(published, normalized):
    for m in METHODS:
        res = published[m]
        assert len(res) == 8 and res.method == m
        np.testing.assert_allclose(res.normalized, normalized, atol=1e-15)
        for f in res:
            g = _model(f.filter_type, f.sigma_x, f.sigma_y, f.alpha)
            np.testing.assert_allclose(f.fitted, g, atol=1e-15)
            d = g - normalized[f.index - 1]
            assert f.l1 == pytest.approx(np.abs(d).sum(), abs=1e-12)
            assert f.l2 == pytest.approx(np.sqrt((d * d).sum()), abs=1e-12)
            assert f.sigma_x >= 0 and f.sigma_y >= 0
        assert res.sigma_x.shape == (8,) and res.models.shape == (8, 7, 7)


def test_to_dict_and_table(published):
    d = published["B"].to_dict()
    assert d["method"] == "B" and len(d["filters"]) == 8
    for i, rec in enumerate(d["filters"]):
        assert set(rec) == {"index", "model", "sigma_x", "sigma_y", "alpha", "l1", "l2"}
        assert rec["index"] == i + 1
        assert (rec["alpha"] is None) == (i != 6)
    assert [r["model"] for r in d["filters"]] == [
        "dy+",
        "dx-",
        "dy-",
        "dx+",
        "dx",
        "dy",
        "mk7",
        "T",
    ]
    table = published["B"].format_table()
    assert len(table.splitlines()) == 11 and "0.6445" in table


def test_fit_filter_matches_fit_filters(published, filters):
    for method in ("B", "D2"):
        single = fit_filter(filters[4], 5, method=method)
        multi = published[method][4]
        assert single.sigma_x == pytest.approx(multi.sigma_x, abs=1e-12)
        assert single.sigma_y == pytest.approx(multi.sigma_y, abs=1e-12)
    # a joint method on one filter pools just that filter
    assert fit_filter(filters[4], 5, method="D-joint").sigma_x == pytest.approx(
        published["D2"][4].sigma_x, abs=1e-9
    )
    b = published["B"][4]
    assert fit_filter(filters[4], 5, method="B-joint").sigma_x == pytest.approx(
        math.sqrt(b.sigma_x * b.sigma_y), rel=1e-12
    )


@settings(max_examples=12, deadline=None)
@given(
    t=st.sampled_from([1, 2, 3, 4, 5, 6, 8]),
    sx=st.floats(0.15, 1.6),
    sy=st.floats(0.15, 1.6),
)
def test_b_and_d1_recover_any_scales(t, sx, sy):
    """Property: a model used as its own h~ is recovered exactly by B and D1."""
    g = _model(t, sx, sy)
    with fit_mod._one_thread():
        for method in ("B", "D1"):
            f = fit_filter(g, t, method=method, normalize=False)
            assert abs(f.sigma_x - sx) < 1e-6 and abs(f.sigma_y - sy) < 1e-6, (method, f)


def test_torch_threads_restored(filters):
    before = torch.get_num_threads()
    fit_filter(filters[0], 1, method="B")
    assert torch.get_num_threads() == before


def test_model_distance_batches(normalized):
    s = np.array([0.3, 0.6, 0.9])
    out = model_distance(normalized[0], 1, s, s[::-1], norm="l1")
    assert out.shape == (3,)
    for k in range(3):
        d = _model(1, s[k], s[::-1][k]) - normalized[0]
        assert out[k] == pytest.approx(np.abs(d).sum(), abs=1e-13)


# --------------------------------------------------------------------------- bad input


def test_unknown_method_lists_methods(filters):
    with pytest.raises(ValueError, match="method must be one of 'A', 'A-exact', 'B'"):
        fit_filters(filters, method="E")


@pytest.mark.parametrize(
    ("h", "types", "match"),
    [
        (np.full((8, 7, 7), np.nan), None, "NaN"),
        (np.zeros((8, 7, 7)), None, "identically zero"),
        (np.ones((8, 6, 6)), None, "odd size"),
        (np.ones((8, 7, 5)), None, "square"),
        (np.ones((3, 7, 7)), None, "filter_types is required"),
        (np.ones((2, 7, 7)), [1, 9], "1..8"),
        (np.ones((2, 7, 7)), [1, 2, 3], "one type per filter"),
    ],
)
def test_bad_filters(h, types, match):
    with pytest.raises(ValueError, match=match):
        fit_filters(h, types, method="B")


def test_bad_options(filters):
    with pytest.raises(ValueError, match="sigma_ref"):
        fit_filters(filters, method="B", sigma_ref=-1.0)
    with pytest.raises(ValueError, match="mode"):
        fit_filters(filters, method="B", mode="exact")
    with pytest.raises(ValueError, match="sigma_max"):
        fit_filters(filters, method="D2", sigma_max=0.0)
    with pytest.raises(TypeError, match="normalize"):
        fit_filters(filters, method="B", normalize="yes")
    with pytest.raises(ValueError, match="one filter"):
        fit_filter(filters, 1, method="B")
    with pytest.raises(ValueError, match="filter_type"):
        fit_filter(filters[0], 0, method="B")
    with pytest.raises(ValueError, match="norm"):
        model_distance(filters[0], 1, 0.5, norm="l3")


# --------------------------------------------------------------------------- plot


def test_plot_fit_writes_png(published, tmp_path):
    import matplotlib.pyplot as plt

    from scalespace_mk.plot import plot_fit

    path = tmp_path / "fit.png"
    fig = plot_fit(published["D1"], path=path)
    try:
        images = [ax for ax in fig.axes if ax.images]
        assert len(images) == 24
        # the first column shows h~ of filter 1, the model and the residual
        np.testing.assert_allclose(images[0].images[0].get_array(), published["D1"][0].normalized)
    finally:
        plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "fit.png"]  # no temp files left
    with pytest.raises(TypeError, match="FitResult"):
        plot_fit([1, 2])
    with pytest.raises(ValueError, match="no fits"):
        plot_fit([])


def test_private_zoom_never_worsens():
    """The vectorised pattern search returns a point no worse than its start."""

    def f(p):
        return np.abs(p[:, 0] - 0.3) + 2 * np.abs(p[:, 0] + p[:, 1] - 1.0)

    x, fx = fit_mod._zoom(f, np.array([1.0, 1.0]), 0.5, np.zeros(2), points=12)
    assert fx <= float(f(np.array([[1.0, 1.0]]))[0])
    assert abs(x[0] - 0.3) < 1e-9 and abs(x[1] - 0.7) < 1e-9


def test_on_error_record_keeps_the_other_fits():
    from scalespace_mk.scalespace.models import masterkey_model

    good = [
        masterkey_model(t, 0.7, None if t == 7 else 0.9, alpha=0.5 if t == 7 else None)
        for t in range(1, 9)
    ]
    bad = np.zeros((7, 7))  # a dx filter whose y-profile is wider than any model's
    bad[:, 2], bad[:, 4] = -1.0, 1.0
    h = np.stack(good[:4] + [bad] + good[5:])
    with pytest.raises(ValueError, match="filter 5"):
        fit_filters(h, method="B", normalize=False)
    res = fit_filters(h, method="B", normalize=False, on_error="record")
    assert res[4].error is not None and "filter 5" in res[4].error
    assert np.isnan(res[4].sigma_x) and np.isnan(res[4].fitted).all()
    record = res[4].to_dict()
    assert record["sigma_x"] is None and record["l1"] is None and "error" in record
    expected = fit_filters(
        h[[0, 1, 2, 3, 5, 6, 7]], [1, 2, 3, 4, 6, 7, 8], method="B", normalize=False
    )
    got = [f for f in res if f.error is None]
    for a, b in zip(got, expected, strict=True):
        assert (a.sigma_x, a.sigma_y, a.alpha) == (b.sigma_x, b.sigma_y, b.alpha)
    assert "no fit" in res.format_table()
    # joint methods pool the group's other filters
    joint = fit_filters(h, method="B-joint", normalize=False, on_error="record")
    assert joint[4].error is not None and joint[5].error is None
    with pytest.raises(ValueError, match="on_error"):
        fit_filters(h, method="B", on_error="ignore")
