/* Persistent records in EEPROM; storage.h draws the layout and proves the wear budget. */
#include "storage.h"

#include <string.h>

#include "../frames/frames.h"
#include "../hal.h"

/* Distinct CRC salts so a record can never be mistaken for a record of another type. */
#define SALT_CALIB 0x0C1Bu
#define SALT_ID 0x01D0u
#define SALT_RING 0xE4E7u

static void put32(uint8_t *p, uint32_t v) { for (uint8_t k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static uint32_t get32(const uint8_t *p) { return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }

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

void storage_ring_load(storage_ring_t *r)
{
    uint8_t b[STORAGE_SLOT_SIZE];
    memset(r, 0, sizeof *r);
    r->slot = STORAGE_SLOTS - 1u; /* so the first save lands in slot 0 */
    for (uint8_t s = 0; s < STORAGE_SLOTS; s++) {
        uint32_t seq;
        hal_eeprom_read((uint16_t)(STORAGE_RING_ADDR + (uint16_t)s * STORAGE_SLOT_SIZE), b, sizeof b);
        if (!crc_ok(b, 14, SALT_RING))
            continue;
        seq = get32(b);
        if (r->valid && (int32_t)(seq - r->rec_seq) <= 0)
            continue;
        r->valid = 1;
        r->rec_seq = seq;
        r->slot = s;
        r->boot_count = get32(b + 4);
        r->energy_mwh = 0;
        for (uint8_t k = 0; k < 6; k++)
            r->energy_mwh |= (uint64_t)b[8 + k] << (8 * k);
    }
}

uint8_t storage_ring_save(storage_ring_t *r, uint32_t boot_count, uint64_t energy_mwh)
{
    uint8_t b[STORAGE_SLOT_SIZE];
    uint8_t slot = (uint8_t)((r->slot + 1u) % STORAGE_SLOTS);
    uint8_t ok;
    if (energy_mwh > STORAGE_ENERGY_MAX)
        energy_mwh = STORAGE_ENERGY_MAX;
    put32(b, r->rec_seq + 1u);
    put32(b + 4, boot_count);
    for (uint8_t k = 0; k < 6; k++)
        b[8 + k] = (uint8_t)(energy_mwh >> (8 * k));
    crc_put(b, 14, SALT_RING);
    ok = hal_eeprom_write((uint16_t)(STORAGE_RING_ADDR + (uint16_t)slot * STORAGE_SLOT_SIZE), b, sizeof b);
    /* Advance even on a failed verify: the next save then moves on to a fresh slot. */
    r->slot = slot;
    r->rec_seq++;
    if (ok) {
        r->valid = 1;
        r->boot_count = boot_count;
        r->energy_mwh = energy_mwh;
    }
    return ok;
}
