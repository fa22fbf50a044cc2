"""Compiled kernels for the normalised Black function and its inverse.

Notation (Jäckel, "Let's Be Rational", Wilmott 2015, whose analysis this follows; the code and
the branch layout here are our own):

    x = ln(F/K),   s = sigma sqrt(t),   h = x / s,   u = s / 2
    b(x, s) = e^{x/2} N(h + u) - e^{-x/2} N(h - u)          normalised call, price / sqrt(F K)

Only out-of-the-money calls (``x <= 0``) are evaluated; puts and in-the-money options are
mapped to them by put-call parity, ``b_put(x) = b_call(-x)`` and
``b_call(x) = (e^{x/2} - e^{-x/2}) + b_call(-x)``, so the time value is never the difference
of two large numbers.

With Y(z) = N(z) / phi(z) = sqrt(pi/2) erfcx(-z / sqrt 2) (a Mills ratio) the identity

    b(x, s) = phi(h) e^{-u^2/2} [Y(h + u) - Y(h - u)]

holds everywhere; it is what keeps deep out-of-the-money prices accurate to a few ulps
*relative* (down to 1e-300) where the textbook formula returns 0 or noise. For small ``u``
near the money the bracket is expanded in ``u`` (odd powers), using the recursion
Y' = 1 + z Y,  Y^(n+1) = z Y^(n) + n Y^(n-1).

The vega of the normalised price is cancellation free:

    db/ds = phi(h) e^{-u^2/2} = exp(-(x^2/s^2 + s^2/4) / 2) / sqrt(2 pi)

and its logarithmic derivatives are rational in s, which gives the Householder (order 3)
iteration used by :func:`_solve_normalised` cheaply.

The inverse splits at the inflection point s_c = sqrt(2|x|) of b in s:

* below it (``beta <= b(x, s_c)``) the objective is ``ln b(s) - ln beta``;
* above it, the objective is ``ln c(s) - ln(b_max - beta)`` with
  ``c = b_max - b = e^{x/2} N(-h-u) + e^{-x/2} N(h-u)`` (a sum of positives), ``b_max = e^{x/2}``.

Both are monotone with mild curvature, so Householder steps from the closed-form initial guesses
below converge in two to three iterations to full double precision.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from volcal import _erfcx_table

# Status codes (mirrored by volcal.implied.IVStatus)
OK = 0
AT_INTRINSIC = 1
BELOW_INTRINSIC = 2
ABOVE_MAXIMUM = 3
EXPIRED = 4
NON_FINITE = 5
INVALID_INPUT = 6
NOT_CONVERGED = 7

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)
_LOG_INV_SQRT_2PI = -0.5 * math.log(2.0 * math.pi)
_SPLITTER = 134217729.0  # 2**27 + 1, Dekker's constant for exact products

# Near the money (|h| < _SMALL_H) and for u < _SMALL_U the bracket Y(h+u) - Y(h-u) is summed as
# a Taylor series in u; the direct difference would lose up to -log10(u) digits there.
_SMALL_U = 0.1
_SMALL_H = 3.0
_MAX_ITER = 40


@njit(cache=True, inline="always")
def _exp_square(z: float) -> float:
    """exp(z*z) with z*z carried in double-double (Dekker), so the result is ulp-accurate."""
    p = z * z
    c = _SPLITTER * z
    hi = c - (c - z)
    lo = z - hi
    err = ((hi * hi - p) + 2.0 * hi * lo) + lo * lo
    return math.exp(p) * (1.0 + err)


_ERFCX_COEFFS = np.array(_erfcx_table.COEFFS, dtype=np.float64)
_ERFCX_N = float(_erfcx_table.N_INTERVALS)
_ERFCX_FIRST = _erfcx_table.FIRST
_ERFCX_ZMAX = _erfcx_table.Z_MAX
_ERFCX_DEGREE = _erfcx_table.DEGREE


@njit(cache=True)
def _erfcx_nonneg(z: float) -> float:
    """erfcx(z) for z >= 0: generated piecewise polynomials in y = 4/(4+z) (see _erfcx_gen)."""
    if z < _ERFCX_ZMAX:
        y = 4.0 / (4.0 + z)
        i = int(y * _ERFCX_N)
        if i >= _ERFCX_N:
            i = int(_ERFCX_N) - 1
        c = _ERFCX_COEFFS[i - _ERFCX_FIRST]
        d = y - (i + 0.5) / _ERFCX_N
        acc = c[_ERFCX_DEGREE]
        for p in range(_ERFCX_DEGREE - 1, -1, -1):
            acc = acc * d + c[p]
        return acc
    # Asymptotic series 1/(z sqrt(pi)) sum (-1)^n (2n-1)!! / (2 z^2)^n; 9 terms give < 1e-17
    q = 1.0 / (2.0 * z * z)
    term = 1.0
    total = 1.0
    for n in range(1, 10):
        term *= -(2.0 * n - 1.0) * q
        total += term
    return total * _INV_SQRT_PI / z


@njit(cache=True)
def erfcx(z: float) -> float:
    """Scaled complementary error function exp(z^2) erfc(z), a few ulps relative."""
    if z < 0.0:
        if z < -26.6:
            return math.inf
        return 2.0 * _exp_square(z) - _erfcx_nonneg(-z)
    return _erfcx_nonneg(z)


@njit(cache=True)
def erfc(z: float) -> float:
    """Complementary error function, a few ulps relative (also in the far tail)."""
    if z < 0.0:
        return 2.0 - _erfcx_nonneg(-z) / _exp_square(z)
    if z > 27.3:
        return 0.0
    return _erfcx_nonneg(z) / _exp_square(z)


@njit(cache=True)
def _mills_y(z: float) -> float:
    """Y(z) = N(z) / phi(z)."""
    return _SQRT_PI_OVER_2 * erfcx(-z * _INV_SQRT2)


@njit(cache=True)
def _bracket_near(h: float, u: float) -> float:
    """Y(h+u) - Y(h-u) for |h| < 3, u < 0.1: odd Taylor series in u to u^13 (u^7 if u < 0.01).

    Derivatives by the forward recursion Y' = 1 + hY, Y^(n+1) = h Y^(n) + n Y^(n-1), which is
    stable for moderate |h|; the neglected u^15 term is below 1e-17 of the sum.
    """
    y0 = _mills_y(h)
    y1 = 1.0 + h * y0
    y2 = h * y1 + y0
    y3 = h * y2 + 2.0 * y1
    y4 = h * y3 + 3.0 * y2
    y5 = h * y4 + 4.0 * y3
    y6 = h * y5 + 5.0 * y4
    y7 = h * y6 + 6.0 * y5
    u2 = u * u
    if u2 < 1e-4:
        # u < 0.01: the u^9 term is below 1e-17 of the sum
        series = y5 / 120.0 + u2 * (y7 / 5040.0)
        series = y3 / 6.0 + u2 * series
        return 2.0 * u * (y1 + u2 * series)
    y8 = h * y7 + 7.0 * y6
    y9 = h * y8 + 8.0 * y7
    y10 = h * y9 + 9.0 * y8
    y11 = h * y10 + 10.0 * y9
    y12 = h * y11 + 11.0 * y10
    y13 = h * y12 + 12.0 * y11
    series = y11 / 39916800.0 + u2 * (y13 / 6227020800.0)
    series = y9 / 362880.0 + u2 * series
    series = y7 / 5040.0 + u2 * series
    series = y5 / 120.0 + u2 * series
    series = y3 / 6.0 + u2 * series
    series = y1 + u2 * series
    return 2.0 * u * series


@njit(cache=True)
def _bracket_far(h: float, u: float) -> float:
    """Y(h+u) - Y(h-u) for h <= -3, u <= -h/10, to a few ulps relative.

    Odd Taylor series in u with the derivatives J_n = Y^(n)(h) = int_0^inf v^n e^{hv - v^2/2} dv,
    all positive. Their ratios rho_n = J_n / J_(n-1) obey rho_n = n / (|h| + rho_(n+1)), run
    backward from a tail estimate (the fixed point sqrt-form) — the stable direction, as J_n is the
    minimal solution of the recursion; the series is summed in nested form during the same pass.
    Terms to u^15 (ratio (u/h)^2 <= 1e-2 per step); start index chosen so that the result is
    within 5e-16 of 50-digit mpmath for |h| >= 3 (scratch study in docs/implied_vol.md).
    """
    eta = -h
    n_start = 16 + int(72.0 / eta)
    r = 0.5 * (-eta + math.sqrt(eta * eta + 4.0 * (n_start + 1)))
    u2 = u * u
    nested = 1.0
    prev = 0.0
    for n in range(n_start, 0, -1):
        r = n / (eta + r)
        if n < 15 and n % 2 == 0:
            nested = 1.0 + r * prev * u2 / (n * (n + 1.0)) * nested
        prev = r
    return 2.0 * _mills_y(h) * prev * u * nested


@njit(cache=True)
def _normalised(x: float, s: float, accurate: bool) -> float:
    h = x / s
    u = 0.5 * s
    if -h < _SMALL_H:
        if u < _SMALL_U:
            return _INV_SQRT_2PI * math.exp(-0.5 * (h * h + u * u)) * _bracket_near(h, u)
    elif accurate and u <= -0.1 * h:
        return _INV_SQRT_2PI * math.exp(-0.5 * (h * h + u * u)) * _bracket_far(h, u)
    if h + u <= 0.0:
        return (
            0.5
            * math.exp(-0.5 * (h * h + u * u))
            * (erfcx(-(h + u) * _INV_SQRT2) - erfcx(-(h - u) * _INV_SQRT2))
        )
    return 0.5 * (
        math.exp(0.5 * x) * erfc(-(h + u) * _INV_SQRT2)
        - math.exp(-0.5 * x) * erfc((u - h) * _INV_SQRT2)
    )


@njit(cache=True)
def normalised_otm_call(x: float, s: float) -> float:
    """Normalised Black call b(x, s) for x <= 0 (out of the money), s > 0, a few ulps relative.

    Uses the continued-fraction Taylor branch in the far wings of short expiries, where the
    direct difference of Mills ratios would lose ``log10(|h| / (2u))`` digits.
    """
    return _normalised(x, s, True)


@njit(cache=True)
def _log_b_fast(x: float, s: float) -> tuple[float, float]:
    """(ln b(x, s), b'(s) / b) for the solver, x <= 0, without ever forming tiny numbers.

    Where b = phi(h) e^{-u^2/2} [bracket], ln b = ln phi(0) - (h^2 + u^2)/2 + ln[bracket] and
    b'/b = 1/[bracket] need no exponential, and the far wings cannot underflow. Far wings of short
    expiries use the direct bracket, whose relative error there, ~3 eps |h| / (2u), moves the
    implied vol by that divided by its elasticity ~h^2: below 1e-14, so the slower
    continued-fraction branch of :func:`normalised_otm_call` is not needed for the vol.
    """
    h = x / s
    u = 0.5 * s
    e = 0.5 * (h * h + u * u)
    if -h < _SMALL_H and u < _SMALL_U:
        bracket = _bracket_near(h, u)
        return _LOG_INV_SQRT_2PI - e + math.log(bracket), 1.0 / bracket
    if h + u <= 0.0:
        bracket = _SQRT_PI_OVER_2 * (erfcx(-(h + u) * _INV_SQRT2) - erfcx(-(h - u) * _INV_SQRT2))
        if bracket <= 0.0:
            return -math.inf, math.inf
        return _LOG_INV_SQRT_2PI - e + math.log(bracket), 1.0 / bracket
    value = 0.5 * (
        math.exp(0.5 * x) * erfc(-(h + u) * _INV_SQRT2)
        - math.exp(-0.5 * x) * erfc((u - h) * _INV_SQRT2)
    )
    return math.log(value), _INV_SQRT_2PI * math.exp(-e) / value


@njit(cache=True)
def _complement(x: float, s: float) -> float:
    """c(x, s) = e^{x/2} - b(x, s) = e^{x/2} N(-h-u) + e^{-x/2} N(h-u), for x <= 0."""
    h = x / s
    u = 0.5 * s
    return 0.5 * (
        math.exp(0.5 * x) * erfc((h + u) * _INV_SQRT2)
        + math.exp(-0.5 * x) * erfc((u - h) * _INV_SQRT2)
    )


@njit(cache=True)
def _normal_quantile_approx(p: float) -> float:
    """Rough inverse normal CDF for 0 < p <= 0.5 (Abramowitz & Stegun 26.2.23, |err| < 4.5e-4).

    Only used for initial guesses; accuracy comes from the Householder iteration.
    """
    r = math.sqrt(-2.0 * math.log(p))
    num = 2.515517 + r * (0.802853 + r * 0.010328)
    den = 1.0 + r * (1.432788 + r * (0.189269 + r * 0.001308))
    return -(r - num / den)


@njit(cache=True)
def _guess_low(x: float, beta: float, s_c: float, b_c: float) -> float:
    """Initial s below the inflection point s_c = sqrt(2|x|).

    Deep out of the money (large |h|) the asymptote b ~ phi(h) e^{-u^2/2} 2u / (h^2 - u^2)
    gives s from a quadratic in s^2, with fixed-point rounds for the prefactor. Nearer the
    money, ln b is modelled as -x^2/(2 s^2) + B ln(s / s_c) + const, exact in value and slope at
    s_c and with the exact leading behaviour as s -> 0. With w = s_c^2 / s^2 >= 1 the model reads
    (|x|/4) w + (B/2) ln w = R, solved by Newton in ln w (convex: monotone from the right).
    """
    log_beta = math.log(beta)
    x2 = x * x
    ax = -x
    e = -log_beta
    s = s_c
    for _ in range(3):
        disc = 4.0 * e * e - x2
        if disc <= 0.0 or e <= 0.0:
            s = s_c
            break
        s = math.sqrt(2.0 * x2 / (2.0 * e + math.sqrt(disc)))
        if s >= s_c or ax < 3.0 * s:
            break
        h = x / s
        u = 0.5 * s
        e = -log_beta + math.log(2.0 * u * _INV_SQRT_2PI / (h * h - u * u))
    if ax >= 4.0 * s:
        return s
    # near-the-money model
    bprime = _INV_SQRT_2PI * math.exp(-0.5 * (x2 / (s_c * s_c) + 0.25 * s_c * s_c))
    half_b = 0.5 * (s_c * bprime / b_c - 0.5 * ax)
    a = 0.25 * ax
    r = math.log(b_c) - log_beta  # >= 0 in this branch
    if r <= 0.0:
        return s_c
    if half_b <= 0.0:
        return s_c / math.sqrt(1.0 + r / a)
    om = math.log(1.0 + r / a)  # root <= this, since a w + b ln w >= a (w - 1) + a
    for _ in range(6):
        ew = math.exp(om)
        g = a * (ew - 1.0) + half_b * om - r
        step = g / (a * ew + half_b)
        om -= step
        if om < 0.0:
            om = 0.0
        if abs(step) < 1e-4:
            break
    return s_c * math.exp(-0.5 * om)


# Tabulated initial guess below the inflection point. Coordinates (see _table_guess):
#   xi = sqrt(|x| / (1 + |x|)) in [0, _GUESS_XI_MAX],  tau = lam / (lam + B) in [0, _GUESS_TAU_MAX],
#   lam = ln(b_c / beta) >= 0, B = 1 + |x|/4,
# value R = (s / s_c) / sqrt(1 - tau), smooth in both (R = 1 at tau = 0). The table is computed by
# this module's own solver (build_guess_table), once per process; bilinear interpolation then
# gives s to ~1e-5 (median) / 6e-3 (worst) relative, so one or two Householder steps finish.
GUESS_NX = 64
GUESS_NT = 256
_GUESS_XI_MAX = 0.95
_GUESS_TAU_MAX = 0.995
_GUESS_XI_MIN = 1e-4


@njit(cache=True, inline="always")
def _b_at_inflection(x: float, b_max: float) -> float:
    """b(x, s_c) at s_c = sqrt(2|x|), x <= 0, b_max = e^{x/2}.

    There h + u = 0, so b = b_max/2 - N(-sqrt(2|x|)) / b_max = (b_max / 2) (1 - erfcx(sqrt|x|)),
    using erfc(z) = erfcx(z) e^{-z^2} with e^{-z^2} = b_max^2. Relative accuracy ~eps/sqrt|x|
    near the money, ample for choosing the branch and the guess.
    """
    return 0.5 * b_max * (1.0 - erfcx(math.sqrt(-x)))


@njit(cache=True)
def _table_guess(
    x: float, log_beta: float, s_c: float, b_c: float, table: npt.NDArray[np.float64]
) -> float:
    """Initial s from the guess table, or -1 outside it (or without a table)."""
    if table.shape[0] == 0:
        return -1.0
    ax = -x
    xi = math.sqrt(ax / (1.0 + ax))
    if xi > _GUESS_XI_MAX:
        return -1.0
    lam = math.log(b_c) - log_beta
    tau = lam / (lam + 1.0 + 0.25 * ax)
    if tau > _GUESS_TAU_MAX:
        return -1.0
    fi = (xi - _GUESS_XI_MIN) * (GUESS_NX / (_GUESS_XI_MAX - _GUESS_XI_MIN))
    if fi < 0.0:
        fi = 0.0
    fj = tau * (GUESS_NT / _GUESS_TAU_MAX)
    i = min(int(fi), GUESS_NX - 1)
    j = min(int(fj), GUESS_NT - 1)
    di = fi - i
    dj = fj - j
    r = (1.0 - di) * ((1.0 - dj) * table[i, j] + dj * table[i, j + 1]) + di * (
        (1.0 - dj) * table[i + 1, j] + dj * table[i + 1, j + 1]
    )
    s = r * math.sqrt(1.0 - tau) * s_c
    return s if s < s_c else s_c


@njit(cache=True)
def build_guess_table() -> npt.NDArray[np.float64]:
    """Solve b(x, s) = beta on the (xi, tau) grid of :func:`_table_guess` (no table needed)."""
    empty = np.empty((0, 0))
    table = np.empty((GUESS_NX + 1, GUESS_NT + 1))
    for i in range(GUESS_NX + 1):
        xi = _GUESS_XI_MIN + (_GUESS_XI_MAX - _GUESS_XI_MIN) * i / GUESS_NX
        ax = xi * xi / (1.0 - xi * xi)
        x = -ax
        b_max = math.exp(0.5 * x)
        s_c = math.sqrt(2.0 * ax)
        b_c = _b_at_inflection(x, b_max)
        big_b = 1.0 + 0.25 * ax
        table[i, 0] = 1.0
        for j in range(1, GUESS_NT + 1):
            tau = _GUESS_TAU_MAX * j / GUESS_NT
            lam = tau * big_b / (1.0 - tau)
            beta = b_c * math.exp(-lam)
            s = _solve_normalised(beta, x, empty)[0]
            table[i, j] = s / s_c / math.sqrt(1.0 - tau)
    return table


@njit(cache=True, inline="always")
def _log_ratio(f: float, k: float) -> float:
    """ln(f / k) to a few ulps *relative*: f - k is exact when k/2 <= f <= 2k (Sterbenz)."""
    if 0.5 * k <= f <= 2.0 * k:
        return math.log1p((f - k) / k)
    return math.log(f / k)


@njit(cache=True)
def _solve_normalised(
    beta: float, x: float, table: npt.NDArray[np.float64]
) -> tuple[float, int, int]:
    """Solve b(x, s) = beta for s, given x <= 0 and beta > 0.

    ``table`` is the guess table of :func:`build_guess_table` (or an empty array). Returns
    ``(s, status, iterations)``; status ``ABOVE_MAXIMUM`` when ``beta >= e^{x/2}`` (after
    rounding of the normalisation no ``s`` reaches it).
    """
    b_max = math.exp(0.5 * x)
    if beta >= b_max:
        return math.nan, ABOVE_MAXIMUM, 0
    s_c = math.sqrt(-2.0 * x)
    b_c = _b_at_inflection(x, b_max)
    x2 = x * x
    # The guess (and bracket) follow the branch of beta relative to b(x, s_c); the objective
    # follows beta relative to b_max / 2: ln b while b is the smaller of b and c = b_max - b,
    # ln c otherwise, so that the objective is never the log of a number close to 1.
    if beta <= b_c:
        lo = 0.0
        hi = s_c
        s = _table_guess(x, math.log(beta), s_c, b_c, table)
        if s <= 0.0:
            s = _guess_low(x, beta, s_c, b_c)
    else:
        lo = s_c
        hi = math.inf
        # c = b_max - beta ~ (b_max + 1/b_max) N(-s/2) once s >> |x| (exact at x = 0)
        p = (b_max - beta) / (b_max + 1.0 / b_max)
        if p > 0.4:
            # inverse normal series about 1/2 (Abramowitz & Stegun 26.2.x): accurate for small s
            q = 0.5 - p
            a = 2.5066282746310002 * q  # sqrt(2 pi) q
            a2 = a * a
            s = 2.0 * a * (1.0 + a2 * (1.0 / 6.0 + a2 * (7.0 / 120.0 + a2 * (127.0 / 5040.0))))
        else:
            s = -2.0 * _normal_quantile_approx(p)
        if s < s_c:
            s = s_c
    if s <= 0.0:
        s = 0.5 * s_c if s_c > 0.0 else 1e-8
    low = beta <= 0.5 * b_max
    target = math.log(beta) if low else math.log(b_max - beta)
    for it in range(1, _MAX_ITER + 1):
        if low:
            log_b, q1 = _log_b_fast(x, s)
            if not math.isfinite(log_b):  # underflow far below the root: move right
                lo = s
                s = 0.5 * (s + hi)
                continue
            f = log_b - target
            if f < 0.0:
                lo = s
            else:
                hi = s
        else:
            value = _complement(x, s)
            if value <= 0.0:  # far above the root: move left
                hi = s
                s = 0.5 * (s + lo)
                continue
            f = math.log(value) - target
            q1 = -_INV_SQRT_2PI * math.exp(-0.5 * (x2 / (s * s) + 0.25 * s * s)) / value
            if f > 0.0:
                lo = s
            else:
                hi = s
        if f == 0.0:
            return s, OK, it
        r = x2 / (s * s * s) - 0.25 * s
        r2 = r * r - 3.0 * x2 / (s * s * s * s) - 0.25
        nu = -f / q1
        g1 = r - q1
        g2 = r2 - 3.0 * q1 * r + 2.0 * q1 * q1
        den = 1.0 + g1 * nu + g2 * nu * nu / 6.0
        step = nu
        quartic = False
        if den > 0.0:
            householder = nu * (1.0 + 0.5 * g1 * nu) / den
            if abs(householder) <= 2.0 * abs(nu) and householder * nu > 0.0:
                step = householder
                quartic = True
        s_new = s + step
        if abs(step) <= (3e-4 if quartic else 1e-15) * s:
            # Householder-3 converges quartically: after a step of relative size d the error left
            # is ~K d^4, 8e-15 K for d = 3e-4. Against 40-digit references (tests/test_implied.py)
            # this stop leaves the same max error as 1e-7 does (8e-14), in 2.0 iterations on
            # average instead of 2.6.
            return s_new, OK, it
        if not (lo < s_new < hi) or not math.isfinite(s_new):
            # safeguard: bisect the bracket (doubling when the upper end is open)
            s_new = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * s
        s = s_new
    return s, NOT_CONVERGED, _MAX_ITER


@njit(cache=True)
def _implied_one(
    price: float,
    f: float,
    k: float,
    t: float,
    is_call: bool,
    d: float,
    table: npt.NDArray[np.float64],
) -> tuple[float, int]:
    if not (
        math.isfinite(price)
        and math.isfinite(f)
        and math.isfinite(k)
        and math.isfinite(t)
        and math.isfinite(d)
    ):
        return math.nan, NON_FINITE
    if f <= 0.0 or k <= 0.0 or d <= 0.0:
        return math.nan, INVALID_INPUT
    if t <= 0.0:
        return math.nan, EXPIRED
    x = _log_ratio(f, k)
    # map to an out-of-the-money call with x <= 0
    y = x if is_call else -x
    p = price / d
    if y > 0.0:
        intrinsic = (f - k) if is_call else (k - f)
        p = p - intrinsic
        upper = k if is_call else f
    else:
        upper = f if is_call else k
    if p < 0.0:
        return math.nan, BELOW_INTRINSIC
    if p == 0.0:
        return 0.0, AT_INTRINSIC
    if p >= upper:
        return math.nan, ABOVE_MAXIMUM
    beta = p / math.sqrt(f * k)
    s, status, _ = _solve_normalised(beta, -abs(x), table)
    if status == ABOVE_MAXIMUM:
        return math.nan, ABOVE_MAXIMUM
    return s / math.sqrt(t), status


@njit(cache=True)
def implied_vol_kernel(
    price: npt.NDArray[np.float64],
    f: npt.NDArray[np.float64],
    k: npt.NDArray[np.float64],
    t: npt.NDArray[np.float64],
    is_call: npt.NDArray[np.bool_],
    d: npt.NDArray[np.float64],
    table: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    n = price.shape[0]
    vol = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    for i in range(n):
        v, st = _implied_one(price[i], f[i], k[i], t[i], is_call[i], d[i], table)
        vol[i] = v
        status[i] = st
    return vol, status


@njit(cache=True)
def _price_one(f: float, k: float, t: float, vol: float, is_call: bool, d: float) -> float:
    if not (
        math.isfinite(f)
        and math.isfinite(k)
        and math.isfinite(t)
        and math.isfinite(vol)
        and math.isfinite(d)
    ):
        return math.nan
    if f <= 0.0 or k <= 0.0 or vol < 0.0:
        return math.nan
    intrinsic = max(f - k, 0.0) if is_call else max(k - f, 0.0)
    if t <= 0.0 or vol == 0.0:
        return d * intrinsic
    x = _log_ratio(f, k)
    s = vol * math.sqrt(t)
    return d * (intrinsic + math.sqrt(f * k) * normalised_otm_call(-abs(x), s))


@njit(cache=True)
def black_price_kernel(
    f: npt.NDArray[np.float64],
    k: npt.NDArray[np.float64],
    t: npt.NDArray[np.float64],
    vol: npt.NDArray[np.float64],
    is_call: npt.NDArray[np.bool_],
    d: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    n = f.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = _price_one(f[i], k[i], t[i], vol[i], is_call[i], d[i])
    return out
