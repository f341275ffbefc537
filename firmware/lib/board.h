/*
 * Board constants shared by the AVR build and the host build: the sampling rate the HAL produces and the
 * factory calibration for the reference front end (see firmware/sim/waveform.h and docs/firmware.md).
 */
#ifndef CDS_BOARD_H
#define CDS_BOARD_H

#define FW_MAJOR 1
#define FW_MINOR 1
#define FW_PATCH 0
#define HW_REV 1

/* 16 MHz / 2500 = 6400 conversions/s, alternating V and I: 3200 pairs/s (53.3 pairs per 60 Hz cycle). */
#define BOARD_CONV_RATE_HZ 6400u
#define BOARD_PAIR_RATE_HZ 3200u

/* Factory calibration: 10-bit ADC, Vref 5 V -> 4882.8125 uV per count at the pin.
 *   voltage: 5 mV at the pin per mains volt       -> 976 563 uV of mains per count
 *   current: SCT-013-030, 33.33 mV per ampere      -> 146 484 uA per count */
#define FACTORY_PERIOD_MS 1000u
#define FACTORY_V_GAIN 976563u
#define FACTORY_I_GAIN 146484u
#define FACTORY_PHASE_CDEG 0

/* Fallback serial number when the EEPROM identity record is blank ("a1c55" + unit number). */
#ifndef BOARD_DEVICE_ID
#define BOARD_DEVICE_ID {0xa1, 0xc5, 0x50, 0x00, 0x00, 0x00, 0x00, 0x01}
#endif

#endif
