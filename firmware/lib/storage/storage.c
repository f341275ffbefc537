/* Persistent records in EEPROM; storage.h draws the layout and proves the wear budget. */
#include "storage.h"

#include <string.h>

#include "../frames/frames.h"
#include "../hal.h"

/* Distinct CRC salts so a record can never be mistaken for a record of another type. */
#define SALT_CALIB 0x0C1Bu
#define SALT_ID 0x01D0u
#define SALT_RING 0xE4E8u    /* bidirectional ring (firmware 1.1) */
#define SALT_RING_V1 0xE4E7u /* import-only ring of firmware 1.0, read once when upgrading */

static void put32(uint8_t *p, uint32_t v) { for (uint8_t k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static uint32_t get32(const uint8_t *p) { return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }

static void putn(uint8_t *p, uint64_t v, uint8_t n) { for (uint8_t k = 0; k < n; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static uint64_t getn(const uint8_t *p, uint8_t n)
{
    uint64_t v = 0;
    for (uint8_t k = 0; k < n; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static uint16_t rec_crc(const uint8_t *p, uint8_t len, uint16_t salt) { return frame_crc16(p, len) ^ salt; }

static uint8_t crc_ok(const uint8_t *p, uint8_t len, uint16_t salt)
{
    uint16_t c = rec_crc(p, len, salt);
    return p[len] == (uint8_t)c && p[len + 1] == (uint8_t)(c >> 8);
}

static void crc_put(uint8_t *p, uint8_t len, uint16_t salt)
{
    uint16_t c = rec_crc(p, len, salt);
    p[len] = (uint8_t)c;
    p[len + 1] = (uint8_t)(c >> 8);
}

uint8_t storage_load_calib(calib_t *c, const calib_t *factory)
{
    uint8_t b[16];
    hal_eeprom_read(STORAGE_CALIB_ADDR, b, sizeof b);
    if (!crc_ok(b, 14, SALT_CALIB)) {
        *c = *factory;
        return 0;
    }
    c->report_period_ms = get32(b);
    c->v_gain = get32(b + 4);
    c->i_gain = get32(b + 8);
    c->phase_cdeg = (int16_t)(b[12] | (b[13] << 8));
    return 1;
}

uint8_t storage_save_calib(const calib_t *c)
{
    uint8_t b[16];
    put32(b, c->report_period_ms);
    put32(b + 4, c->v_gain);
    put32(b + 8, c->i_gain);
    b[12] = (uint8_t)c->phase_cdeg;
    b[13] = (uint8_t)((uint16_t)c->phase_cdeg >> 8);
    crc_put(b, 14, SALT_CALIB);
    return hal_eeprom_write(STORAGE_CALIB_ADDR, b, 16);
}

uint8_t storage_load_id(uint8_t id[8], const uint8_t fallback[8])
{
    uint8_t b[10];
    hal_eeprom_read(STORAGE_ID_ADDR, b, sizeof b);
    if (!crc_ok(b, 8, SALT_ID)) {
        memcpy(id, fallback, 8);
        return 0;
    }
    memcpy(id, b, 8);
    return 1;
}

uint8_t storage_save_id(const uint8_t id[8])
{
    uint8_t b[10];
    memcpy(b, id, 8);
    crc_put(b, 8, SALT_ID);
    return hal_eeprom_write(STORAGE_ID_ADDR, b, sizeof b);
}

/* The newest valid slot of one ring format; v1: firmware 1.0's layout (storage.h). */
static void ring_scan(storage_ring_t *r, uint8_t v1)
{
    uint8_t b[STORAGE_SLOT_SIZE];
    for (uint8_t s = 0; s < STORAGE_SLOTS; s++) {
        uint32_t seq;
        int32_t ahead;
        hal_eeprom_read((uint16_t)(STORAGE_RING_ADDR + (uint16_t)s * STORAGE_SLOT_SIZE), b, sizeof b);
        if (!crc_ok(b, 14, v1 ? SALT_RING_V1 : SALT_RING))
            continue;
        seq = v1 ? get32(b) : b[0];
        /* serial-number order: the ring holds consecutive numbers, so "ahead" is well defined */
        ahead = v1 ? (int32_t)(seq - r->rec_seq) : (int8_t)(uint8_t)(seq - r->rec_seq);
        if (r->valid && ahead <= 0)
            continue;
        r->valid = 1;
        r->rec_seq = seq;
        r->slot = s;
        if (v1) {
            r->boot_count = get32(b + 4);
            r->import_mwh = getn(b + 8, 6);
            r->export_mwh = 0;
        } else {
            r->boot_count = (uint32_t)getn(b + 1, 3);
            r->import_mwh = getn(b + 4, 5);
            r->export_mwh = getn(b + 9, 5);
        }
    }
}

void storage_ring_load(storage_ring_t *r)
{
    memset(r, 0, sizeof *r);
    r->slot = STORAGE_SLOTS - 1u; /* so the first save lands in slot 0 */
    ring_scan(r, 0);
    if (!r->valid) {
        ring_scan(r, 1);
        r->rec_seq = 0; /* the first save of the new format is number 1, in the slot after the 1.0 record */
    }
}

static uint64_t clamp(uint64_t mwh) { return mwh > STORAGE_ENERGY_MAX ? STORAGE_ENERGY_MAX : mwh; }

uint8_t storage_ring_save(storage_ring_t *r, uint32_t boot_count, uint64_t import_mwh, uint64_t export_mwh)
{
    uint8_t b[STORAGE_SLOT_SIZE];
    uint8_t slot = (uint8_t)((r->slot + 1u) % STORAGE_SLOTS);
    uint8_t seq = (uint8_t)(r->rec_seq + 1u);
    uint8_t ok;
    import_mwh = clamp(import_mwh);
    export_mwh = clamp(export_mwh);
    boot_count &= STORAGE_BOOT_MASK;
    b[0] = seq;
    putn(b + 1, boot_count, 3);
    putn(b + 4, import_mwh, 5);
    putn(b + 9, export_mwh, 5);
    crc_put(b, 14, SALT_RING);
    ok = hal_eeprom_write((uint16_t)(STORAGE_RING_ADDR + (uint16_t)slot * STORAGE_SLOT_SIZE), b, sizeof b);
    /* Advance even on a failed verify: the next save then moves on to a fresh slot. */
    r->slot = slot;
    r->rec_seq = seq;
    if (ok) {
        r->valid = 1;
        r->boot_count = boot_count;
        r->import_mwh = import_mwh;
        r->export_mwh = export_mwh;
    }
    return ok;
}
