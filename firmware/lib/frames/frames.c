/* AICSS frame codec: see frames.h for the byte layout and docs/protocol.md for the specification. */
#include "frames.h"

#include <string.h>

uint16_t frame_crc16(const uint8_t *data, size_t len)
{
    /* Bitwise CRC-16/CCITT-FALSE: no 512-byte table, which would not fit the AVR's RAM budget. */
    uint16_t crc = 0xFFFFu;
    while (len--) {
        crc ^= (uint16_t)((uint16_t)*data++ << 8);
        for (uint8_t b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

size_t cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    if (out_cap < len + 1 + len / 254)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFF) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

size_t cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, int *ok)
{
    size_t i = 0, o = 0;
    *ok = 0;
    while (i < len) {
        uint8_t code = in[i++];
        if (code == 0)
            return 0;
        for (uint8_t k = 1; k < code; k++) {
            if (i >= len || in[i] == 0 || o >= out_cap)
                return 0;
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < len) {
            if (o >= out_cap)
                return 0;
            out[o++] = 0;
        }
    }
    *ok = 1;
    return o;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* Strict UTF-8 (as Python's decoder): no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint8_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return 0;
        if (i + need >= n) /* bytes i+1 .. i+need must exist */
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (uint8_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += (size_t)need + 1;
    }
    return 1;
}

size_t frame_encode_raw(const frame_t *f, uint8_t raw[FRAME_MAX])
{
    uint8_t *p = raw + 2;
    size_t n;
    raw[0] = FRAME_VERSION;
    raw[1] = f->kind;
    switch (f->kind) {
    case FRAME_HELLO: {
        const frame_hello_t *h = &f->u.hello;
        memcpy(p, h->device_id, 8);
        p[8] = h->fw_major; p[9] = h->fw_minor; p[10] = h->fw_patch; p[11] = h->hw_rev;
        put32(p + 12, h->boot_count);
        put32(p + 16, h->report_period_ms);
        n = FRAME_LEN_HELLO;
        break;
    }
    case FRAME_READING:
    case FRAME_READING2: {
        /* READING2 is the READING layout with the export register appended */
        const frame_reading_t *r = &f->u.reading;
        put32(p, r->seq); put32(p + 4, r->uptime_ms); put32(p + 8, r->vrms_mv); put32(p + 12, r->irms_ma);
        put32(p + 16, (uint32_t)r->p_dw); put32(p + 20, r->s_dva); put16(p + 24, (uint16_t)r->pf_milli);
        put16(p + 26, r->freq_mhz); put64(p + 28, r->energy_mwh); put16(p + 36, r->flags);
        n = FRAME_LEN_READING;
        if (f->kind == FRAME_READING2) {
            put64(p + 38, r->energy_export_mwh);
            n = FRAME_LEN_READING2;
        }
        break;
    }
    case FRAME_STATUS: {
        const frame_status_msg_t *s = &f->u.status;
        put32(p, s->oldest_seq); put32(p + 4, s->next_seq); put16(p + 8, s->queued);
        put32(p + 10, s->dropped); put16(p + 14, s->rx_errors); put16(p + 16, s->sample_rate_hz);
        n = FRAME_LEN_STATUS;
        break;
    }
    case FRAME_LOG: {
        const frame_log_t *l = &f->u.log;
        if (l->level > 4 || l->text_len > FRAME_MAX_LOG_TEXT || !utf8_valid((const uint8_t *)l->text, l->text_len))
            return 0;
        p[0] = l->level;
        memcpy(p + 1, l->text, l->text_len);
        n = 1u + l->text_len;
        break;
    }
    case FRAME_CONFIG_RESULT: {
        const frame_config_result_t *c = &f->u.config_result;
        put16(p, c->request_id); p[2] = c->status; put32(p + 3, c->report_period_ms);
        put32(p + 7, c->v_gain); put32(p + 11, c->i_gain); put16(p + 15, (uint16_t)c->phase_cdeg);
        n = FRAME_LEN_CONFIG_RESULT;
        break;
    }
    case FRAME_ACK:
        put32(p, f->u.ack.boot_count); put32(p + 4, f->u.ack.seq);
        n = FRAME_LEN_ACK;
        break;
    case FRAME_CONFIG: {
        const frame_config_t *c = &f->u.config;
        put16(p, c->request_id); put32(p + 2, c->report_period_ms); put32(p + 6, c->v_gain);
        put32(p + 10, c->i_gain); put16(p + 14, (uint16_t)c->phase_cdeg);
        n = FRAME_LEN_CONFIG;
        break;
    }
    case FRAME_SYNC:
        n = FRAME_LEN_SYNC;
        break;
    default:
        return 0;
    }
    n += 2;
    put16(raw + n, frame_crc16(raw, n));
    return n + 2;
}

size_t frame_encode(const frame_t *f, uint8_t wire[FRAME_MAX_WIRE])
{
    uint8_t raw[FRAME_MAX];
    size_t n = frame_encode_raw(f, raw);
    if (n == 0)
        return 0;
    n = cobs_encode(raw, n, wire, FRAME_MAX_ENCODED);
    wire[n++] = 0x00;
    return n;
}

static uint8_t payload_len(uint8_t kind)
{
    switch (kind) {
    case FRAME_HELLO: return FRAME_LEN_HELLO;
    case FRAME_READING: return FRAME_LEN_READING;
    case FRAME_READING2: return FRAME_LEN_READING2;
    case FRAME_STATUS: return FRAME_LEN_STATUS;
    case FRAME_CONFIG_RESULT: return FRAME_LEN_CONFIG_RESULT;
    case FRAME_ACK: return FRAME_LEN_ACK;
    case FRAME_CONFIG: return FRAME_LEN_CONFIG;
    case FRAME_SYNC: return FRAME_LEN_SYNC;
    default: return 0xFF;
    }
}

frame_status_t frame_decode_raw(const uint8_t *raw, size_t len, frame_t *out)
{
    const uint8_t *p = raw + 2;
    size_t plen;
    if (len < 4)
        return FRAME_ERR_SHORT;
    if (frame_crc16(raw, len - 2) != get16(raw + len - 2))
        return FRAME_ERR_CRC;
    if (raw[0] != FRAME_VERSION)
        return FRAME_ERR_VERSION;
    plen = len - 4;
    out->kind = raw[1];
    if (raw[1] == FRAME_LOG) {
        if (plen < 1 || plen > 1 + FRAME_MAX_LOG_TEXT)
            return FRAME_ERR_LENGTH;
        if (p[0] > 4 || !utf8_valid(p + 1, plen - 1))
            return FRAME_ERR_VALUE;
        out->u.log.level = p[0];
        out->u.log.text_len = (uint8_t)(plen - 1);
        memcpy(out->u.log.text, p + 1, plen - 1);
        return FRAME_OK;
    }
    {
        uint8_t want = payload_len(raw[1]);
        if (want == 0xFF)
            return FRAME_ERR_KIND;
        if (plen != want)
            return FRAME_ERR_LENGTH;
    }
    switch (raw[1]) {
    case FRAME_HELLO: {
        frame_hello_t *h = &out->u.hello;
        memcpy(h->device_id, p, 8);
        h->fw_major = p[8]; h->fw_minor = p[9]; h->fw_patch = p[10]; h->hw_rev = p[11];
        h->boot_count = get32(p + 12);
        h->report_period_ms = get32(p + 16);
        break;
    }
    case FRAME_READING:
    case FRAME_READING2: {
        frame_reading_t *r = &out->u.reading;
        r->seq = get32(p); r->uptime_ms = get32(p + 4); r->vrms_mv = get32(p + 8); r->irms_ma = get32(p + 12);
        r->p_dw = (int32_t)get32(p + 16); r->s_dva = get32(p + 20); r->pf_milli = (int16_t)get16(p + 24);
        r->freq_mhz = get16(p + 26); r->energy_mwh = get64(p + 28); r->flags = get16(p + 36);
        /* a meter without an export register exports nothing */
        r->energy_export_mwh = raw[1] == FRAME_READING2 ? get64(p + 38) : 0;
        break;
    }
    case FRAME_STATUS: {
        frame_status_msg_t *s = &out->u.status;
        s->oldest_seq = get32(p); s->next_seq = get32(p + 4); s->queued = get16(p + 8);
        s->dropped = get32(p + 10); s->rx_errors = get16(p + 14); s->sample_rate_hz = get16(p + 16);
        break;
    }
    case FRAME_CONFIG_RESULT: {
        frame_config_result_t *c = &out->u.config_result;
        c->request_id = get16(p); c->status = p[2]; c->report_period_ms = get32(p + 3);
        c->v_gain = get32(p + 7); c->i_gain = get32(p + 11); c->phase_cdeg = (int16_t)get16(p + 15);
        break;
    }
    case FRAME_ACK:
        out->u.ack.boot_count = get32(p);
        out->u.ack.seq = get32(p + 4);
        break;
    case FRAME_CONFIG: {
        frame_config_t *c = &out->u.config;
        c->request_id = get16(p); c->report_period_ms = get32(p + 2); c->v_gain = get32(p + 6);
        c->i_gain = get32(p + 10); c->phase_cdeg = (int16_t)get16(p + 14);
        break;
    }
    default: /* SYNC: no payload */
        break;
    }
    return FRAME_OK;
}

frame_status_t frame_decode_wire(const uint8_t *enc, size_t len, frame_t *out)
{
    uint8_t raw[FRAME_MAX_ENCODED];
    int ok;
    size_t n;
    if (len > FRAME_MAX_ENCODED)
        return FRAME_ERR_OVERSIZE;
    n = cobs_decode(enc, len, raw, sizeof raw, &ok);
    if (!ok)
        return FRAME_ERR_COBS;
    return frame_decode_raw(raw, n, out);
}

void frame_decoder_init(frame_decoder_t *d)
{
    d->len = 0;
    d->discarding = 0;
}

frame_status_t frame_decoder_push(frame_decoder_t *d, uint8_t byte, frame_t *out)
{
    if (byte == 0x00) {
        uint8_t n = d->len;
        d->len = 0;
        if (d->discarding) {
            d->discarding = 0; /* end of an oversize run, already reported */
            return FRAME_NONE;
        }
        if (n == 0)
            return FRAME_NONE; /* empty frame: a resynchronising delimiter */
        return frame_decode_wire(d->buf, n, out);
    }
    if (d->discarding)
        return FRAME_NONE;
    if (d->len >= FRAME_MAX_ENCODED) {
        d->len = 0;
        d->discarding = 1;
        return FRAME_ERR_OVERSIZE;
    }
    d->buf[d->len++] = byte;
    return FRAME_NONE;
}

const char *frame_status_name(frame_status_t st)
{
    static const char *const names[] = {"none", "ok", "cobs", "short", "crc", "version",
                                        "kind", "length", "oversize", "value"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}
