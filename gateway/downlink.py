"""Downlink CONFIG requests: MQTT ConfigRequest -> serial CONFIG frame -> CONFIG_RESULT -> MQTT ConfigResult.

Sans-IO: the ingest thread owns one :class:`PendingConfigs`, writes the frames it builds and publishes the results
it returns. A request for a meter that is not connected is answered ``undeliverable`` at once; one that gets no
CONFIG_RESULT within the timeout is answered ``timeout`` (the meter may or may not have applied it; a later
HELLO shows the report period in force).
"""

from __future__ import annotations

from typing import Literal

from protocol import frames, mqtt

_STATUS: dict[int, Literal["applied", "rejected", "storage_error"]] = {
    frames.CONFIG_APPLIED: "applied",
    frames.CONFIG_REJECTED: "rejected",
    frames.CONFIG_STORAGE_ERROR: "storage_error",
}


def to_frame(request: mqtt.ConfigRequest) -> frames.Config:
    """The serial CONFIG for an MQTT request; ``None`` fields become the protocol's keep markers."""
    return frames.Config(
        request_id=request.request_id,
        report_period_ms=request.report_period_ms or frames.KEEP,
        v_gain=request.v_gain or frames.KEEP,
        i_gain=request.i_gain or frames.KEEP,
        phase_cdeg=frames.KEEP_PHASE if request.phase_cdeg is None else request.phase_cdeg,
    )


def result_from_frame(device: str, result: frames.ConfigResult, now_ms: int) -> mqtt.ConfigResult:
    status = _STATUS.get(result.status)
    return mqtt.ConfigResult(
        device=device,
        request_id=result.request_id,
        status=status or "rejected",
        report_period_ms=result.report_period_ms,
        v_gain=result.v_gain,
        i_gain=result.i_gain,
        phase_cdeg=result.phase_cdeg,
        detail="" if status else f"unknown meter status {result.status}",
        ts=now_ms,
    )


FailureStatus = Literal["undeliverable", "timeout"]


def failure(device: str, request_id: int, status: FailureStatus, detail: str, now_ms: int) -> mqtt.ConfigResult:
    return mqtt.ConfigResult(device=device, request_id=request_id, status=status, detail=detail, ts=now_ms)


class PendingConfigs:
    """CONFIGs sent to meters and not yet answered, keyed by (device, request_id)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pending: dict[tuple[str, int], float] = {}
        """(device, request_id) -> monotonic deadline."""

    def sent(self, device: str, request_id: int, mono: float) -> None:
        self._pending[(device, request_id)] = mono + self.timeout_s

    def answered(self, device: str, result: frames.ConfigResult, now_ms: int) -> tuple[mqtt.ConfigResult, bool]:
        """The MQTT result for a CONFIG_RESULT, and whether a request was waiting for it."""
        expected = self._pending.pop((device, result.request_id), None) is not None
        return result_from_frame(device, result, now_ms), expected

    def expired(self, mono: float, now_ms: int) -> list[mqtt.ConfigResult]:
        """Requests whose deadline passed, answered ``timeout``."""
        out = []
        for key, deadline in list(self._pending.items()):
            if mono >= deadline:
                del self._pending[key]
                out.append(failure(key[0], key[1], "timeout", f"no CONFIG_RESULT within {self.timeout_s:g} s", now_ms))
        return out
