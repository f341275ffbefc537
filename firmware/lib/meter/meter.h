/*
 * The meter's side of the AICSS protocol (docs/protocol.md, section 3), as a state machine with no I/O of its
 * own: the target feeds it received bytes, finished measuring windows and the time in milliseconds, and it writes
 * frames through a callback. Persistence goes through storage.h (and so through the HAL's EEPROM functions).
 *
 * - HELLO (after reset: preceded by a 0x00 for receiver resync) with the boot counter, then STATUS.
 * - READING2 (signed power, import and export registers) seq 1, 2, ... per boot, kept in a RAM ring of
 *   METER_QUEUE until acknowledged; a full ring drops the oldest and counts it in `dropped`.
 * - Cumulative ACK for this boot only; go-back-N resend (RESENT flag) followed by STATUS after
 *   max(2 s, 2 x report period) with no ACK progress; SYNC -> HELLO + STATUS + resend of everything held.
 * - STATUS every 10 s and when an ACK shows the gateway waits for a reading that is no longer held.
 * - CONFIG -> CONFIG_RESULT (0 applied+stored, 1 rejected, 2 applied but not stored).
 * - Both energy registers saved to the wear-levelled ring at most once per minute, only when one changed.
 */
#ifndef CDS_METER_H
#define CDS_METER_H

#include <stdint.h>

#include "../frames/frames.h"
#include "../metering/metering.h"
#include "../storage/storage.h"

#ifndef METER_QUEUE
#define METER_QUEUE 16u
#endif
#define METER_STATUS_PERIOD_MS 10000u
#define METER_SAVE_PERIOD_MS 60000u
#define METER_MIN_RESEND_MS 2000u
/* NO_SIGNAL below 10 % of the 127 V nominal of Brazilian low-voltage supply (the lower of 127/220 V). */
#define METER_NO_SIGNAL_MV 12700u

#define CALIB_PERIOD_MIN 250u
#define CALIB_PERIOD_MAX 3600000u
#define CALIB_GAIN_MIN 1u
#define CALIB_GAIN_MAX 10000000u
#define CALIB_PHASE_MIN (-1000)
#define CALIB_PHASE_MAX 1000

typedef void (*meter_tx_fn)(const uint8_t *data, uint8_t len, void *ctx);

typedef struct {
    uint8_t device_id[8];
    uint8_t fw_major, fw_minor, fw_patch, hw_rev;
    calib_t factory;
    uint16_t pair_rate_hz;
} meter_identity_t;

/* A reading held until acknowledged. Its seq is not stored: held readings are consecutive by construction (a
 * full ring drops the oldest), so the k-th oldest has next_seq - q_count + k. That saves 64 B of the 2 KB RAM,
 * which the export register in every held reading needs. */
typedef struct {
    uint32_t uptime_ms;
    uint32_t vrms_mv;
    uint32_t irms_ma;
    int32_t p_dw;
    uint32_t s_dva;
    int16_t pf_milli;
    uint16_t freq_mhz;
    uint64_t import_mwh;
    uint64_t export_mwh;
    uint16_t flags;
} meter_held_t;

typedef struct {
    meter_identity_t id;
    calib_t calib;
    uint8_t calib_stored;       /* the calibration in force came from EEPROM or a CONFIG */
    uint32_t boot_count;

    meter_held_t queue[METER_QUEUE];
    uint8_t q_head;             /* index of the oldest */
    uint8_t q_count;
    uint32_t next_seq;
    uint32_t dropped;
    uint16_t rx_errors;
    uint16_t sample_rate_hz;

    uint32_t last_progress_ms;  /* last ACK progress (or first reading after an empty queue, or a resend) */
    uint32_t last_status_ms;
    uint32_t last_save_ms;
    uint8_t first_pending;      /* next reading is the first of this boot */
    uint8_t reconfigure;        /* calibration changed: the target must reconfigure its metering */

    energy_regs_t energy;
    storage_ring_t ring;

    frame_decoder_t dec;
    meter_tx_fn tx;
    void *tx_ctx;
} meter_t;

/* Load EEPROM, bump and persist the boot counter, send 0x00 HELLO STATUS (and a LOG line if note != 0; note is
 * a CDS_STR() constant). */
void meter_boot(meter_t *m, const meter_identity_t *id, meter_tx_fn tx, void *ctx, uint32_t now_ms, const char *note);
void meter_rx(meter_t *m, uint8_t byte, uint32_t now_ms);
/* A finished measuring window: integrate energy into the register of its direction, queue and send a READING2. */
void meter_window(meter_t *m, const metering_result_t *r, uint32_t now_ms);
/* Timers: resend, periodic STATUS, energy save. Call often (every main loop pass). */
void meter_poll(meter_t *m, uint32_t now_ms);
/* text: a CDS_STR() constant (in flash on the AVR) */
void meter_log(meter_t *m, uint8_t level, const char *text);
/* Save the energy registers now if one changed (e.g. on brown-out warning). */
void meter_save_energy(meter_t *m, uint32_t now_ms);
uint16_t meter_flags_base(const meter_t *m);

#endif
