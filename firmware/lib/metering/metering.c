/* Continuous metering maths; see metering.h for the sampling model and the reasons behind it. */
#include "metering.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define OFF_SHIFT 13 /* high-pass time constant: 2^13 pairs, 2.56 s at 3200 pairs/s */

void metering_init(metering_t *m, uint32_t window_pairs)
{
    memset(m, 0, sizeof *m);
    /* The front ends bias both inputs to mid-supply, so the high-pass starts settled. */
    m->v_off_q16 = (int32_t)512 << 16;
    m->i_off_q16 = (int32_t)512 << 16;
    m->back_q8 = 384; /* 1.5 pairs: I sits half way between V[n-2] and V[n-1] */
    m->window_pairs = window_pairs ? window_pairs : 1;
}

static int16_t highpass(int32_t *off_q16, uint16_t raw)
{
    *off_q16 += (((int32_t)raw << 16) - *off_q16) >> OFF_SHIFT;
    return (int16_t)(((int32_t)raw << 4) - (*off_q16 >> 12));
}

void metering_add_pair(metering_t *m, uint16_t v_raw, uint16_t i_raw)
{
    metering_acc_t *a = &m->acc;
    int16_t v, i, v0, v1, vint;
    uint8_t k, frac;

    if (v_raw <= METERING_CLIP_LOW || v_raw >= METERING_CLIP_HIGH)
        a->clip |= METERING_CLIP_V;
    if (i_raw <= METERING_CLIP_LOW || i_raw >= METERING_CLIP_HIGH)
        a->clip |= METERING_CLIP_I;
    v = highpass(&m->v_off_q16, v_raw);
    i = highpass(&m->i_off_q16, i_raw);

    m->vh_head = (uint8_t)((m->vh_head + 1u) & (METERING_VHIST - 1u));
    m->vh[m->vh_head] = v;

    /* V at the instant of the I sample taken two pairs ago (plus the sensor phase shift). */
    k = (uint8_t)(m->back_q8 >> 8);
    frac = (uint8_t)m->back_q8;
    v0 = m->vh[(m->vh_head - k) & (METERING_VHIST - 1u)];
    v1 = m->vh[(m->vh_head - k - 1u) & (METERING_VHIST - 1u)];
    vint = (int16_t)(v0 + (((int32_t)(v1 - v0) * frac + 128) >> 8));
    if (m->warm >= METERING_VHIST)
        a->sum_vi += (int32_t)vint * m->i_d2;
    else
        m->warm++;
    m->i_d2 = m->i_d1;
    m->i_d1 = i;

    a->sum_v += v;
    a->sum_i += i;
    a->sum_vv += (int32_t)v * v;
    a->sum_ii += (int32_t)i * i;

    /* Rising zero crossings of V with hysteresis, interpolated to 1/256 of a pair. */
    if (v < -METERING_ZC_HYST) {
        m->zc_armed = 1;
    } else if (m->zc_armed && v >= 0 && m->zc_prev < 0) {
        uint32_t pos = ((m->tick - 1u) << 8) +
                       (uint32_t)(((uint32_t)(-(int32_t)m->zc_prev) << 8) / (uint16_t)(v - m->zc_prev));
        if (a->crossings == 0)
            a->first_cross_q8 = pos;
        a->last_cross_q8 = pos;
        if (a->crossings < 0xFFFFu)
            a->crossings++;
        m->zc_armed = 0;
    }
    m->zc_prev = v;
    m->tick++;

    if (++a->n >= m->window_pairs) {
        if (m->done_ready)
            m->overrun = 1;
        m->done = *a;
        m->done.back_q8 = m->back_q8;
        m->done_ready = 1;
        memset(a, 0, sizeof *a);
    }
}

uint8_t metering_take(metering_t *m, metering_acc_t *out)
{
    if (!m->done_ready)
        return 0;
    *out = m->done;
    m->done_ready = 0;
    return 1;
}

void metering_configure(metering_t *m, uint32_t window_pairs, uint16_t back_q8)
{
    m->window_pairs = window_pairs ? window_pairs : 1;
    m->back_q8 = back_q8;
}

uint16_t metering_back_q8(int16_t phase_cdeg, uint16_t freq_mhz, uint16_t pair_rate_hz)
{
    /* shift in pairs = phase / 360 deg * pair_rate / f = phase_cdeg * rate / (36 * f_mHz) */
    int32_t f = freq_mhz ? freq_mhz : 60000;
    int32_t num = (int32_t)phase_cdeg * pair_rate_hz * 256;
    int32_t den = 36 * f;
    int32_t shift = (num >= 0 ? num + den / 2 : num - den / 2) / den;
    int32_t back = 384 + shift;
    if (back < 0)
        back = 0;
    if (back > (int32_t)(METERING_VHIST - 4) * 256 - 1)
        back = (int32_t)(METERING_VHIST - 4) * 256 - 1;
    return (uint16_t)back;
}

uint32_t metering_window_pairs(uint32_t report_period_ms, uint16_t pair_rate_hz)
{
    return (report_period_ms / 1000u) * pair_rate_hz + ((report_period_ms % 1000u) * pair_rate_hz + 500u) / 1000u;
}

void metering_compute(const metering_acc_t *a, const calib_t *c, uint16_t pair_rate_hz, metering_result_t *r)
{
    float n, mv, mi, vv, ii, vi, f = 0.0f, fl, alpha, g, vrms, irms, p, s;
    memset(r, 0, sizeof *r);
    r->clip = a->clip;
    r->pairs = a->n;
    if (a->n == 0)
        return;
    n = (float)a->n;
    mv = (float)a->sum_v / n;
    mi = (float)a->sum_i / n;
    vv = (float)a->sum_vv / n - mv * mv;
    ii = (float)a->sum_ii / n - mi * mi;
    vi = (float)a->sum_vi / n - mv * mi;
    if (vv < 0.0f) vv = 0.0f;
    if (ii < 0.0f) ii = 0.0f;
    if (a->crossings >= 2) {
        uint32_t span = a->last_cross_q8 - a->first_cross_q8;
        if (span)
            f = (float)(a->crossings - 1u) * 256.0f * (float)pair_rate_hz / (float)span;
    }
    /* Gain of linear interpolation at the line frequency: |(1 - a) + a e^{j w}|, w = 2 pi f / rate. */
    fl = f > 0.0f ? f : 60.0f;
    alpha = (float)(a->back_q8 & 0xFFu) / 256.0f;
    g = sqrtf((1.0f - alpha) * (1.0f - alpha) + alpha * alpha +
              2.0f * alpha * (1.0f - alpha) * cosf(6.2831853f * fl / (float)pair_rate_hz));
    vrms = sqrtf(vv) * (1.0f / 16.0f) * (float)c->v_gain * 1e-3f;           /* mV */
    irms = sqrtf(ii) * (1.0f / 16.0f) * (float)c->i_gain * 1e-3f;           /* mA */
    p = vi / (256.0f * g) * ((float)c->v_gain * (float)c->i_gain) * 1e-9f;  /* mW */
    s = vrms * irms * 1e-3f;                                               /* mVA */
    r->vrms_mv = (uint32_t)(vrms + 0.5f);
    r->irms_ma = (uint32_t)(irms + 0.5f);
    r->p_mw = (int32_t)lroundf(p);
    r->s_mva = (uint32_t)(s + 0.5f);
    if (s > 0.0f) {
        float pf = p / s;
        if (pf > 1.0f) pf = 1.0f;
        if (pf < -1.0f) pf = -1.0f;
        r->pf_milli = (int16_t)lroundf(pf * 1000.0f);
    }
    if (f > 0.0f && f < 65.535f)
        r->freq_mhz = (uint16_t)(f * 1000.0f + 0.5f);
}

void energy_add(energy_t *e, int32_t p_mw, uint32_t pairs, uint16_t pair_rate_hz)
{
    /* 1 mWh = 3600 s x 1000 mW = (3600 x rate) mW x pairs. */
    uint32_t unit = (uint32_t)3600u * pair_rate_hz;
    uint64_t sum, q;
    if (p_mw <= 0)
        return;
    sum = e->rem + (uint64_t)(uint32_t)p_mw * pairs;
    q = sum / unit;
    e->mwh += q;
    e->rem = (uint32_t)(sum - q * unit);
}

void energy_regs_add(energy_regs_t *e, int32_t p_mw, uint32_t pairs, uint16_t pair_rate_hz)
{
    energy_add(&e->imp, p_mw, pairs, pair_rate_hz);
    /* -INT32_MIN does not exist; a window at that power is clipped anyway */
    energy_add(&e->exp, p_mw == INT32_MIN ? INT32_MAX : -p_mw, pairs, pair_rate_hz);
}
