/*
 * EEPROM layout (ATmega328P: 1024 bytes, 100 000 erase/write cycles per cell guaranteed):
 *
 *   0x000  calibration   16 B  report_period_ms u32 | v_gain u32 | i_gain u32 | phase_cdeg i16 | crc16
 *   0x010  identity      16 B  device_id[8] | crc16 | 6 B unused
 *   0x020  energy ring  992 B  62 slots x 16 B:
 *                              rec_seq u8 | boot_count u24 | import_mwh u40 | export_mwh u40 | crc16
 *
 * Wear levelling of both energy registers and the boot counter (one record type, one ring): every save writes
 * the next slot with rec_seq + 1; at boot the valid slot (CRC) with the highest rec_seq is the current one. A save
 * torn by a power cut leaves a bad CRC in the new slot, so the previous record stays current.
 *
 * Why these widths: the export register had to fit in the same 16-byte slot, because a wider slot means fewer
 * slots and the wear budget below has no room for that (20-byte slots: 49 slots, 109 000 writes per cell).
 * rec_seq needs only to order the 62 slots of the ring, which always hold consecutive numbers, so 8 bits compared
 * with serial-number arithmetic suffice; 24 bits of boot counter last 16.7 million resets (then it wraps, which
 * the protocol sees as a new boot value like any other); 40 bits of mWh hold 1.1 GWh per register, 19 years of a
 * 30 A / 220 V circuit at full load; a register saturates there rather than wrap.
 *
 * Firmware 1.0 wrote the ring as rec_seq u32 | boot_count u32 | energy_mwh u48 | crc16 with another CRC salt.
 * When no slot of the current format is valid, the newest 1.0 record is read instead (import register and boot
 * counter kept, export 0), and the first save continues the ring after it: an upgrade keeps the meter's kWh.
 *
 * Endurance arithmetic, worst case of one save per minute for 10 years plus one save per boot:
 *   10 years = 3652.5 days x 1440 min/day            = 5 259 600 saves
 *   boots: even one reset per hour for 10 years       =    87 660 saves
 *   total                                             = 5 347 260 saves
 *   per slot (each byte of a slot is written once per save that lands on it):
 *   5 347 260 / 62 slots                              =    86 246 writes per cell  <  100 000 (14 % margin)
 * The firmware saves at most once per minute and only when the register changed, so a meter with no load or
 * light load wears the EEPROM far less. The calibration and identity records are written only by CONFIG or at
 * the factory.
 */
#ifndef CDS_STORAGE_H
#define CDS_STORAGE_H

#include <stdint.h>

#include "../metering/metering.h"

#define STORAGE_CALIB_ADDR 0x000u
#define STORAGE_ID_ADDR 0x010u
#define STORAGE_RING_ADDR 0x020u
#define STORAGE_SLOT_SIZE 16u
#define STORAGE_SLOTS 62u
#define STORAGE_ENERGY_MAX 0xFFFFFFFFFFull /* u40 */
#define STORAGE_BOOT_MASK 0xFFFFFFul       /* u24 */

typedef struct {
    uint32_t rec_seq;     /* rec_seq of the current slot; 0 with no valid slot (or a 1.0 record) */
    uint8_t slot;         /* index of the current slot */
    uint8_t valid;        /* a valid record was found at boot */
    uint32_t boot_count;
    uint64_t import_mwh;
    uint64_t export_mwh;
} storage_ring_t;

/* Calibration: returns 1 if the stored record is valid, else fills factory values and returns 0. */
uint8_t storage_load_calib(calib_t *c, const calib_t *factory);
uint8_t storage_save_calib(const calib_t *c);

/* Device id: returns 1 if a valid id was stored, else copies the fallback. */
uint8_t storage_load_id(uint8_t id[8], const uint8_t fallback[8]);
uint8_t storage_save_id(const uint8_t id[8]);

void storage_ring_load(storage_ring_t *r);
/* Writes boot_count and both registers into the next slot; returns 1 if it verified. */
uint8_t storage_ring_save(storage_ring_t *r, uint32_t boot_count, uint64_t import_mwh, uint64_t export_mwh);

#endif
