"""Weighted least squares (numpy), and the piecewise-linear fit of step times.

A profile has a few hundred samples and five features. The fit minimises
*relative* error (weights 1/y^2): a 5 ms decode step mispredicted by 5 ms
matters as much to the scheduler as a 500 ms prefill step mispredicted by
500 ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Breakpoints on the step's total tokens that the fit tries; the reference
# model splits at 512 (where a GPU step turns from memory- to compute-bound).
BREAKPOINT_CANDIDATES = (64, 128, 256, 512, 1024, 2048)
# A split must beat the single segment's error by this factor to be kept.
SPLIT_GAIN = 0.9
RIDGE = 1e-9


@dataclass(frozen=True, slots=True)
class Sample:
    prefill_tokens: int
    decode_tokens: int
    decode_context: int
    prefill_context: int
    seconds: float

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    def features(self) -> tuple[float, ...]:
        """The fitted features; T is left out because it is exactly P + D."""
        return (1.0, self.prefill_tokens, self.decode_tokens, self.decode_context, self.prefill_context)


def solve_least_squares(
    rows: Sequence[Sequence[float]], targets: Sequence[float], weights: Sequence[float]
) -> list[float]:
    """Weighted ridge least squares; a feature that never varies gets coefficient 0.

    Columns are scaled to unit max first so that token counts (thousands) and
    summed contexts (millions) condition the system equally. The ridge term
    (``RIDGE`` times each scaled column's weighted sum of squares, or 1 for a
    column of zeros) is appended as extra rows, and ``numpy.linalg.lstsq``
    solves the whole system by SVD.
    """
    x = np.asarray(rows, dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0.0] = 1.0
    root = np.sqrt(np.asarray(weights, dtype=float))[:, None]
    weighted = x / scale * root
    diagonal = (weighted * weighted).sum(axis=0)
    diagonal[diagonal == 0.0] = 1.0
    system = np.vstack([weighted, np.diag(np.sqrt(RIDGE * diagonal))])
    rhs = np.concatenate([np.asarray(targets, dtype=float) * root[:, 0], np.zeros(x.shape[1])])
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return (solution / scale).tolist()


def fit_segment(samples: Sequence[Sample]) -> tuple[tuple[float, ...], float]:
    """Coefficients (const, T, P, D, Cd, Cp) with T's fixed at 0, and the summed squared relative error."""
    rows = [s.features() for s in samples]
    ys = [s.seconds for s in samples]
    beta = solve_least_squares(rows, ys, [1.0 / (y * y) for y in ys])
    error = 0.0
    for row, y in zip(rows, ys):
        predicted = sum(b * x for b, x in zip(beta, row))
        error += ((predicted - y) / y) ** 2
    const, p, d, cd, cp = beta
    return (const, 0.0, p, d, cd, cp), error


def fit_piecewise(samples: Sequence[Sample]) -> tuple[tuple[int, ...], tuple[tuple[float, ...], ...]]:
    """Breakpoints and per-segment coefficients: no split, or the best single split.

    A split is only considered when each side has at least twice as many
    samples as there are features, and kept only when it cuts the error by
    ``1 - SPLIT_GAIN``.
    """
    min_side = 2 * len(samples[0].features())
    if len(samples) < len(samples[0].features()):
        raise ValueError(f"need at least {len(samples[0].features())} samples to fit, got {len(samples)}")
    whole, best_error = fit_segment(samples)
    best: tuple[tuple[int, ...], tuple[tuple[float, ...], ...]] = ((), (whole,))
    best_error *= SPLIT_GAIN
    for breakpoint in BREAKPOINT_CANDIDATES:
        low = [s for s in samples if s.total_tokens <= breakpoint]
        high = [s for s in samples if s.total_tokens > breakpoint]
        if len(low) < min_side or len(high) < min_side:
            continue
        low_coef, low_err = fit_segment(low)
        high_coef, high_err = fit_segment(high)
        if low_err + high_err < best_error:
            best, best_error = ((breakpoint,), (low_coef, high_coef)), low_err + high_err
    return best
