/*
 * Flat C entry points into the portable core for the host tests (loaded with ctypes by tests/firmware).
 * Nothing here is compiled into the AVR firmware.
 */
#include <string.h>

#include "../lib/board.h"
#include "../lib/pstr.h"
#include "../lib/frames/frames.h"
#include "../lib/meter/meter.h"
#include "../lib/metering/metering.h"
#include "../sim/waveform.h"
#include "hal_host.h"

/* ---- codec ---- */

uint16_t cds_crc16(const uint8_t *data, uint32_t len) { return frame_crc16(data, len); }

static uint32_t fields_of(const frame_t *f, uint64_t *v, uint8_t *bytes, uint32_t *nbytes)
{
    *nbytes = 0;
    switch (f->kind) {
    case FRAME_HELLO: {
        const frame_hello_t *h = &f->u.hello;
        memcpy(bytes, h->device_id, 8);
        *nbytes = 8;
        v[0] = h->fw_major; v[1] = h->fw_minor; v[2] = h->fw_patch; v[3] = h->hw_rev;
        v[4] = h->boot_count; v[5] = h->report_period_ms;
        return 6;
    }
    case FRAME_READING:
    case FRAME_READING2: {
        const frame_reading_t *r = &f->u.reading;
        v[0] = r->seq; v[1] = r->uptime_ms; v[2] = r->vrms_mv; v[3] = r->irms_ma; v[4] = (uint64_t)(int64_t)r->p_dw;
        v[5] = r->s_dva; v[6] = (uint64_t)(int64_t)r->pf_milli; v[7] = r->freq_mhz; v[8] = r->energy_mwh;
        v[9] = r->flags; v[10] = r->energy_export_mwh;
        return f->kind == FRAME_READING2 ? 11 : 10;
    }
    case FRAME_STATUS: {
        const frame_status_msg_t *s = &f->u.status;
        v[0] = s->oldest_seq; v[1] = s->next_seq; v[2] = s->queued; v[3] = s->dropped; v[4] = s->rx_errors;
        v[5] = s->sample_rate_hz;
        return 6;
    }
    case FRAME_LOG:
        v[0] = f->u.log.level;
        memcpy(bytes, f->u.log.text, f->u.log.text_len);
        *nbytes = f->u.log.text_len;
        return 1;
    case FRAME_CONFIG_RESULT: {
        const frame_config_result_t *c = &f->u.config_result;
        v[0] = c->request_id; v[1] = c->status; v[2] = c->report_period_ms; v[3] = c->v_gain; v[4] = c->i_gain;
        v[5] = (uint64_t)(int64_t)c->phase_cdeg;
        return 6;
    }
    case FRAME_ACK:
        v[0] = f->u.ack.boot_count; v[1] = f->u.ack.seq;
        return 2;
    case FRAME_CONFIG: {
        const frame_config_t *c = &f->u.config;
        v[0] = c->request_id; v[1] = c->report_period_ms; v[2] = c->v_gain; v[3] = c->i_gain;
        v[4] = (uint64_t)(int64_t)c->phase_cdeg;
        return 5;
    }
    default:
        return 0;
    }
}

static void frame_of(uint8_t kind, const uint64_t *v, const uint8_t *bytes, uint32_t nbytes, frame_t *f)
{
    memset(f, 0, sizeof *f);
    f->kind = kind;
    switch (kind) {
    case FRAME_HELLO:
        memcpy(f->u.hello.device_id, bytes, nbytes < 8 ? nbytes : 8);
        f->u.hello.fw_major = (uint8_t)v[0]; f->u.hello.fw_minor = (uint8_t)v[1];
        f->u.hello.fw_patch = (uint8_t)v[2]; f->u.hello.hw_rev = (uint8_t)v[3];
        f->u.hello.boot_count = (uint32_t)v[4]; f->u.hello.report_period_ms = (uint32_t)v[5];
        break;
    case FRAME_READING:
    case FRAME_READING2: {
        frame_reading_t *r = &f->u.reading;
        r->seq = (uint32_t)v[0]; r->uptime_ms = (uint32_t)v[1]; r->vrms_mv = (uint32_t)v[2];
        r->irms_ma = (uint32_t)v[3]; r->p_dw = (int32_t)v[4]; r->s_dva = (uint32_t)v[5];
        r->pf_milli = (int16_t)v[6]; r->freq_mhz = (uint16_t)v[7]; r->energy_mwh = v[8]; r->flags = (uint16_t)v[9];
        r->energy_export_mwh = kind == FRAME_READING2 ? v[10] : 0;
        break;
    }
    case FRAME_STATUS: {
        frame_status_msg_t *s = &f->u.status;
        s->oldest_seq = (uint32_t)v[0]; s->next_seq = (uint32_t)v[1]; s->queued = (uint16_t)v[2];
        s->dropped = (uint32_t)v[3]; s->rx_errors = (uint16_t)v[4]; s->sample_rate_hz = (uint16_t)v[5];
        break;
    }
    case FRAME_LOG:
        f->u.log.level = (uint8_t)v[0];
        f->u.log.text_len = (uint8_t)(nbytes > 255 ? 255 : nbytes);
        memcpy(f->u.log.text, bytes, nbytes < FRAME_MAX_LOG_TEXT ? nbytes : FRAME_MAX_LOG_TEXT);
        break;
    case FRAME_CONFIG_RESULT: {
        frame_config_result_t *c = &f->u.config_result;
        c->request_id = (uint16_t)v[0]; c->status = (uint8_t)v[1]; c->report_period_ms = (uint32_t)v[2];
        c->v_gain = (uint32_t)v[3]; c->i_gain = (uint32_t)v[4]; c->phase_cdeg = (int16_t)v[5];
        break;
    }
    case FRAME_ACK:
        f->u.ack.boot_count = (uint32_t)v[0]; f->u.ack.seq = (uint32_t)v[1];
        break;
    case FRAME_CONFIG: {
        frame_config_t *c = &f->u.config;
        c->request_id = (uint16_t)v[0]; c->report_period_ms = (uint32_t)v[1]; c->v_gain = (uint32_t)v[2];
        c->i_gain = (uint32_t)v[3]; c->phase_cdeg = (int16_t)v[4];
        break;
    }
    default:
        break;
    }
}

/* Returns the wire length (0 if not encodable); raw gets the decoded frame. */
uint32_t cds_encode(uint8_t kind, const uint64_t *fields, const uint8_t *bytes, uint32_t nbytes, uint8_t *wire,
                    uint8_t *raw, uint32_t *raw_len)
{
    frame_t f;
    frame_of(kind, fields, bytes, nbytes, &f);
    *raw_len = (uint32_t)frame_encode_raw(&f, raw);
    return (uint32_t)frame_encode(&f, wire);
}

int cds_decode_wire(const uint8_t *wire, uint32_t n, uint8_t *kind, uint64_t *fields, uint8_t *bytes,
                    uint32_t *nbytes)
{
    frame_t f;
    frame_status_t st = frame_decode_wire(wire, n, &f);
    if (st == FRAME_OK) {
        *kind = f.kind;
        fields_of(&f, fields, bytes, nbytes);
    }
    return st;
}

/* Feeds a byte stream through the streaming decoder; events[k] = status | kind << 8. Returns the event count. */
uint32_t cds_stream(const uint8_t *data, uint32_t n, int32_t *events, uint32_t cap, uint32_t *max_pending)
{
    frame_decoder_t d;
    frame_t f;
    uint32_t k = 0;
    frame_decoder_init(&d);
    *max_pending = 0;
    for (uint32_t i = 0; i < n; i++) {
        frame_status_t st = frame_decoder_push(&d, data[i], &f);
        if (d.len > *max_pending)
            *max_pending = d.len;
        if (st != FRAME_NONE && k < cap)
            events[k++] = (int32_t)st | (st == FRAME_OK ? (int32_t)f.kind << 8 : 0);
    }
    return k;
}

/* ---- metering ---- */

uint32_t cds_pair_rate(void) { return BOARD_PAIR_RATE_HZ; }

/* Runs the metering core over n_windows windows of synthetic samples, the way firmware/src/main.c does:
 * V at t = n / rate, I half a pair later; the phase interpolation follows the measured frequency.
 * energy[] gets import mWh, import remainder, export mWh, export remainder. */
void cds_metering_run(wave_t *w, const calib_t *c, uint32_t n_windows, metering_result_t *out, uint64_t *energy)
{
    static metering_t m;
    metering_acc_t acc;
    energy_regs_t e;
    uint64_t n = 0;
    uint16_t rate = BOARD_PAIR_RATE_HZ;
    uint16_t freq = 0;
    memset(&e, 0, sizeof e);
    metering_init(&m, metering_window_pairs(c->report_period_ms, rate));
    metering_configure(&m, m.window_pairs, metering_back_q8(c->phase_cdeg, 0, rate));
    for (uint32_t win = 0; win < n_windows;) {
        double t = (double)n / rate;
        uint16_t v = wave_adc(w, wave_v_pin_mv(w, t));
        uint16_t i = wave_adc(w, wave_i_pin_mv(w, t + 0.5 / rate));
        n++;
        metering_add_pair(&m, v, i);
        if (metering_take(&m, &acc)) {
            metering_compute(&acc, c, rate, &out[win]);
            energy_regs_add(&e, out[win].p_mw, out[win].pairs, rate);
            if (out[win].freq_mhz)
                freq = out[win].freq_mhz;
            metering_configure(&m, m.window_pairs, metering_back_q8(c->phase_cdeg, freq, rate));
            win++;
        }
    }
    energy[0] = e.imp.mwh;
    energy[1] = e.imp.rem;
    energy[2] = e.exp.mwh;
    energy[3] = e.exp.rem;
}

/* regs[] as in cds_metering_run: import mWh, import remainder, export mWh, export remainder. */
void cds_energy_add(uint64_t *regs, int32_t p_mw, uint32_t pairs)
{
    energy_regs_t e = {{regs[0], (uint32_t)regs[1]}, {regs[2], (uint32_t)regs[3]}};
    energy_regs_add(&e, p_mw, pairs, BOARD_PAIR_RATE_HZ);
    regs[0] = e.imp.mwh;
    regs[1] = e.imp.rem;
    regs[2] = e.exp.mwh;
    regs[3] = e.exp.rem;
}

/* ---- meter state machine with the host HAL ---- */

static meter_t g_meter;
static uint8_t g_tx[8192];
static uint32_t g_tx_len;

static void host_tx(const uint8_t *data, uint8_t len, void *ctx)
{
    (void)ctx;
    if (g_tx_len + len <= sizeof g_tx) {
        memcpy(g_tx + g_tx_len, data, len);
        g_tx_len += len;
    }
}

void cds_meter_boot(uint32_t now_ms, uint32_t period_ms)
{
    static const uint8_t dev[8] = BOARD_DEVICE_ID;
    meter_identity_t id;
    memset(&id, 0, sizeof id);
    memcpy(id.device_id, dev, 8);
    id.fw_major = FW_MAJOR; id.fw_minor = FW_MINOR; id.fw_patch = FW_PATCH; id.hw_rev = HW_REV;
    id.factory.report_period_ms = period_ms ? period_ms : FACTORY_PERIOD_MS;
    id.factory.v_gain = FACTORY_V_GAIN;
    id.factory.i_gain = FACTORY_I_GAIN;
    id.factory.phase_cdeg = FACTORY_PHASE_CDEG;
    id.pair_rate_hz = BOARD_PAIR_RATE_HZ;
    g_tx_len = 0;
    meter_boot(&g_meter, &id, host_tx, 0, now_ms, CDS_STR("boot"));
}

uint32_t cds_meter_take_tx(uint8_t *buf, uint32_t cap)
{
    uint32_t n = g_tx_len < cap ? g_tx_len : cap;
    memcpy(buf, g_tx, n);
    memmove(g_tx, g_tx + n, g_tx_len - n);
    g_tx_len -= n;
    return n;
}

void cds_meter_rx(const uint8_t *data, uint32_t n, uint32_t now_ms)
{
    for (uint32_t k = 0; k < n; k++)
        meter_rx(&g_meter, data[k], now_ms);
}

void cds_meter_window(const metering_result_t *r, uint32_t now_ms) { meter_window(&g_meter, r, now_ms); }
void cds_meter_poll(uint32_t now_ms) { meter_poll(&g_meter, now_ms); }
uint64_t cds_meter_energy(void) { return g_meter.energy.imp.mwh; }
uint64_t cds_meter_export(void) { return g_meter.energy.exp.mwh; }
uint32_t cds_meter_boot_count(void) { return g_meter.boot_count; }
uint32_t cds_meter_calib(calib_t *out) { *out = g_meter.calib; return g_meter.calib_stored; }
uint8_t cds_meter_reconfigure(void) { uint8_t r = g_meter.reconfigure; g_meter.reconfigure = 0; return r; }

uint8_t *cds_eeprom(void) { return host_eeprom; }
uint32_t *cds_eeprom_writes(void) { return host_eeprom_writes; }
void cds_eeprom_erase(void) { host_eeprom_erase(); }
void cds_eeprom_fail(int fail) { host_eeprom_fail_writes = fail; }
uint32_t cds_storage_slots(void) { return STORAGE_SLOTS; }
