/* Meter protocol state machine; meter.h lists the rules it implements. */
#include "meter.h"

#include <string.h>

#include "../pstr.h"

static void send(meter_t *m, const frame_t *f)
{
    uint8_t wire[FRAME_MAX_WIRE];
    uint8_t n = (uint8_t)frame_encode(f, wire);
    if (n)
        m->tx(wire, n, m->tx_ctx);
}

static void send_hello(meter_t *m)
{
    frame_t f;
    f.kind = FRAME_HELLO;
    memcpy(f.u.hello.device_id, m->id.device_id, 8);
    f.u.hello.fw_major = m->id.fw_major;
    f.u.hello.fw_minor = m->id.fw_minor;
    f.u.hello.fw_patch = m->id.fw_patch;
    f.u.hello.hw_rev = m->id.hw_rev;
    f.u.hello.boot_count = m->boot_count;
    f.u.hello.report_period_ms = m->calib.report_period_ms;
    send(m, &f);
}

/* seq of the oldest held reading (next_seq when none is held) */
static uint32_t oldest_seq(const meter_t *m) { return m->next_seq - m->q_count; }

/* The k-th oldest held reading as a READING2 frame. */
static void held_frame(const meter_t *m, uint8_t k, frame_t *f)
{
    const meter_held_t *h = &m->queue[(uint8_t)((m->q_head + k) % METER_QUEUE)];
    frame_reading_t *r = &f->u.reading;
    f->kind = FRAME_READING2;
    r->seq = oldest_seq(m) + k;
    r->uptime_ms = h->uptime_ms;
    r->vrms_mv = h->vrms_mv;
    r->irms_ma = h->irms_ma;
    r->p_dw = h->p_dw;
    r->s_dva = h->s_dva;
    r->pf_milli = h->pf_milli;
    r->freq_mhz = h->freq_mhz;
    r->energy_mwh = h->import_mwh;
    r->energy_export_mwh = h->export_mwh;
    r->flags = h->flags;
}

static void send_status(meter_t *m, uint32_t now_ms)
{
    frame_t f;
    f.kind = FRAME_STATUS;
    f.u.status.oldest_seq = oldest_seq(m);
    f.u.status.next_seq = m->next_seq;
    f.u.status.queued = m->q_count;
    f.u.status.dropped = m->dropped;
    f.u.status.rx_errors = m->rx_errors;
    f.u.status.sample_rate_hz = m->sample_rate_hz;
    send(m, &f);
    m->last_status_ms = now_ms;
}

void meter_log(meter_t *m, uint8_t level, const char *text)
{
    frame_t f;
    uint8_t n = 0;
    f.kind = FRAME_LOG;
    f.u.log.level = level;
    char ch;
    while (n < FRAME_MAX_LOG_TEXT && (ch = cds_str_byte(text + n)) != 0)
        f.u.log.text[n++] = ch;
    f.u.log.text_len = n;
    send(m, &f);
}

static void resend_all(meter_t *m, uint32_t now_ms, uint8_t status_after)
{
    frame_t f;
    for (uint8_t k = 0; k < m->q_count; k++) {
        held_frame(m, k, &f);
        f.u.reading.flags |= READING_RESENT;
        send(m, &f);
    }
    if (status_after)
        send_status(m, now_ms);
    m->last_progress_ms = now_ms;
}

uint16_t meter_flags_base(const meter_t *m)
{
    const calib_t *c = &m->calib, *fc = &m->id.factory;
    uint8_t factory_gains = c->v_gain == fc->v_gain && c->i_gain == fc->i_gain && c->phase_cdeg == fc->phase_cdeg;
    return (!m->calib_stored || factory_gains) ? READING_UNCALIBRATED : 0;
}

void meter_boot(meter_t *m, const meter_identity_t *id, meter_tx_fn tx, void *ctx, uint32_t now_ms, const char *note)
{
    static const uint8_t zero = 0;
    uint8_t saved;
    memset(m, 0, sizeof *m);
    m->id = *id;
    m->tx = tx;
    m->tx_ctx = ctx;
    frame_decoder_init(&m->dec);
    storage_load_id(m->id.device_id, id->device_id);
    m->calib_stored = storage_load_calib(&m->calib, &id->factory);
    storage_ring_load(&m->ring);
    m->boot_count = m->ring.boot_count + 1u;
    m->energy.imp.mwh = m->ring.import_mwh;
    m->energy.exp.mwh = m->ring.export_mwh;
    saved = storage_ring_save(&m->ring, m->boot_count, m->energy.imp.mwh, m->energy.exp.mwh);
    m->next_seq = 1;
    m->first_pending = 1;
    m->reconfigure = 1;
    m->last_save_ms = now_ms;
    m->last_progress_ms = now_ms;

    m->tx(&zero, 1, m->tx_ctx); /* resynchronise a receiver that saw half a frame before the reset */
    send_hello(m);
    send_status(m, now_ms);
    if (note)
        meter_log(m, 1, note);
    if (!m->calib_stored)
        meter_log(m, 2, CDS_STR("calibration CRC bad or blank: factory values"));
    if (!saved)
        meter_log(m, 3, CDS_STR("EEPROM write failed: boot count not persisted"));
}

void meter_save_energy(meter_t *m, uint32_t now_ms)
{
    m->last_save_ms = now_ms;
    if (m->ring.valid && m->ring.import_mwh == m->energy.imp.mwh && m->ring.export_mwh == m->energy.exp.mwh &&
        m->ring.boot_count == (m->boot_count & STORAGE_BOOT_MASK))
        return;
    if (!storage_ring_save(&m->ring, m->boot_count, m->energy.imp.mwh, m->energy.exp.mwh))
        meter_log(m, 3, CDS_STR("EEPROM write failed: energy not persisted"));
}

void meter_window(meter_t *m, const metering_result_t *r, uint32_t now_ms)
{
    frame_t f;
    meter_held_t *q;
    uint16_t flags = meter_flags_base(m);

    energy_regs_add(&m->energy, r->p_mw, r->pairs, m->id.pair_rate_hz);
    if (r->clip & METERING_CLIP_V) flags |= READING_V_CLIP;
    if (r->clip & METERING_CLIP_I) flags |= READING_I_CLIP;
    if (m->first_pending) {
        flags |= READING_FIRST_AFTER_BOOT;
        m->first_pending = 0;
    }

    if (m->q_count == METER_QUEUE) {
        m->q_head = (uint8_t)((m->q_head + 1u) % METER_QUEUE);
        m->q_count--;
        m->dropped++;
    }
    if (m->q_count == 0)
        m->last_progress_ms = now_ms; /* the resend timer runs from the oldest unacknowledged reading */
    q = &m->queue[(uint8_t)((m->q_head + m->q_count) % METER_QUEUE)];
    m->q_count++;
    m->next_seq++;

    q->uptime_ms = now_ms;
    q->vrms_mv = r->vrms_mv;
    q->irms_ma = r->irms_ma;
    q->p_dw = r->p_mw >= 0 ? (r->p_mw + 50) / 100 : -((-r->p_mw + 50) / 100);
    q->s_dva = (r->s_mva + 50u) / 100u;
    q->import_mwh = m->energy.imp.mwh;
    q->export_mwh = m->energy.exp.mwh;
    if (r->vrms_mv < METER_NO_SIGNAL_MV) {
        flags |= READING_NO_SIGNAL;
        q->pf_milli = 0;
        q->freq_mhz = 0;
    } else {
        q->pf_milli = r->pf_milli;
        q->freq_mhz = r->freq_mhz;
    }
    q->flags = flags;

    held_frame(m, (uint8_t)(m->q_count - 1u), &f);
    send(m, &f);
}

static uint8_t config_valid(const frame_config_t *c)
{
    if (c->report_period_ms != CONFIG_KEEP &&
        (c->report_period_ms < CALIB_PERIOD_MIN || c->report_period_ms > CALIB_PERIOD_MAX))
        return 0;
    if (c->v_gain != CONFIG_KEEP && (c->v_gain < CALIB_GAIN_MIN || c->v_gain > CALIB_GAIN_MAX))
        return 0;
    if (c->i_gain != CONFIG_KEEP && (c->i_gain < CALIB_GAIN_MIN || c->i_gain > CALIB_GAIN_MAX))
        return 0;
    if (c->phase_cdeg != CONFIG_KEEP_PHASE && (c->phase_cdeg < CALIB_PHASE_MIN || c->phase_cdeg > CALIB_PHASE_MAX))
        return 0;
    return 1;
}

static void on_config(meter_t *m, const frame_config_t *c)
{
    frame_t f;
    uint8_t status = CONFIG_REJECTED;
    if (config_valid(c)) {
        if (c->report_period_ms != CONFIG_KEEP) m->calib.report_period_ms = c->report_period_ms;
        if (c->v_gain != CONFIG_KEEP) m->calib.v_gain = c->v_gain;
        if (c->i_gain != CONFIG_KEEP) m->calib.i_gain = c->i_gain;
        if (c->phase_cdeg != CONFIG_KEEP_PHASE) m->calib.phase_cdeg = c->phase_cdeg;
        m->reconfigure = 1;
        if (storage_save_calib(&m->calib)) {
            status = CONFIG_APPLIED;
            m->calib_stored = 1;
        } else {
            status = CONFIG_STORAGE_ERROR;
        }
    }
    f.kind = FRAME_CONFIG_RESULT;
    f.u.config_result.request_id = c->request_id;
    f.u.config_result.status = status;
    f.u.config_result.report_period_ms = m->calib.report_period_ms;
    f.u.config_result.v_gain = m->calib.v_gain;
    f.u.config_result.i_gain = m->calib.i_gain;
    f.u.config_result.phase_cdeg = m->calib.phase_cdeg;
    send(m, &f);
}

static void on_ack(meter_t *m, const frame_ack_t *a, uint32_t now_ms)
{
    uint8_t progressed = 0;
    uint32_t oldest;
    if (a->boot_count != m->boot_count)
        return;
    while (m->q_count && (int32_t)(a->seq - oldest_seq(m)) >= 0) {
        m->q_head = (uint8_t)((m->q_head + 1u) % METER_QUEUE);
        m->q_count--;
        progressed = 1;
    }
    if (progressed)
        m->last_progress_ms = now_ms;
    oldest = oldest_seq(m);
    /* The gateway waits for a.seq + 1; if that reading was dropped from the ring, say so. */
    if ((int32_t)(oldest - (a->seq + 1u)) > 0)
        send_status(m, now_ms);
}

void meter_rx(meter_t *m, uint8_t byte, uint32_t now_ms)
{
    frame_t f;
    frame_status_t st = frame_decoder_push(&m->dec, byte, &f);
    if (st == FRAME_NONE)
        return;
    if (st != FRAME_OK) {
        if (m->rx_errors != 0xFFFFu)
            m->rx_errors++;
        return;
    }
    switch (f.kind) {
    case FRAME_ACK:
        on_ack(m, &f.u.ack, now_ms);
        break;
    case FRAME_CONFIG:
        on_config(m, &f.u.config);
        break;
    case FRAME_SYNC:
        send_hello(m);
        send_status(m, now_ms);
        resend_all(m, now_ms, 0);
        break;
    default:
        break; /* a meter -> gateway kind echoed back: valid, not for us */
    }
}

void meter_poll(meter_t *m, uint32_t now_ms)
{
    uint32_t timeout = 2u * m->calib.report_period_ms;
    if (timeout < METER_MIN_RESEND_MS)
        timeout = METER_MIN_RESEND_MS;
    if (m->q_count && now_ms - m->last_progress_ms >= timeout)
        resend_all(m, now_ms, 1);
    if (now_ms - m->last_status_ms >= METER_STATUS_PERIOD_MS)
        send_status(m, now_ms);
    if (now_ms - m->last_save_ms >= METER_SAVE_PERIOD_MS)
        meter_save_energy(m, now_ms);
}
