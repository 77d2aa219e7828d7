"""DLT / Gold Standard tests against the Oxford VGG "Model House" data and synthetic ground truth.

Synthetic tolerances come from first-order error propagation: with Gaussian pixel noise sigma the
least-squares parameters theta have covariance sigma^2 (J^T J)^-1, J the Jacobian of the true projection
with respect to theta (computed here by finite differences of a test-local model). The squared
Mahalanobis distance of an estimate from the truth is then ~ chi^2 with dim(theta) degrees of freedom;
we require it below the chi^2 quantile at 1 - 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from geometry.dlt import (
    decompose_camera_matrix,
    dlt_camera_matrix,
    dlt_homography,
    gold_standard_camera_matrix,
    gold_standard_homography,
    normalize_points,
    reprojection_rms,
)
from ptz_pipeline.datasets import ModelHouseView, load_model_house

CHI2_P = 1.0 - 1e-4


# --- helpers ---------------------------------------------------------------------------------------


def _project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    q = np.hstack([X, np.ones((len(X), 1))]) @ P.T
    return q[:, :2] / q[:, 2:3]


def _unit_positive(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    """P scaled to ||P[2, :3]|| = 1 with positive depths of X (the module's documented normal form)."""
    P = P / np.linalg.norm(P[2, :3])
    return P if np.median(np.hstack([X, np.ones((len(X), 1))]) @ P[2]) > 0 else -P


def _vector_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    c = abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(min(1.0, c))))


def _camera(theta: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """P from theta = (fx, fy, skew, cx, cy, rotvec (R = exp(rotvec) R_ref), camera centre C)."""
    fx, fy, s, cx, cy = theta[:5]
    K = np.array([[fx, s, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    R = Rotation.from_rotvec(theta[5:8]).as_matrix() @ R_ref
    return K @ np.hstack([R, -(R @ theta[8:11])[:, None]])


def _information(model, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Fisher information J^T J / sigma^2 of pixel observations model(theta) (finite differences)."""
    J = np.empty((model(theta).size, theta.size))
    for k in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[k]))
        e = np.zeros_like(theta)
        e[k] = h
        J[:, k] = (model(theta + e) - model(theta - e)).ravel() / (2 * h)
    return J.T @ J / sigma**2


def _synthetic_camera(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (theta, R_true, X): K with skew, a random pose, points in a box 4..10 m in front."""
    theta = np.array(
        [rng.uniform(800, 1200), rng.uniform(800, 1200), rng.uniform(-5, 5), rng.uniform(300, 340),
         rng.uniform(220, 260), 0.0, 0.0, 0.0, *rng.uniform(-2, 2, 3)]
    )  # fmt: skip
    R_true = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    X_C = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 10, n)])
    X = X_C @ R_true + theta[8:11]  # camera -> world: R^T X_C + C
    return theta, R_true, X


def _theta_of(P: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    K, R, t = decompose_camera_matrix(P)
    rotvec = Rotation.from_matrix(R @ R_ref.T).as_rotvec()
    return np.array([K[0, 0], K[1, 1], K[0, 1], K[0, 2], K[1, 2], *rotvec, *(-R.T @ t)])


# --- VGG Model House -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def house_views(shared_data: Path) -> list[ModelHouseView]:
    """Per view: (name, 3-D points X, matched corners x, published P) from house.nview-corners."""
    return load_model_house(shared_data / "vgg_model_house")


@pytest.fixture(scope="module")
def house_estimates(house_views) -> list[dict]:
    out = []
    for name, X, x, P_pub in house_views:
        P_gold, P_dlt = gold_standard_camera_matrix(X, x), dlt_camera_matrix(X, x)
        out.append(
            dict(
                name=name, X=X, x=x, P_pub=P_pub, P_gold=P_gold, P_dlt=P_dlt,
                rms_pub=reprojection_rms(P_pub, X, x), rms_gold=reprojection_rms(P_gold, X, x),
                rms_dlt=reprojection_rms(P_dlt, X, x),
            )
        )  # fmt: skip
    print(f"{'view':>10} {'N':>4} {'published':>10} {'gold std':>10} {'DLT':>10}  (RMS px)")
    for e in out:
        rms = f"{e['rms_pub']:10.6f} {e['rms_gold']:10.6f} {e['rms_dlt']:10.6f}"
        print(f"{e['name']:>10} {len(e['X']):4d} {rms}")
    return out


def test_house_gold_standard_not_worse_than_published_P(house_estimates) -> None:
    # The published P's are refined cameras of the same correspondences; LM on the same geometric error
    # must reach at least their RMS on every view.
    assert len(house_estimates) == 10
    for e in house_estimates:
        assert e["rms_gold"] <= e["rms_pub"] + 1e-6, (e["name"], e["rms_gold"], e["rms_pub"])
        assert e["rms_pub"] < 1.0  # sanity of the data pairing (SOURCE.txt: 0.39 - 0.84 px)


def test_house_plain_dlt_worse_than_gold_standard(house_estimates) -> None:
    for e in house_estimates:
        assert e["rms_gold"] <= e["rms_dlt"] + 1e-9, e["name"]
    total_dlt = sum(e["rms_dlt"] for e in house_estimates)
    total_gold = sum(e["rms_gold"] for e in house_estimates)
    print(f"total RMS over views: DLT {total_dlt:.6f} px, Gold Standard {total_gold:.6f} px")
    assert total_dlt > total_gold + 1e-4


def test_house_matches_published_P_up_to_scale_and_sign(house_estimates) -> None:
    for e in house_estimates:
        X, P_gold, P_pub = e["X"], e["P_gold"], e["P_pub"]
        # documented normal form: ||P[2, :3]|| = 1 and the observed points in front
        assert np.linalg.norm(P_gold[2, :3]) == pytest.approx(1.0, abs=1e-12)
        assert np.all(np.hstack([X, np.ones((len(X), 1))]) @ P_gold[2] > 0)
        assert _vector_angle_deg(P_gold, _unit_positive(P_pub, X)) < 0.01, e["name"]
        # both fit the same corners: their predictions differ by far less than the corners' noise
        diff = np.sqrt(np.mean(np.sum((_project(P_gold, X) - _project(P_pub, X)) ** 2, axis=1)))
        assert diff < 0.02 * e["rms_pub"], (e["name"], diff)


def _check_decomposition(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K, R, t = decompose_camera_matrix(P)
    assert K[2, 2] == 1.0 and K[0, 0] > 0 and K[1, 1] > 0
    assert np.allclose(np.tril(K, -1), 0.0)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    Q = K @ np.hstack([R, t[:, None]])
    lam = (Q.ravel() @ P.ravel()) / (P.ravel() @ P.ravel())
    np.testing.assert_allclose(Q, lam * P, atol=1e-9 * np.abs(Q).max())
    return K, R, t


def test_house_decomposition(house_estimates) -> None:
    for e in house_estimates:
        K, R, t = _check_decomposition(e["P_gold"])
        K_pub, R_pub, t_pub = _check_decomposition(e["P_pub"])  # published scale is arbitrary
        # camera centre (also the null vector of P) and intrinsics agree with the published camera's
        C, C_pub = -R.T @ t, -R_pub.T @ t_pub
        null = np.linalg.svd(e["P_pub"])[2][-1]
        np.testing.assert_allclose(C_pub, null[:3] / null[3], rtol=1e-9, atol=1e-9)
        assert np.linalg.norm(C - C_pub) < 1e-3 * np.linalg.norm(C_pub - e["X"].mean(axis=0)), e["name"]
        np.testing.assert_allclose(np.diag(K), np.diag(K_pub), rtol=1e-3)


# --- synthetic ground truth ----------------------------------------------------------------------


def test_normalize_points() -> None:
    rng = np.random.default_rng(1)
    for d in (2, 3):
        pts = rng.normal(50.0, 30.0, (40, d)) * rng.uniform(0.5, 2.0, d)
        pn, T = normalize_points(pts)
        np.testing.assert_allclose(pn.mean(axis=0), 0.0, atol=1e-12)
        assert np.linalg.norm(pn, axis=1).mean() == pytest.approx(np.sqrt(d))
        ph = np.hstack([pts, np.ones((len(pts), 1))]) @ T.T
        np.testing.assert_allclose(ph[:, :d], pn, atol=1e-12)
        np.testing.assert_allclose(ph[:, d], 1.0)


def test_camera_matrix_exact_without_noise() -> None:
    rng = np.random.default_rng(2)
    theta, R_true, X = _synthetic_camera(rng, 20)
    P_true = _camera(theta, R_true)
    x = _project(P_true, X)
    for P in (dlt_camera_matrix(X, x), gold_standard_camera_matrix(X, x)):
        assert _vector_angle_deg(P, P_true) < 1e-8
        assert reprojection_rms(P, X, x) < 1e-8
        np.testing.assert_allclose(_theta_of(P, R_true), theta, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_camera_matrix_with_noise_within_first_order_covariance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, sigma = 60, 0.5
    theta, R_true, X = _synthetic_camera(rng, n)
    x = _project(_camera(theta, R_true), X) + rng.normal(0.0, sigma, (n, 2))
    P_gold, P_dlt = gold_standard_camera_matrix(X, x), dlt_camera_matrix(X, x)
    info = _information(lambda th: _project(_camera(th, R_true), X), theta, sigma)
    delta = _theta_of(P_gold, R_true) - theta
    assert delta @ info @ delta < chi2.ppf(CHI2_P, 11)
    # residual RMS^2 ~ sigma^2 chi^2_{2N-11} / N; LM lowers it below the DLT's
    rms_gold = reprojection_rms(P_gold, X, x)
    dof = 2 * n - 11
    lo, hi = chi2.ppf([1 - CHI2_P, CHI2_P], dof)
    assert sigma * np.sqrt(lo / n) < rms_gold < sigma * np.sqrt(hi / n)
    assert rms_gold <= reprojection_rms(P_dlt, X, x)
    K, R, _ = decompose_camera_matrix(P_gold)
    assert np.linalg.det(R) == pytest.approx(1.0) and K[0, 0] > 0 and K[1, 1] > 0


def _synthetic_plane(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Plane (map) points (N, 2) in metres and the true H = K [r1 r2 t] of a camera looking at them."""
    K = np.array([[900.0, 0.0, 640.0], [0.0, 900.0, 360.0], [0.0, 0.0, 1.0]])
    R = Rotation.from_euler("xyz", [rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(0, 360)], True)
    t = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(8, 12)])
    H = K @ np.column_stack([R.as_matrix()[:, :2], t])
    return rng.uniform(-4, 4, (n, 2)), H


def _transfer(H: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.hstack([p, np.ones((len(p), 1))]) @ H.T
    return q[:, :2] / q[:, 2:3]


def test_homography_exact_without_noise() -> None:
    p, H_true = _synthetic_plane(np.random.default_rng(6), 12)
    x = _transfer(H_true, p)
    for H in (dlt_homography(p, x), gold_standard_homography(p, x)):
        assert np.linalg.norm(H) == pytest.approx(1.0) and np.linalg.det(H) > 0
        np.testing.assert_allclose(H / H[2, 2], H_true / H_true[2, 2], rtol=1e-8)
        np.testing.assert_allclose(_transfer(H, p), x, atol=1e-8)
    # exactly four points: the DLT interpolates them
    np.testing.assert_allclose(_transfer(gold_standard_homography(p[:4], x[:4]), p[:4]), x[:4], atol=1e-8)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_homography_with_noise_within_first_order_covariance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, sigma = 40, 0.5
    p, H_true = _synthetic_plane(rng, n)
    x = _transfer(H_true, p) + rng.normal(0.0, sigma, (n, 2))
    H_gold, H_dlt = gold_standard_homography(p, x), dlt_homography(p, x)

    def h8(H: np.ndarray) -> np.ndarray:
        return (H / H[2, 2]).ravel()[:8]

    def model(h: np.ndarray) -> np.ndarray:
        return _transfer(np.append(h, 1.0).reshape(3, 3), p)

    info = _information(model, h8(H_true), sigma)
    delta = h8(H_gold) - h8(H_true)
    assert delta @ info @ delta < chi2.ppf(CHI2_P, 8)
    rms = [np.sqrt(np.mean(np.sum((_transfer(H, p) - x) ** 2, axis=1))) for H in (H_gold, H_dlt)]
    assert rms[0] <= rms[1]
    lo, hi = chi2.ppf([1 - CHI2_P, CHI2_P], 2 * n - 8)
    assert sigma * np.sqrt(lo / n) < rms[0] < sigma * np.sqrt(hi / n)


# --- degenerate input ----------------------------------------------------------------------------


def test_degenerate_camera_input_raises() -> None:
    rng = np.random.default_rng(10)
    theta, R_true, X = _synthetic_camera(rng, 12)
    x = _project(_camera(theta, R_true), X)
    with pytest.raises(ValueError, match="at least 6"):
        gold_standard_camera_matrix(X[:5], x[:5])
    with pytest.raises(ValueError, match="mismatched"):
        dlt_camera_matrix(X, x[:-1])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        dlt_camera_matrix(X[:, :2], x)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        gold_standard_camera_matrix(X_nan, x)
    x_inf = x.copy()
    x_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        dlt_camera_matrix(X, x_inf)
    # coplanar world points (a tilted plane), exactly and to rounding error
    plane = np.column_stack([rng.uniform(-3, 3, (12, 2)), np.zeros(12)]) @ R_true + 5.0
    with pytest.raises(ValueError, match="coplanar"):
        dlt_camera_matrix(plane, x)
    with pytest.raises(ValueError, match="singular"):
        decompose_camera_matrix(np.hstack([np.ones((3, 3)), np.ones((3, 1))]))
    with pytest.raises(ValueError, match="coincide"):
        normalize_points(np.ones((5, 2)))


def test_degenerate_homography_input_raises() -> None:
    p, H = _synthetic_plane(np.random.default_rng(11), 8)
    x = _transfer(H, p)
    with pytest.raises(ValueError, match="at least 4"):
        gold_standard_homography(p[:3], x[:3])
    with pytest.raises(ValueError, match="mismatched"):
        dlt_homography(p, x[:5])
    line = np.column_stack([np.linspace(0, 5, 8), 2.0 * np.linspace(0, 5, 8) + 1.0])
    with pytest.raises(ValueError, match="collinear"):
        gold_standard_homography(line, x)
    with pytest.raises(ValueError, match="collinear"):
        dlt_homography(p, line)
    p_nan = p.copy()
    p_nan[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        dlt_homography(p_nan, x)
