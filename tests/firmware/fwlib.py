"""ctypes mirrors of the host build of the firmware core (firmware/host/host_api.c), shared by the tests."""

from __future__ import annotations

import ctypes
from pathlib import Path


class Wave(ctypes.Structure):
    """Mirror of wave_t (firmware/sim/waveform.h)."""

    _fields_ = [
        (name, ctypes.c_double)
        for name in (
            "freq_hz",
            "vrms",
            "irms",
            "phase_deg",
            "vh3",
            "vh5",
            "ih3",
            "ih5",
            "v_dc_mv",
            "i_dc_mv",
            "noise_mv",
            "sensor_lag_deg",
            "v_mv_per_v",
            "i_mv_per_a",
            "bias_mv",
            "vref_mv",
        )
    ] + [("rng", ctypes.c_uint64)]


class Calib(ctypes.Structure):
    """Mirror of calib_t (firmware/lib/metering/metering.h)."""

    _fields_ = [
        ("report_period_ms", ctypes.c_uint32),
        ("v_gain", ctypes.c_uint32),
        ("i_gain", ctypes.c_uint32),
        ("phase_cdeg", ctypes.c_int16),
    ]


class Result(ctypes.Structure):
    """Mirror of metering_result_t."""

    _fields_ = [
        ("vrms_mv", ctypes.c_uint32),
        ("irms_ma", ctypes.c_uint32),
        ("p_mw", ctypes.c_int32),
        ("s_mva", ctypes.c_uint32),
        ("pf_milli", ctypes.c_int16),
        ("freq_mhz", ctypes.c_uint16),
        ("clip", ctypes.c_uint8),
        ("pairs", ctypes.c_uint32),
    ]


FACTORY = {"report_period_ms": 1000, "v_gain": 976563, "i_gain": 146484, "phase_cdeg": 0}


def load_cds(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    u8p = ctypes.POINTER(ctypes.c_uint8)
    u64p = ctypes.POINTER(ctypes.c_uint64)
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.cds_crc16.restype = ctypes.c_uint16
    lib.cds_crc16.argtypes = [u8p, ctypes.c_uint32]
    lib.cds_encode.restype = ctypes.c_uint32
    lib.cds_encode.argtypes = [ctypes.c_uint8, u64p, u8p, ctypes.c_uint32, u8p, u8p, u32p]
    lib.cds_decode_wire.restype = ctypes.c_int
    lib.cds_decode_wire.argtypes = [u8p, ctypes.c_uint32, u8p, u64p, u8p, u32p]
    lib.cds_stream.restype = ctypes.c_uint32
    lib.cds_stream.argtypes = [u8p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int32), ctypes.c_uint32, u32p]
    lib.cds_metering_run.restype = None
    lib.cds_metering_run.argtypes = [
        ctypes.POINTER(Wave),
        ctypes.POINTER(Calib),
        ctypes.c_uint32,
        ctypes.POINTER(Result),
        u64p,
    ]
    lib.cds_energy_add.argtypes = [u64p, ctypes.c_int32, ctypes.c_uint32]
    lib.cds_pair_rate.restype = ctypes.c_uint32
    lib.cds_meter_boot.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
    lib.cds_meter_take_tx.restype = ctypes.c_uint32
    lib.cds_meter_take_tx.argtypes = [u8p, ctypes.c_uint32]
    lib.cds_meter_rx.argtypes = [u8p, ctypes.c_uint32, ctypes.c_uint32]
    lib.cds_meter_window.argtypes = [ctypes.POINTER(Result), ctypes.c_uint32]
    lib.cds_meter_poll.argtypes = [ctypes.c_uint32]
    lib.cds_meter_energy.restype = ctypes.c_uint64
    lib.cds_meter_boot_count.restype = ctypes.c_uint32
    lib.cds_meter_calib.restype = ctypes.c_uint32
    lib.cds_meter_calib.argtypes = [ctypes.POINTER(Calib)]
    lib.cds_meter_reconfigure.restype = ctypes.c_uint8
    lib.cds_eeprom.restype = u8p
    lib.cds_eeprom_writes.restype = u32p
    lib.cds_eeprom_fail.argtypes = [ctypes.c_int]
    lib.cds_storage_slots.restype = ctypes.c_uint32
    return lib
