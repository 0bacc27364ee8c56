"""Host timestamps for bursty serial delivery: a line fit of arrival time against sample index."""

from __future__ import annotations

import collections

import numpy as np
from numpy.typing import NDArray


class ArrivalClock:
    """Host timestamps for samples that arrive in bursts: a line fitted through arrival times.

    Sample ``k`` (counted since the last restart) is stamped ``anchor + k * period``. The period
    is ``1 / rate_hz`` when given, else the least-squares slope of (index of a chunk's last sample,
    its arrival time) over the chunks of the last ``window_s``, refitted every ``refit_s``. A chunk
    cannot arrive before its last sample was sent, so each bounds ``anchor <= arrival - k_last *
    period``; the anchor is the lowest bound (USB and driver latency only ever add delay, so the
    envelope rejects it), and at each refit it is recomputed over the window alone, which follows
    clock drift and lost samples within ``window_s``. Stamps never exceed their chunk's arrival and
    are strictly increasing, also across restarts; until a period is known (the first chunk without
    ``rate_hz``) a chunk's samples get its arrival time, 1 ns apart. Silence longer than ``gap_s`` (and at least five
    periods) restarts the count, e.g. after a reconnect.
    """

    def __init__(
        self, rate_hz: float | None = None, window_s: float = 2.0, refit_s: float = 0.25, gap_s: float = 0.5
    ) -> None:
        self._fixed_ns = 1e9 / rate_hz if rate_hz else None
        self._period_ns = self._fixed_ns
        self._estimated = False
        self._window_ns, self._refit_ns, self._gap_ns = window_s * 1e9, refit_s * 1e9, gap_s * 1e9
        self._last_ns = -1
        self.restart()

    def restart(self) -> None:
        """Start a new sample count (the period estimate is kept; stamps stay increasing)."""
        self._k = 0
        self._points: collections.deque[tuple[int, int]] = collections.deque()
        self._anchor_ns = 0.0
        self._fit_ns: int | None = None
        self._last_arrival_ns: int | None = None

    @property
    def rate_hz(self) -> float | None:
        """The given rate, or the estimate once fitted over at least ``refit_s``; else None."""
        if self._fixed_ns is not None or self._estimated:
            return 1e9 / self._period_ns if self._period_ns else None
        return None

    def stamp(self, arrival_ns: int, n: int) -> NDArray[np.int64]:
        """(n,) int64 monotonic ns for ``n`` consecutive samples that arrived at ``arrival_ns``."""
        gap_ns = max(self._gap_ns, 5 * (self._period_ns or 0.0))
        if self._last_arrival_ns is not None and arrival_ns - self._last_arrival_ns > gap_ns:
            self.restart()
        self._last_arrival_ns = arrival_ns
        k_last = self._k + n - 1
        self._points.append((arrival_ns, k_last))
        while arrival_ns - self._points[0][0] > self._window_ns:
            self._points.popleft()
        if self._fit_ns is None or not self._estimated or arrival_ns - self._fit_ns >= self._refit_ns:
            self._fit(arrival_ns)
        else:
            self._anchor_ns = min(self._anchor_ns, arrival_ns - k_last * (self._period_ns or 0.0))
        ks = self._k + np.arange(n)
        t = np.round(self._anchor_ns + ks * (self._period_ns or 0.0)).astype(np.int64)
        steps = np.arange(n)
        t = np.maximum(np.minimum(t, arrival_ns), self._last_ns + 1)
        t = np.maximum.accumulate(t - steps) + steps  # strictly increasing (1 ns apart at worst)
        self._last_ns = int(t[-1])
        self._k += n
        return t

    def _fit(self, now_ns: int) -> None:
        t = np.array([p[0] for p in self._points], dtype=np.float64)
        k = np.array([p[1] for p in self._points], dtype=np.float64)
        span_ns = t[-1] - t[0]
        if self._fixed_ns is None and k[-1] > k[0] and span_ns >= min(self._refit_ns, 0.02e9):
            kc = k - k.mean()
            slope = float(np.dot(kc, t - t.mean()) / np.dot(kc, kc))
            if slope > 0:
                self._period_ns = slope
                self._estimated = self._estimated or span_ns >= self._refit_ns
        self._anchor_ns = float(np.min(t - k * (self._period_ns or 0.0)))
        self._fit_ns = now_ns
